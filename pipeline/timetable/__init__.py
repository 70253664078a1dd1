"""Timetable: the `schedule:` entries of config.yaml in, runs of `publish` out.

Takes the entries (cron, at, every) and the state database; gives fire times across DST, what
each run is due to send (latest, queue, digest), and the APScheduler daemon behind `pipeline run`.
"""
