"""`launcher` command line. Heavy imports (hydra, submitit, rich) happen inside the verbs, so
`launcher --help` is instant; no verb imports torch or a stage library."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from launcher import completion, exitcodes
from launcher.argparsing import Parser, seconds

EPILOG = """\
examples:
  launcher run pipeline=smoke cluster=local wait=true
  launcher plan pipeline=smoke cluster=dev
  launcher plan pipeline=smoke --cfg job --resolve --package pipeline.stages.shards
  launcher configs pipeline
  launcher run -m pipeline=smoke cluster=dev pipeline.vars.scale=1,2,3
  launcher status latest --json
  launcher resume latest
  launcher logs latest shards --task 2 --follow
  launcher demo-corpus && launcher run pipeline=data data=fineweb_like cluster=dev
  launcher summary latest
  launcher dashboard                     # live runs, progress, curves and costs at http://127.0.0.1:8765/
  launcher inspect latest clean --filter GopherQualityFilter --removed --n 5
  source <(launcher completion bash)     # TAB completion (zsh: launcher completion zsh)

Overrides are Hydra overrides: key=value, group=option (pipeline=..., cluster=...), +new.key=value.
Without cluster=: $LAUNCHER_CLUSTER, else `cluster:` in ~/.config/launcher/config.yaml, else local (which
`run` refuses on a host where Slurm answers, unless cluster=local is said).
Cluster profiles live in cluster_profiles/; pipelines in conf/pipeline/; your own in --config-dir DIR or
$LAUNCHER_CONFIG_DIRS (DIR/pipeline/, DIR/cluster_profiles/, ...: searched first). Runs go to run_root=
(default $LAUNCHER_RUN_ROOT, else ./runs); the other verbs look there (or in --root). `latest` is the
newest run under that root; a run id is also found wherever `run` put it (an index of your runs under
$XDG_STATE_HOME/launcher, default ~/.local/state/launcher; $LAUNCHER_STATE_DIR moves it).
Tables fit the terminal; piped, they are plain text (tab-separated, one row per line);
--format plain|table (or $LAUNCHER_FORMAT) overrides that.

