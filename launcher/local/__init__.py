"""The local backend (cluster=local): the Backend (backend.py) and the detached scheduler process it
starts (driver.py), which runs the same sbatch scripts as Slurm, and what this machine cannot run
(checks.py). Imports nothing of launcher.slurm."""
