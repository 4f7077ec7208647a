"""The pure plan and what is decided before submission: model (Plan, StagePlan, the DAG, sweeps and edges),
render (job requests and the node spec), content keys and the cross-run cache, the plan-time settings
(retention, watchdog, tracking, health, secrets, ignored options), the code snapshot, nanotron's YAML,
and preflight (the live checks every backend shares)."""