""" + exitcodes.HELP


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slurm-llm-launcher")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        from launcher import __version__

        return __version__


class _Version(argparse.Action):
    """--version, looked up only when asked (importlib.metadata is not free, and every TAB of shell
    completion builds the parser)."""

    def __call__(self, parser, *_):
        parser._print_message(f"{parser.prog} {_version()}\n", sys.stdout)
        parser.exit()


def _format_arg(sp) -> None:
    sp.add_argument("--format", choices=["table", "plain"], help="tables drawn for a terminal, or plain text "
                    "(tab-separated, one row per line); default: table on a terminal, plain when piped "
                    "($LAUNCHER_FORMAT sets it too)")


def _config_dir_arg(sp) -> None:
    sp.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                    help="your own configs (pipeline/, data/, model/, cluster_profiles/, envs/), searched before "
                         "the package's; repeatable; $LAUNCHER_CONFIG_DIRS (os.pathsep-separated) comes after")


def _add_cfg_and_configs(sub, plan) -> None:
    plan.add_argument("--cfg", choices=["job", "all"], help="print the composed config as YAML instead, as Hydra's "
                      "--cfg does (job: without the hydra node; all: with it), and exit; writes nothing")
    plan.add_argument("--resolve", action="store_true", help="with --cfg: resolve the interpolations")
    plan.add_argument("--package", metavar="KEY", help="with --cfg: only this key, e.g. pipeline.stages.shards")
    plan.add_argument("--explain-key", metavar="STAGE", help="print each sweep point's content key of STAGE and "
                      "the parts it covers, each with its digest (docs/content-keys.md), and exit; writes nothing")
    cf = sub.add_parser("configs", help="list the config groups and their options (pipeline, cluster, data, "
                        "model, ...)", description="Without GROUP: each group and its options. With GROUP: each "
                        "option, its file, and the files of the same name it shadows (--config-dir and "
                        "$LAUNCHER_CONFIG_DIRS are searched before the package's configs).")
    cf.add_argument("group", nargs="?", help="one group: its options and their files").completer = \
        completion.complete_group
    _config_dir_arg(cf)


def _add_env_and_demo_corpus(sub) -> None:
    ev = sub.add_parser("env", help="list or build the per-stage environments of a cluster profile",
                        description="list: each environment of the profile, its interpreter, whether it is built "
                        "and up to date, which stages use it. build: create venvs from conf/envs/<name>.txt "
                        "(idempotent: a hash of the requirements decides).")
    ev.add_argument("action", choices=["list", "build"])
    ev.add_argument("names", nargs="*", help="environments to build (default: every buildable one)")
    ev.add_argument("--cluster", help="cluster profile (default: $LAUNCHER_CLUSTER, else `cluster:` in "
                    "~/.config/launcher/config.yaml, else local)").completer = completion.complete_profile
    ev.add_argument("--force", action="store_true", help="reinstall even if up to date")
    _config_dir_arg(ev)
    _format_arg(ev)
    dc = sub.add_parser("demo-corpus", help="write a small offline corpus with work for every data filter",
                        description="English prose from the Python standard library's docstrings, plus "
                        "non-English, spam/boilerplate and near-duplicate documents (ground truth in "
                        "metadata.kind), as jsonl.gz shards. Standard library only; deterministic.")
    dc.add_argument("out_dir", type=Path, nargs="?", default=Path("data/demo-corpus"),
                    help="where to write (default data/demo-corpus, the data recipes' default source)")
    dc.add_argument("--docs", type=int, default=1200, help="documents (default 1200, ~0.5 MB gzipped)")
    dc.add_argument("--shards", type=int, default=4, help="jsonl.gz files (default 4)")
    dc.add_argument("--seed", type=int, default=0)


def _rank(value: str):
    """--rank's value: 'all' or a rank number >= 0."""
    if value == "all":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a rank (0, 1, ...) or 'all', not {value!r}")
    return int(value)


