"""Leaves the node side builds on: log, processes, allocation (hosts), ports, polling, HTTP, JSONL,
endpoints (a client's wait for its servers), checkpoint markers, targets, templates. They import
nothing of the project but jobs.layout, jobs.context and each other (tests/unit/test_code_shape.py)."""
