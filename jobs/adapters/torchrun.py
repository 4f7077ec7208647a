"""Run a script under torchrun on every node of the allocation (kinds `torchrun`, `pretrain`/nanotron).

The stage's sbatch script starts one `jobs.task` per node (`srun --ntasks-per-node=1`); each calls
launch(), which starts torchrun for its node's GPUs. The nodes meet through torchrun's c10d
rendezvous, hosted by the first node of the allocation on a port derived from the job id.

Standard library only: it must not import torch (torchrun runs in a child process of the stage's
interpreter). The allocation's hosts and the rendezvous port: jobs/runtime/allocation.py, ports.py.
"""
from __future__ import annotations

import sys

from jobs.runtime.allocation import is_local, node_hosts, node_rank
from jobs.runtime.log import log
from jobs.runtime.ports import rdzv_port

# torchrun's own default set, plus the stage's stop signal (added in torchrun_argv).
_TORCHRUN_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"]


def torchrun_argv(python: str, hosts: list[str], nproc_per_node: int, job_id: str, port: int, target: list[str],
                  *, node_rank: int = 0, stop_signal: str = "USR2", shutdown_timeout: int | None = None,
                  max_restarts: int = 0) -> list[str]:
    """torchrun for one node of `hosts` (Slurm order; node_rank = SLURM_NODEID).

    `target` is what follows torchrun's options: `script.py args…`, `-m module args…`, or
    `--no-python program args…`. Beyond the rendezvous itself:
    - --local-addr=<this node's Slurm name>: the address this agent publishes; rank 0's becomes the
      workers' MASTER_ADDR. Without it torchrun uses socket.getfqdn(), which need not be a name the
      other nodes resolve; the Slurm name already has to (it is the rendezvous endpoint).
    - --rdzv-conf=is_host=1|0: the first node hosts the rendezvous store, said outright instead of
      torchrun guessing it by matching hostnames and IPs (a miss there means nobody hosts and every
      node times out; a taken port would be silently joined as a client instead of failing).
    - --signals-to-handle=…,SIG<stop>: torchrun starts each worker in its own session, so the stop
      signal jobs.task forwards to torchrun's process group reaches no worker, and by default would
      kill torchrun itself. With it, torchrun passes the signal to every worker and waits for them
      (SIGTERM, which jobs.task forwards when Slurm ends or preempts the job, is in torchrun's own set).
    - --shutdown-timeout: how long torchrun then waits before SIGKILLing workers (default 30 s): set
      below jobs.task's own grace so checkpointing workers are not cut short by torchrun, and torchrun
      is not cut short by jobs.task.
    - --max-restarts: 0 (a dead rank fails the step, and srun --kill-on-bad-exit ends the other
      nodes), or the hang watchdog's in-job restarts (watchdog.restarts): torchrun then restarts the
      whole worker group, on every node, when a rank dies or the watchdog kills the ranks of a hang.
    Not used: --tee/--redirects write per-rank files into --log-dir with random sub-folder names; the
    ranks' output stays in the task's Slurm log. --role only names the worker group.
    """
    if not hosts:
        raise ValueError("no hosts")
    if not 0 <= node_rank < len(hosts):
        raise ValueError(f"node rank {node_rank} is outside the allocation's {len(hosts)} node(s)")
    sig = "SIG" + stop_signal.upper().removeprefix("SIG")
    signals = _TORCHRUN_SIGNALS + ([sig] if sig not in _TORCHRUN_SIGNALS else [])
    argv = [python, "-m", "torch.distributed.run",
            f"--nnodes={len(hosts)}", f"--nproc-per-node={nproc_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={hosts[0]}:{port}", f"--rdzv-id={job_id}",
            f"--rdzv-conf=is_host={1 if node_rank == 0 else 0}", f"--local-addr={hosts[node_rank]}",
            f"--max-restarts={int(max_restarts)}", f"--signals-to-handle={','.join(signals)}"]
    if shutdown_timeout is not None:
        argv.append(f"--shutdown-timeout={int(shutdown_timeout)}")
    return argv + list(target)