def _duration(value: str) -> float:
    """--since's value in seconds (launcher/run/runs_db.py parse_since)."""
    from launcher.run.runs_db import parse_since

    try:
        return parse_since(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="launcher", description="Run Hydra-configured LLM pipelines as chained "
               "Slurm array jobs (or locally with cluster=local).", epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def with_overrides(name: str, help: str):
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("-m", "--multirun", action="store_true",
                        help="expand sweep overrides (a=1,2,3 b=x,y) into array tasks of the same jobs")
        sp.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. pipeline=smoke cluster=dev wait=true"
                        ).completer = completion.complete_override
        sp.add_argument("--rerun", action="append", metavar="STAGE[,STAGE]",
                        help="compute these stages (and every stage after them) again although another run under "
                             "the run root has their output (docs/content-keys.md)")
        _config_dir_arg(sp)
        _format_arg(sp)
        return sp

    with_overrides("run", "compose, plan, preflight and submit; print the run id and exit (wait=true to watch)")
    _add_cfg_and_configs(sub, with_overrides("plan", "show the DAG and write the exact sbatch scripts; submit nothing"))

    def with_run(name: str, help: str):
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("run", help="run id (found wherever `run` put it), run directory, or 'latest' (the newest "
                        "run under the run root)").completer = completion.complete_run
        sp.add_argument("--root", type=Path, help="run root to look in (default: $LAUNCHER_RUN_ROOT or ./runs)")
        _format_arg(sp)
        return sp

    st = with_run("status", "per-stage state and task counts, why pending tasks wait (Slurm's Reason) and the "
                  "progress of running training tasks; exit 0 completed, 1 failed, 2 still going, 69 Slurm did "
                  "not answer")
    st.add_argument("--json", action="store_true", help="machine-readable output: per stage, sweep point and array "
                    "task (state, reason, restarts, log paths, progress); docs/status-and-logs.md")
    st.add_argument("--watch", action="store_true", help="refresh until the run ends (the scheduler is asked less "
                    "and less often while nothing changes, up to every 5 min; watchers of one run share each answer)")
    st.add_argument("--interval", type=seconds, metavar="S",
                    help="with --watch: ask the scheduler every S seconds, without backing off")
    rs = with_run("resume", "resubmit exactly the unfinished tasks (failed, cancelled, never submitted)")
    rs.add_argument("--force", action="store_true", help="accept a changed config: rerun the changed stages")
    rs.add_argument("--wait", action="store_true", help="watch until the run ends")
    with_run("cancel", "cancel every queued or running job of the run")
    lg = with_run("logs", "print a task's stdout and stderr (their paths first, on stderr); a task without a "
                  "log says why")
    lg.add_argument("stage").completer = completion.complete_stage
    lg.add_argument("--task", type=int, default=0, help="global task index (default 0)")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the task ends")
    lg.add_argument("--rank", type=_rank, default=0, metavar="N|all",
                    help="rank of a multi-node task (srun's %%t; default 0, the batch script's log), or all")
    _add_env_and_demo_corpus(sub)
    ep = with_run("endpoints", "the model servers of a run (kind=serve): URL, model, state (ready, starting, "
                                "stopped, failed), checked with a /health request when ready")
    ep.add_argument("--json", action="store_true", help="machine-readable output")
    sm = with_run("summary", "documents and tokens in, out and removed for every datatrove block of the run")
    sm.add_argument("--json", action="store_true", help="machine-readable output")
    _add_inspect(with_run("inspect", "sample documents a filter of a datatrove stage removed or kept"))
    rp = sub.add_parser("report", help="HTML report of evaluation results: curves per data variant, the signal "
                                       "table of each benchmark (monotonicity, seed spread, separation, random)",
                        description="A run id/dir/latest, or a campaign name (every run whose run.json has "
                                    "that campaign). Reads the evaluation results as they are now (also while "
                                    "training goes on) and writes <out>/index.html, one PNG per metric, "
                                    "results.csv (all rows: the campaign's table) and signal.json.")
    rp.add_argument("target", help="run id, run dir, `latest`, or a campaign name")
    rp.add_argument("--out", type=Path, help="output folder (default <run root>/reports/<target>)")
    rp.add_argument("--root", type=Path)
    from launcher.run import schedule, sync, usage
    from launcher.reports import dashboard

    for verb in (schedule, usage, sync, dashboard):  # verbs whose module registers its own parser
        verb.register(sub)
    _add_runs_and_completion(sub)
    return p


def _add_inspect(ins) -> None:
    ins.add_argument("stage").completer = completion.complete_stage
    ins.add_argument("--filter", required=True, help="block class name (e.g. GopherQualityFilter) or index")
    which = ins.add_mutually_exclusive_group()
    which.add_argument("--removed", action="store_true", help="documents the filter removed (default)")
    which.add_argument("--kept", action="store_true", help="documents the filter let through")
    ins.add_argument("--n", type=int, default=5, help="how many (default 5)")
    ins.add_argument("--point", type=int, default=0, help="sweep point (default 0)")
    ins.add_argument("--chars", type=int, default=600, help="characters of text shown per document")


