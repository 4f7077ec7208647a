"""Run a script under torchrun on every node of the allocation (kinds `torchrun`, `pretrain`/nanotron).

The stage's sbatch script starts one `jobs.task` per node (`srun --ntasks-per-node=1`); each calls
launch(), which starts torchrun for its node's GPUs. The nodes meet through torchrun's c10d
rendezvous, hosted by the first node of the allocation on a port derived from the job id.

Standard library only: this module is imported by jobs.task before the stage's library is, and
must not import torch (torchrun runs in a child process of the stage's interpreter).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from typing import Mapping

from jobs.context import Requeue

_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # RFC 1123 labels (and Slurm node names)

# torchrun's own default set, plus the stage's stop signal (added in torchrun_argv).
_TORCHRUN_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"]


def node_hosts(env: Mapping[str, str] = os.environ) -> list[str]:
    """The allocation's hosts in Slurm's order (`scontrol show hostnames`); the first one hosts the
    rendezvous. No silent fallback to localhost: a multi-node job that guessed wrong would hang."""
    if env.get("LAUNCHER_BACKEND") == "local":  # the local backend: explicitly one machine
        return [socket.gethostname()]
    if env.get("LAUNCHER_NODE_HOSTS"):  # a container without Slurm: the batch script expanded the list
        return env["LAUNCHER_NODE_HOSTS"].split(",")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise RuntimeError("cannot find the allocation's nodes: neither SLURM_JOB_NODELIST nor SLURM_NODELIST "
                           "is set (torchrun stages run inside a Slurm job, or on the local backend)")
    try:
        p = subprocess.run(["scontrol", "show", "hostnames", nodelist], env=dict(env), capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` failed: {e}") from e
    # One host name per line; a site's wrapper may print banner lines around them (never read as hosts).
    hosts = [line.strip() for line in p.stdout.splitlines() if _HOSTNAME.match(line.strip())]
    if p.returncode != 0 or not hosts:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` failed (exit {p.returncode}): "
                           f"{(p.stderr or p.stdout).strip()[-500:]}")
    expected = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    if expected and expected.isdigit() and len(hosts) != int(expected):
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` gave {len(hosts)} host(s) for a "
                           f"{expected}-node allocation: {p.stdout.strip()[-500:]!r}")
    return hosts


def rdzv_port(job_id: str, base: int) -> int:
    """base + (job id % 10000): jobs running at the same time get different ports (Slurm job ids are
    sequential). Array forms (`17_3`, the local backend's ids) keep all their digits, so the tasks of
    one array differ too."""
    digits = "".join(re.findall(r"\d+", str(job_id)))
    if not digits:
        raise ValueError(f"job id {job_id!r} has no number to derive a rendezvous port from")
    port = base + int(digits) % 10000
    if not 1024 <= port <= 65535:
        raise ValueError(f"rendezvous port {port} (base {base}) is outside 1024-65535")
    return port


def torchrun_argv(python: str, hosts: list[str], nproc_per_node: int, job_id: str, port: int, target: list[str],
                  *, node_rank: int = 0, stop_signal: str = "USR2", shutdown_timeout: int | None = None) -> list[str]:
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
            "--max-restarts=0", f"--signals-to-handle={','.join(signals)}"]
    if shutdown_timeout is not None:
        argv.append(f"--shutdown-timeout={int(shutdown_timeout)}")
    return argv + list(target)


def launch(task, target: list[str], nproc_per_node: int, port_base: int, extra_env: dict | None = None, *,
           python: str | None = None) -> None:
    """Run `target` under torchrun on this node and wait. `task` is a jobs.task.Task (it needs .child,
    .ctx, .environment(), optionally .spec). Raises Requeue if torchrun ended after the stop signal,
    RuntimeError if it failed otherwise (a dead rank: --max-restarts=0; the sbatch's
    `srun --kill-on-bad-exit=1` then ends the other nodes)."""
    from jobs.task import log  # here, not at the top: jobs.task imports this module

    spec = getattr(task, "spec", None) or {}
    env = task.environment()
    env.update({str(k): str(v) for k, v in (extra_env or {}).items()})
    if spec.get("backend") == "local":
        env.setdefault("LAUNCHER_BACKEND", "local")
    local = env.get("LAUNCHER_BACKEND") == "local"
    hosts = node_hosts(env)
    node_rank = 0 if local else int(env.get("SLURM_NODEID") or env.get("SLURM_PROCID") or 0)
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
    argv = torchrun_argv(python or sys.executable, hosts, nproc_per_node, job_id, port, target,
                         node_rank=node_rank, stop_signal=stop_signal, shutdown_timeout=shutdown_timeout)
    # torchrun sets its workers' MASTER_ADDR/PORT itself (rank 0's --local-addr and a port of its
    # choosing); these are for whatever reads them outside the workers.
    env["MASTER_ADDR"], env["MASTER_PORT"] = hosts[0], str(port)
    log(f"torchrun: rendezvous {hosts[0]}:{port} (c10d, id {job_id}), {len(hosts)} node(s) x {nproc_per_node} "
        f"process(es), this is node {node_rank} ({hosts[node_rank]})")
    log("torchrun: " + " ".join(argv))
    run_child(task, argv, env, f"torchrun exited with status {{rc}} on node {node_rank} ({hosts[node_rank]}); the "
                               f"failing rank's error is in this task's log above")


def run_child(task, argv: list[str], env: dict, failure: str) -> None:
    """Run a launcher (torchrun, accelerate) in its own session and wait: Requeue if it ended after the
    stop signal, RuntimeError(failure with {rc} filled in) if it failed otherwise."""
    task.child = subprocess.Popen(argv, env=env, start_new_session=True)
    rc = task.child.wait()
    if rc != 0 and task.ctx.should_stop():
        raise Requeue()
    if rc != 0:
        raise RuntimeError(failure.format(rc=rc))
