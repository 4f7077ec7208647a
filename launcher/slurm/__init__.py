"""The Slurm backend: the clients (client.py, the one place that runs them and cleans their
environment), cluster facts from scontrol (facts.py), job states from sacct/squeue (accounting.py),
QOS and association limits from sacctmgr (limits.py), the checks of a run's requests against those
(checks.py), scrontab (scrontab.py) and the Backend (backend.py). Imports nothing of launcher.local."""