def watched(task, target: list[str]) -> tuple[list[str], int]:
    """(target, torchrun --max-restarts) for the stage's hang watchdog (payload "watchdog"): each rank
    starts through jobs.runtime.rankmain, which registers the stack dump the watchdog asks for, and
    torchrun restarts the group `watchdog.restarts` times; the task learns how many (in_job_restarts).
    Without a watchdog: the target as it is, no restarts. A `--no-python` target is not wrapped."""
    w = (getattr(task, "payload", None) or {}).get("watchdog")
    if not w or not w.get("stall_s"):
        return list(target), 0
    task.in_job_restarts = int(w["restarts"])
    if target and target[0] == "--no-python":
        return list(target), task.in_job_restarts
    return ["-m", "jobs.runtime.rankmain"] + list(target), task.in_job_restarts


def launch(task, target: list[str], nproc_per_node: int, port_base: int, extra_env: dict | None = None, *,
           python: str | None = None, on_line=None) -> None:
    """Run `target` under torchrun on this node and wait. `task` is a jobs.kinds.base.TaskHandle (it
    needs .spec, .job_id, .environment(), .run_child()). Raises Requeue if torchrun ended after the stop
    signal, RuntimeError if it failed otherwise (a dead rank: --max-restarts=0; the sbatch's
    `srun --kill-on-bad-exit=1` then ends the other nodes). `on_line`: every line the ranks print on
    stdout, handed over as it comes (a progress reader: jobs/adapters/nanotron_progress.py); the lines
    still reach the task's log."""
    spec = getattr(task, "spec", None) or {}
    env = task.environment()
    env.update({str(k): str(v) for k, v in (extra_env or {}).items()})
    if spec.get("backend") == "local":
        env.setdefault("LAUNCHER_BACKEND", "local")
    local = is_local(env)
    hosts = node_hosts(env)
    rank = node_rank(env)
    ntasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if not local and ntasks and int(ntasks) != len(hosts):
        raise RuntimeError(f"{ntasks} Slurm tasks on {len(hosts)} node(s): torchrun needs exactly one jobs.task "
                           f"per node (resources.ntasks_per_node: 1; torchrun starts the {nproc_per_node} "
                           f"processes per node itself)")
    # Per array task: SLURM_JOB_ID differs between the tasks of one array, SLURM_ARRAY_JOB_ID does not.
    job_id = str(env.get("SLURM_JOB_ID") or getattr(task, "job_id", None) or env.get("LAUNCHER_JOB_ID") or "0")
    port = rdzv_port(job_id, port_base)
    requeue = spec.get("requeue") or {}
    stop_signal = env.get("LAUNCHER_STOP_SIGNAL") or requeue.get("signal") or "USR2"
    # jobs.task SIGKILLs torchrun (signal_delay_s - 5) s after the stop signal, term_grace_s after a
    # SIGTERM: torchrun gives up on its workers 5 s before the shorter one, so it always reports back
    # and no worker outlives it.
    graces = [int(requeue["signal_delay_s"]) - 5] if "signal_delay_s" in requeue else []
    graces += [int(requeue["term_grace_s"])] if "term_grace_s" in requeue else []
    shutdown_timeout = max(1, min(graces) - 5) if graces else None
    target, restarts = watched(task, target)
    argv = torchrun_argv(python or sys.executable, hosts, nproc_per_node, job_id, port, target,
                         node_rank=rank, stop_signal=stop_signal, shutdown_timeout=shutdown_timeout,
                         max_restarts=restarts)
    # torchrun sets its workers' MASTER_ADDR/PORT itself (rank 0's --local-addr and a port of its
    # choosing); these are for whatever reads them outside the workers.
    env["MASTER_ADDR"], env["MASTER_PORT"] = hosts[0], str(port)
    if restarts:
        # torchrun's agent shares its rendezvous TCPStore with the workers by default; a restarted group
        # then reads the keys of the killed one (gloo: dead peers' addresses) and hangs in
        # init_process_group, measured here in 1 of 2 restarts (pytorch/pytorch#135712). Off: a
        # new store per round.
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    log(f"torchrun: rendezvous {hosts[0]}:{port} (c10d, id {job_id}), {len(hosts)} node(s) x {nproc_per_node} "
        f"process(es), this is node {rank} ({hosts[rank]})")
    log("torchrun: " + " ".join(argv))
    task.run_child(argv, env, f"torchrun exited with status {{rc}} on node {rank} ({hosts[rank]}); the "
                              f"failing rank's error is in this task's log above", stop="signal",
                   on_line=on_line)