def _add_runs_and_completion(sub) -> None:
    rn = sub.add_parser("runs", help="list runs, newest first, with their state as the run directory records it",
                        description="Runs under the run root, newest first. state, from the run directory alone "
                        "(no scheduler query): COMPLETED, FAILED (a task failed; others may still run), or "
                        "UNFINISHED (queued, running, or ended without a marker: `launcher status` asks the "
                        "scheduler). Served from an SQLite index of the run directories (in the state "
                        "directory; the directories stay the truth), so thousands of runs answer in well "
                        "under a second.")
    rn.add_argument("--root", type=Path, help="run root (default: $LAUNCHER_RUN_ROOT or ./runs)")
    rn.add_argument("-n", type=int, default=20, help="how many (default 20; 0: all)")
    rn.add_argument("--campaign", help="only the runs of this campaign (run.json's campaign)")
    rn.add_argument("--state", type=str.upper, choices=("COMPLETED", "FAILED", "UNFINISHED"),
                    help="only runs in this state (case-insensitive)")
    rn.add_argument("--since", type=_duration, metavar="AGE", help="only runs created within AGE: 90s, 30m, 12h, 7d, 2w")
    rn.add_argument("--reindex", action="store_true",
                    help="rebuild this run root's rows of the runs index (launcher/run/runs_db.py) from the run directories")
    rn.add_argument("--json", action="store_true", help="machine-readable output: a list, one object per run")
    _format_arg(rn)
    gc = sub.add_parser("gc", help="remove run outputs no run references any more: old cache entries, partial "
                        "attempts; prints each path, its bytes and the total",
                        description="Old cache entries: whole runs created more than --older-than ago that no "
                        "remaining run reads from. Partial attempts: unfinished task outputs, checkpoints set aside "
                        "as incomplete, interrupted checkpoint removals. A run with a queued or running task (one "
                        "status query per run), and any run it reads from, is left alone. docs/disk.md")
    gc.add_argument("--root", type=Path, help="run root (default: $LAUNCHER_RUN_ROOT or ./runs)")
    gc.add_argument("--dry-run", action="store_true", help="print what would be freed; remove nothing")
    gc.add_argument("--older-than", default="30d", metavar="AGE",
                    help="a run older than this that no run reads from is removed whole (30d, 12h, 90m, 2w; "
                         "default 30d)")
    gc.add_argument("--json", action="store_true", help="machine-readable output (the list and the total)")
    cp = sub.add_parser("completion", help="print the shell completion script (bash or zsh) to source",
                        description="Tab completion of verbs, options, run ids, stage names and Hydra overrides "
                        "(config groups and their options, root keys). bash: `source <(launcher completion bash)` "
                        "(e.g. in ~/.bashrc); zsh: `source <(launcher completion zsh)` (in ~/.zshrc, after "
                        "compinit).")
    cp.add_argument("shell", choices=completion.SHELLS)


def _watch(run, prep_poll: float = 0, interval: float | None = None) -> int:
    """Watch until the run ends: the run directory every poll_s (the pipeline's, else the backend's),
    the scheduler at a backed-off interval shared with the run's other watchers, or every `interval`
    seconds exactly (--interval)."""
    from launcher import backends
    from launcher.run import ops
    from launcher.run.backoff import Backoff
    from launcher.reports.display import watch

    poll = interval or prep_poll or backends.get(run.meta.get("backend") or "slurm").poll_s
    backoff = Backoff(poll, fixed=bool(interval), max_s=max(poll, 300.0))
    return watch(lambda max_age_s: ops.status(run, max_age_s), backoff, poll).exit_code


def cmd_run(args) -> int:
    from launcher.run import ops
    from launcher.reports.display import console

    from launcher.config.sitedefault import with_cluster

    t0 = time.perf_counter()
    run, prep = ops.launch(with_cluster(args.overrides, refuse_local=True), args.multirun, echo=console.print,
                           rerun=_rerun(args))
    console.print(f"run {run.id}: {len(run.submissions())} job(s) submitted in {time.perf_counter() - t0:.2f} s")
    console.print(f"run dir: {run.path}")
    console.print(f"next:    launcher status {run.id}    launcher logs {run.id} <stage>    launcher resume {run.id}")
    if prep.configs[0]["wait"]:
        return _watch(run, prep.configs[0]["poll_s"])
    return 0


def _rerun(args) -> list:
    """--rerun a,b (repeatable) as stage names."""
    return [n for value in args.rerun or [] for n in value.split(",") if n]


