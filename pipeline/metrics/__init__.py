"""Metrics and health: takes the state database and the config; gives Prometheus metrics (the
ledger, the queue, bounces, the timetable, the scheduler's leadership, the process) and the
`/healthz`, `/readyz` and `/metrics` endpoints."""
