"""Delivery workers (`execution: workers`): takes the ledger's pending keys, deferred as
procrastinate jobs by the planner (publish, retry, the timetable), and gives them to `pipeline
worker` processes, which send them with the ledger's rules."""