def cmd_plan(args) -> int:
    from launcher.config.sitedefault import with_cluster

    args.overrides = with_cluster(args.overrides, refuse_local=False)
    if args.cfg:
        from launcher.config.configs import show

        print(show(args.overrides, args.multirun, args.cfg, args.resolve, args.package), end="")
        return 0
    if args.resolve or args.package:
        from launcher.errors import UsageError

        raise UsageError("--resolve and --package go with --cfg job|all")
    from launcher.run import ops
    from launcher.reports.display import console, plan_table, show

    if args.explain_key:
        return _explain_key(args)
    prep, plan_dir, requests = ops.make_plan(args.overrides, args.multirun, _rerun(args))
    show(plan_table(prep.plan, requests, prep.chunk_size))
    for line in shared_points(prep.plan):
        console.print(line, markup=False, highlight=False)
    for text in stage_summaries(prep.plan, plan_dir):
        console.print(text, markup=False, highlight=False)
    console.print(f"sbatch scripts written under {plan_dir}/stages/<stage>/scripts/ (dependencies are passed "
                  f"on sbatch's command line at submission)")
    for r in requests:
        deps = ", ".join([f"{k}:{p}" + (f"[chunk {c}]" if c is not None else "") for k, p, c in r.deps]
                         + [f"{k}:job {j}" for j, k in prep.plan.stages[r.stage].external.items()])
        console.print(f"  {r.script}" + (f"  <- {deps}" if deps else ""))
    if prep.errors:
        from launcher.errors import ConfigErrors

        raise ConfigErrors(prep.errors)
    return 0


def _explain_key(args) -> int:
    """`launcher plan --explain-key STAGE`: the key's parts, composed and planned as `plan` does (no
    preflight, nothing written)."""
    from pathlib import Path as P

    from launcher.plan import key_facts, keys
    from launcher.config.compose import compose_points
    from launcher.errors import UsageError
    from launcher.plan.model import build_plan

    points, configs = compose_points(args.overrides, args.multirun)
    plan = build_plan(configs, points)
    stage = plan.aliases.get(args.explain_key, args.explain_key)
    if stage not in plan.stages:
        raise UsageError(f"--explain-key: the plan has no stage '{args.explain_key}' (stages: {', '.join(plan.stages)})")
    facts = key_facts.gather(plan, str(P(configs[0]["run_root"]).resolve()))
    keys.assign(plan, facts)
    print("\n".join(keys.explain(plan, facts, stage)))
    return 0


def shared_points(plan) -> list:
    """One line per stage whose sweep points share tasks: which point computes which (plan.json has
    the same as each stage's `shared`)."""
    from launcher.plan import keys

    lines = [f"  {name}: points {m}" for name, s in plan.stages.items() if (m := keys.mapping(s))]
    out = ["shared points (equal content keys; point<-the point whose tasks compute it):", *lines] if lines else []
    cached = [f"  {name}: point {p} <- {src['run']} point {src['point']}"
              + (f" (in flight: job {', '.join(src['jobs'])})" if src.get("jobs") else "")
              for name, s in plan.stages.items() for p, src in s.cached.items()]
    return out + (["cached (completed, or being computed, by another run; read there, not submitted):", *cached]
                  if cached else [])


def stage_summaries(plan, plan_dir: Path) -> list:
    """The paragraphs of each stage's kind (Kind.describe): a training stage's layout, tokens/step,
    steps and estimated GPU-hours, a server's endpoint, a publish stage's files and card..."""
    from launcher import kinds
    from launcher.plan import tracking

    return [text for s in plan.stages.values()
            for text in kinds.get(s.kind).describe(plan, s, plan_dir) + tracking.describe(s.name, s.tracking)]


