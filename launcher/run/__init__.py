"""The verbs and the run directory: plan/run/resume/cancel (ops), submit, status (its cache and view),
logs, usage, gc, schedule, sync, endpoints; the run directory, its ledger, the run root, the index of
runs and its SQLite cache."""
