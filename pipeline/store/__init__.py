"""Store: the state database (one SQLite file, or any SQLAlchemy URL).

`schema.py` holds every table; the other modules read and write them: the ledger (what went
where), subscribers, timetable runs and the feeds' entries. Nothing here knows of channels.
"""