def cmd_report(args) -> int:
    from launcher.reports import campaign
    from launcher.reports.display import console
    from launcher.errors import LauncherError
    from launcher.reports import quantization
    from launcher.reports.report import write_report
    from launcher.run.rundir import default_root

    root = (args.root or default_root()).resolve()
    runs, title = campaign.resolve(args.target, root)  # `latest` names the run it resolves to, in the title too
    files = campaign.result_files(runs)
    table = campaign.result_rows(files)
    quantized = quantization.rows(runs)
    if not table and not quantized:
        raise LauncherError(f"no evaluation results yet in {', '.join(r.id for r in runs)} (kind=evaluate stages "
                            f"write stages/<stage>/evals/<point>/step-<N>.json, kind=quantize its result.json)")
    out = args.out or root / "reports" / (runs[0].id if len(runs) == 1 and title.startswith("run") else args.target)
    html = write_report(table, out, title, costs=campaign.costs(runs), quantized=quantized)
    for line in quantization.lines(quantized):
        console.print(line)
    console.print(f"{len(files)} checkpoint result(s), {len(table)} row(s), {len(quantized)} quantized model(s) "
                  f"from {len(runs)} run(s) -> {html}")
    return 0


def cmd_schedule(args) -> int:
    from launcher.run.schedule import cmd_schedule as schedule

    return schedule(args)


def cmd_usage(args) -> int:
    from launcher.run.usage import cmd_usage as usage

    return usage(args)


def cmd_dashboard(args) -> int:
    from launcher.reports.dashboard import cmd_dashboard as dashboard

    return dashboard(args)


def cmd_sync(args) -> int:
    from launcher.run.sync import cmd_sync as sync

    return sync(args)


def cmd_status(args) -> int:
    from launcher.run import ops
    from launcher.reports.display import show, status_table
    from launcher.run.rundir import resolve_run

    run = resolve_run(args.run, args.root)
    if args.watch:
        return _watch(run, interval=args.interval)
    st = ops.status(run)
    if args.json:
        from launcher.run.status_view import status_json

        print(json.dumps(status_json(st), indent=1))
    else:
        show(status_table(st))
        for node, why in st.bad_nodes.items():  # the node health check's (excluded from later jobs)
            print(f"bad node {node}: {'; '.join(why)} (excluded from this run's jobs)")
    return st.exit_code


def cmd_resume(args) -> int:
    from launcher.run import ops
    from launcher.reports.display import console
    from launcher.run.rundir import resolve_run

    run = resolve_run(args.run, args.root)
    ids = ops.resume(run, force=args.force, echo=console.print)
    if ids:
        console.print(f"run {run.id}: {len(ids)} job(s) resubmitted")
    return _watch(run) if args.wait else 0


def cmd_cancel(args) -> int:
    from launcher.run import ops
    from launcher.reports.display import console
    from launcher.run.rundir import resolve_run

    ops.cancel(resolve_run(args.run, args.root), echo=console.print)
    return 0


def cmd_logs(args) -> int:
    from launcher.run.logs import show_logs
    from launcher.run.rundir import resolve_run

    return show_logs(resolve_run(args.run, args.root), args.stage, args.task, args.follow, args.rank)


def cmd_env(args) -> int:
    from rich.table import Table

    from launcher.config import environments
    from launcher.config.compose import compose
    from launcher.reports.display import console, show

    from launcher.config.sitedefault import default_cluster

    cluster = compose([f"cluster={args.cluster or default_cluster()[0] or 'local'}"])["cluster"]
    envs = cluster.get("environments") or {}
    if args.action == "build":
        names = args.names or [n for n, e in envs.items() if e.get("build")]
        for name in names:
            environments.build(cluster, name, echo=console.print, force=args.force)
        return 0
    t = Table(title=f"environments of cluster '{cluster['name']}' (built under {environments.envs_dir(cluster)})",
              title_justify="left")
    for col in ("name", "python", "state", "imports", "container", "used by"):
        t.add_column(col)
    users = {}
    for key, name in (cluster.get("stage_environments") or {}).items():
        users.setdefault(name, []).append(key)
    for name, e in envs.items():
        python = environments.python_of(cluster, name)
        state = environments.build_state(cluster, name) if e.get("build") else (
            "ok" if os.path.exists(python) else "missing")
        t.add_row(name, python, state, ", ".join(e.get("imports") or []), e.get("container_image") or "-",
                  ", ".join(users.get(name, [])) or "-")
    show(t)
    return 0


