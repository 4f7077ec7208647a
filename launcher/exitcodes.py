"""The launcher's exit codes, the same for every verb (sysexits.h for the usage and not-found cases), so
that a script can tell "still running" from "you typed it wrong" and "there is no such run"."""

OK = 0            # the verb did what was asked; status/--wait: the run COMPLETED
FAILED = 1        # the run FAILED, or the verb stopped on an error (config errors included: nothing submitted)
RUNNING = 2       # status/--wait: the run is still RUNNING or PENDING
USAGE = 64        # EX_USAGE: unknown verb or flag, missing argument, an override Hydra cannot parse
NOT_FOUND = 66    # EX_NOINPUT: no such run (id, directory, or `latest` in an empty run root), stage or task
# EX_UNAVAILABLE: a Slurm client (sacct, squeue, scontrol, ...) failed, timed out after its retries, or
# is not installed: the run's state is unknown, which a polling loop must not read as "failed" (1).
UNAVAILABLE = 69
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); submitted jobs keep running
BROKEN_PIPE = 141  # stdout closed by its reader (`| head`): 128 + SIGPIPE, as for a tool killed by SIGPIPE

HELP = f"""\
exit codes (every verb; "the run" for status, status --watch, resume --wait, run wait=true):
  {OK}    ok; the run completed
  {FAILED}    the run failed, or an error stopped the verb (config errors: nothing was submitted)
  {RUNNING}    the run is still pending or running
  {USAGE}   usage error: unknown verb or flag, missing argument, an override that does not parse
  {NOT_FOUND}   no such run, stage or task
  {UNAVAILABLE}   Slurm did not answer (squeue/sacct/scontrol failed or timed out): the run's state is unknown
  {INTERRUPTED}  interrupted (Ctrl-C); {BROKEN_PIPE}  stdout closed early (`| head`), quietly
"""
