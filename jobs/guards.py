"""What guards a task's work against bad nodes and hangs, as methods jobs.task.Task inherits: the node
health check before the work (jobs/runtime/health.py; docs/node-health.md) with its requeue without
the bad nodes, and the hang watchdog during it (jobs/runtime/watchdog.py, stacks.py; docs/watchdog.md).
They use the Task's attributes (spec, payload, run_dir, stage, task, job_id, rank, restarts, ctx,
child, ending) and its requeue(). Standard library only."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from jobs import layout
from jobs.context import Requeue
from jobs.runtime import health, processes, stacks
from jobs.runtime.allocation import node_hosts, node_rank
from jobs.runtime.log import log
from jobs.runtime.ports import rdzv_port
from jobs.runtime.watchdog import Watchdog

REQUEUE_EXIT = 75  # EX_TEMPFAIL: "run me again" for the local backend (jobs.task exports it)


class BadNodes(Exception):
    """The health check found bad nodes in this task's allocation: requeue it without them."""

    def __init__(self, nodes: dict):
        super().__init__(", ".join(nodes))
        self.nodes = nodes


class NodeGuards:
    """The health check and the hang watchdog of one array task (mixed into jobs.task.Task)."""

    # Class defaults (stand-ins built without __init__ read them too):
    watchdog: Watchdog | None = None  # the hang watchdog (payload "watchdog"), while the work runs
    stalled = False  # the watchdog killed the work: requeue it
    in_job_restarts = 0  # restarts the child's launcher still does itself (torchrun --max-restarts)

    # -- the hang watchdog ------------------------------------------------------------------------
    def start_watchdog(self) -> None:
        """Watch this task's progress file when the stage has watchdog.stall_s (launcher/plan/watchdog.py)."""
        w = self.payload.get("watchdog")
        if w and w.get("stall_s"):
            path = layout.progress_path(self.run_dir, self.stage, self.task)
            self.watchdog = Watchdog(path, w["stall_s"], w["startup_s"], self._on_stall).start()
            log(f"watchdog: {path} must advance every {w['stall_s']:g} s ({w['startup_s']:g} s for the first "
                f"write of an attempt; {w['restarts']} in-job restart(s), then requeue)")

    def _on_stall(self, why: str) -> bool:
        """The work stopped making progress: its stacks into this log, then an in-job restart (kill the
        ranks; their launcher starts them again) while the launcher has restarts left, else kill the
        step and requeue. True: keep watching (restarted in the job)."""
        if self.ctx.should_stop():
            return False  # already checkpointing and stopping: the stop deadline ends it
        log(f"watchdog: {why}")
        child = self.child
        if child is None or child.poll() is not None:  # the work runs in this process
            stacks.dump_self(log)
            self.stalled = True
            log("watchdog: ending this attempt and requeueing")
            os._exit(self.requeue())
        stacks.dump_tree(child.pid, log)
        workers = [p for p in stacks.descendants(child.pid) if stacks.catches(p)]
        if self.in_job_restarts > 0 and workers:
            self.in_job_restarts -= 1
            # From now on a failing launcher (its restarts spent) ends in a requeue, not a failure.
            self.stalled = True
            if self.rank != 0:  # every node saw the same file: one node's kill restarts the group on all
                log("watchdog: the first node kills the ranks; torchrun restarts the group on every node")
                return True
            log(f"watchdog: killing {len(workers)} rank(s) {workers}; their launcher restarts them in this job "
                f"({self.in_job_restarts} in-job restart(s) left)")
            stacks.kill_sessions(workers)
            return True
        self.stalled = True
        log("watchdog: killing the step; the task requeues")
        stacks.kill_sessions(stacks.descendants(child.pid))
        processes.kill(child)
        return False

    # -- the node health check ----------------------------------------------------------------------
    def health_gate(self) -> None:
        """Check this node (and, on the first node, decide for all) before the work when the spec has
        "health_check" (launcher/plan/health.py). Raises BadNodes (bad nodes: requeue without them),
        RuntimeError (a collective failure no node can be blamed for) or Requeue (a node that got no
        decision from the first node: it stops, the first node requeues)."""
        cfg = self.spec.get("health_check")
        if not cfg:
            return
        env = dict(os.environ)
        # Without one jobs.task per node, only the node this task runs on can be checked.
        # Slurm's name for this node (what ExcNodeList and --exclude take), not necessarily its hostname.
        here = env.get("SLURMD_NODENAME") or socket.gethostname()
        hosts, rank = (node_hosts(env), node_rank(env)) if cfg.get("across_nodes") else ([here], 0)
        port = rdzv_port(env.get("SLURM_JOB_ID") or self.job_id, self.spec.get("rdzv_port_base", 20000))
        folder = layout.health_dir(self.run_dir, self.stage) / f"{self.job_id}-{self.restarts}"
        decision = health.run_check(cfg, folder, self.run_dir, hosts, rank, port, sys.executable, log)
        if decision is None:
            log("health: no decision from the first node in time; stopping (the first node requeues or fails)")
            raise Requeue()
        if decision["bad"]:
            for node, why in decision["bad"].items():
                log(f"health: node {node} is bad: {'; '.join(why)}")
            raise BadNodes(decision["bad"])
        if decision["fault"]:
            raise RuntimeError(f"node health check: {decision['fault']}")
        log(f"health: {len(hosts)} node(s) passed")

    def health_requeues(self) -> int:
        """Requeues this task spent on bad nodes (not counted against requeue.max)."""
        path = layout.health_dir(self.run_dir, self.stage) / f"{self.task}.requeues"
        return int((layout.read_json(path) or {}).get("requeues", 0))

    def requeue_without(self, bad: dict) -> int:
        """The first node: record the bad nodes in the run (bad-nodes/, every later submission excludes
        them), and requeue this task without them (requeuehold, ExcNodeList, release: Slurm changes
        ExcNodeList of a pending job) without spending requeue.max, at most health_check.max_requeues
        times. Other nodes: exit 0 (the first node's requeue ends them)."""
        if self.rank != 0:
            return 0
        for node, why in bad.items():
            layout.atomic_write_json(layout.bad_node_file(self.run_dir, node), {
                "node": node, "problems": why, "stage": self.stage, "task": self.task, "job_id": self.job_id,
                "time": time.time()})
        spent, limit = self.health_requeues(), int(self.spec["health_check"]["max_requeues"])
        if spent >= limit:
            raise RuntimeError(f"node health check: bad node(s) {', '.join(bad)} after {spent} requeue(s) for bad "
                               f"nodes (cluster.health_check.max_requeues={limit})")
        layout.atomic_write_json(layout.health_dir(self.run_dir, self.stage) / f"{self.task}.requeues",
                                 {"requeues": spent + 1})
        excluded = sorted(set(layout.bad_nodes(self.run_dir)) | set(bad)
                          | {x for x in ((self.spec.get("resources") or {}).get("exclude") or "").split(",") if x})
        self.ending = True
        if os.environ.get("LAUNCHER_IN_CONTAINER") == "1":  # no Slurm clients in the image
            log(f"health: requeue without counting; the batch script requeues (later submissions exclude "
                f"{','.join(excluded)}; this requeue cannot)")
            return REQUEUE_EXIT
        log(f"health: requeue {spent + 1}/{limit} for bad nodes (not counted against requeue.max), "
            f"excluding {','.join(excluded)}")
        subprocess.run(["scontrol", "requeuehold", self.job_id], check=True, timeout=60)
        p = subprocess.run(["scontrol", "update", f"JobId={self.job_id}", f"ExcNodeList={','.join(excluded)}"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode:
            log(f"health: scontrol update ExcNodeList failed: {(p.stderr or p.stdout).strip()[-300:]}")
        subprocess.run(["scontrol", "release", self.job_id], check=False, timeout=60)
        return REQUEUE_EXIT