def cmd_summary(args) -> int:
    from launcher.reports import data_report
    from launcher.reports.display import console, show
    from launcher.run.rundir import resolve_run

    run = resolve_run(args.run, args.root)
    summary = data_report.summarize(run.path, run.plan())
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    elif not summary:
        console.print(f"run {run.id} has no datatrove (kind=preprocess) stages")
    for table in ([] if args.json else data_report.summary_tables(summary)):
        show(table)
    return 0


def cmd_inspect(args) -> int:
    from launcher.reports import data_report
    from launcher.reports.display import console
    from launcher.run.rundir import resolve_run

    run = resolve_run(args.run, args.root)
    name, total, docs = data_report.sample(run.path, run.plan(), args.stage, args.filter, removed=not args.kept,
                                           n=args.n, point=args.point)
    data_report.show_sample(console, name, total, docs, removed=not args.kept, chars=args.chars)
    return 0


def cmd_demo_corpus(args) -> int:
    from jobs.demo.corpus import make_corpus

    counts = make_corpus(args.out_dir, args.docs, args.shards, args.seed)
    print(f"wrote {counts['documents']} documents ({counts['bytes'] / 1e6:.1f} MB gzipped) in {args.shards} "
          f"shard(s) to {args.out_dir}: {counts['kinds']}")
    return 0


def cmd_endpoints(args) -> int:
    import json

    from rich.table import Table

    from launcher.reports.display import show
    from launcher.run.endpoints import endpoints
    from launcher.run.rundir import resolve_run

    rows = endpoints(resolve_run(args.run, args.root).path)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    t = Table(title="endpoints", title_justify="left")
    for col in ("stage", "point", "state", "url", "model", "job", "since"):
        t.add_column(col)
    for r in rows:
        color = {"ready": "green", "failed": "red", "unreachable": "red"}.get(r["state"], "yellow")
        since = r.get("ready") or r.get("stopped") or r.get("started")
        t.add_row(r["stage"], str(r["point"]), f"[{color}]{r['state']}[/]", r.get("url") or f"{r['host']}:{r['port']}",
                  r.get("model", ""), str(r.get("job_id", "")),
                  time.strftime("%H:%M:%S", time.localtime(since)) if since else "")
    show(t if rows else "no serve stage of this run has started")
    return 0


def cmd_configs(args) -> int:
    from launcher.config.configs import listing

    print(listing(args.group), end="")
    return 0


def cmd_runs(args) -> int:
    from rich.table import Table
    from rich.text import Text

    from launcher.run import runs_db
    from launcher.reports.display import STYLE, console, show
    from launcher.run.rundir import default_root

    root = (args.root or default_root()).resolve()
    rows = runs_db.runs(root, campaign=args.campaign, state=args.state, since_s=args.since,
                        limit=args.n or None, reindex=args.reindex)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        t = Table(title=f"runs in {root} (state from the run directories; `launcher status` asks the scheduler)",
                  title_justify="left")
        for col in ("run", "state", "pipeline", "cluster", "campaign", "created", "points", "jobs"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["run"], Text(r["state"], style=STYLE.get(r["state"], "")), r["pipeline"], r["cluster"],
                      "" if r["campaign"] == r["run"] else r["campaign"],
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])), str(r["points"]),
                      str(r["jobs"]))
        show(t)
    for line in _failed_schedules(root):
        if args.json:  # stdout stays one JSON document
            print(line, file=sys.stderr)
        else:
            console.print(f"[red]{line}[/]")
    return 0


def _failed_schedules(root: Path) -> list:
    """Scheduled firings that failed (they may have failed before making a run: a config error)."""
    from launcher.run.schedule import read_history

    lines = []
    for sdir in sorted((root / "schedules").glob("*/")):
        last = next((h for h in reversed(read_history(sdir)) if h.get("status") != "skipped"), None)
        if last and last.get("exit_code") not in (0, None):
            lines.append(f"schedule {sdir.name}: last firing at {last.get('start')} exited {last['exit_code']}"
                         + (f" (run {last['run_id']})" if last.get("run_id") else "") + f"; log {sdir / 'scron.log'}")
    return lines


def main(argv=None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a reader that went away fails here, not in the interpreter's exit
    except BrokenPipeError:
        return _closed_pipe()


def entry() -> None:
    """The `launcher` command (console script and `python -m launcher`): main(), then the process ends
    without Python's teardown, which frees every object and module one by one (~0.15 s after a
    200-point `launcher run`, a sixth of it) and which nothing of the launcher needs: files are written
    and closed by then, thread pools joined, locks released. stdout, stderr and logging are flushed
    first; when another (non-daemon) thread still runs, or $LAUNCHER_FAST_EXIT=0, it exits as usual.
    In-process callers (tests, the Hydra plugin) call main()."""
    import logging
    import threading

    rc = main()
    if os.environ.get("LAUNCHER_FAST_EXIT") == "0" or any(
            t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(rc)
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        rc = rc or exitcodes.BROKEN_PIPE
    os._exit(0 if rc is None else rc if isinstance(rc, int) else 1)


def _closed_pipe() -> int:
    """stdout's reader went away (`launcher runs | head -1`): Python's recipe (signal module docs, "Note
    on SIGPIPE"): point stdout at /dev/null, so that nothing fails again at exit, and exit quietly, with
    141 (128 + SIGPIPE) as a Unix tool killed by SIGPIPE would: not 1, which says the run failed."""
    import contextlib

    with contextlib.suppress(OSError, ValueError):  # stdout without a file descriptor (redirected in-process)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return exitcodes.BROKEN_PIPE


def cmd_gc(args) -> int:
    from launcher.run import gc
    from launcher.run.rundir import default_root

    root = (args.root or default_root()).resolve()
    out = gc.gc(root, gc.parse_age(args.older_than), args.dry_run,
                echo=(lambda _: None) if args.json else print)
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


def cmd_completion(args) -> int:
    print(completion.script(args.shell), end="")
    return 0


def _main(argv=None) -> int:
    parser = _parser()
    completion.autocomplete(parser)  # a TAB of the shell (_ARGCOMPLETE set): answers and exits
    # `-m` may come after some overrides (launcher run pipeline=x -m a=1,2): overrides that argparse
    # left over are the rest of the list, in order.
    args, extra = parser.parse_known_args(argv)
    if extra and args.verb in ("run", "plan") and not any(x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from launcher.errors import LauncherError

    if getattr(args, "format", None):
        from launcher.reports import display

        display.FORMAT = args.format
    try:
        if args.verb in ("run", "plan"):
            from launcher.config.hydra_settings import read_mode

            args.overrides, args.multirun = read_mode(args.overrides, args.multirun)
        if getattr(args, "config_dir", None):
            from launcher.config import configdirs

            configdirs.use(configdirs.checked(args.config_dir, "--config-dir") + configdirs.from_env())
        return globals()[f"cmd_{args.verb.replace('-', '_')}"](args)
    except LauncherError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted (submitted jobs keep running; see `launcher status`)", file=sys.stderr)
        return exitcodes.INTERRUPTED
    finally:
        if getattr(args, "format", None):  # main() called again in one process (tests) starts afresh
            display.FORMAT = ""


if __name__ == "__main__":
    sys.exit(main())
