"""What Slurm makes of a value the config gives it: time limits, memory, the stop signal and constraint
(feature) expressions. The plan checks each value in the units Slurm will enforce, after the rounding
that rendering and Slurm apply, so what was checked is what runs. Pure functions, no Slurm call."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")

# `--signal=<sig>@<sig_time>`: sbatch (22.05) takes these names and rejects the others Python knows
# ("Invalid --signal specification"; checked one by one with `sbatch --test-only`), and a sig_time of
# at most 65535 s (a 16-bit field). KILL and STOP cannot be caught, so a task would never checkpoint;
# TERM is how Slurm cancels and ends a job, so a task could not tell its stop signal from a scancel.
SLURM_SIGNALS = ("ABRT", "ALRM", "CONT", "HUP", "INT", "KILL", "QUIT", "STOP", "TERM", "TSTP", "TTIN", "TTOU",
                 "URG", "USR1", "USR2", "XCPU")
STOP_SIGNALS = tuple(s for s in SLURM_SIGNALS if s not in ("KILL", "STOP", "TERM"))
MAX_SIGNAL_DELAY_S = 65535


def time_seconds(value: str) -> int:
    """A Slurm time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; sbatch(1) --time) → seconds.
    ValueError if it is none of these."""
    m = _TIME.match(str(value).strip())
    if not m:
        raise ValueError(f"'{value}' is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    d, a, b, c = (int(x) if x is not None else None for x in m.group("d", "a", "b", "c"))
    if d is None:
        if b is None:
            return a * 60  # MM
        if c is None:
            return a * 60 + b  # MM:SS
        return a * 3600 + b * 60 + c  # HH:MM:SS
    return d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)  # D-HH[:MM[:SS]]


# sbatch(1) --time: "A time limit of zero requests that no time limit be imposed. Acceptable time
# formats include ... "; slurm.conf(5) and sbatch also read these words as no limit.
UNLIMITED = ("unlimited", "infinite")


def is_unlimited(value: str) -> bool:
    """True for a time limit Slurm reads as none at all (UNLIMITED, infinite; any case)."""
    return str(value).strip().lower() in UNLIMITED


def time_limit_min(value: str) -> Optional[int]:
    """A stage's time limit in whole minutes as slurmctld keeps it (parse_time_min), None for UNLIMITED."""
    return None if is_unlimited(value) else parse_time_min(value)


def parse_time_min(value: str) -> int:
    """A Slurm time → whole minutes, rounded up as slurmctld does (it keeps job time limits in
    minutes); at least 1. ValueError if it is not a Slurm time."""
    return max(1, -(-time_seconds(value) // 60))


def time_problem(value: str) -> Optional[str]:
    """Why a stage's time limit would not be what Slurm enforces (None if it is): not a Slurm time, 0
    (sbatch reads it as no limit at all), or seconds that are not whole minutes (Slurm rounds them up:
    `00:00:30` runs with `--time=1`, and a stop signal checked against 30 s is then sent at a time the
    plan never checked)."""
    if is_unlimited(value):
        return None  # preflight checks it against the partition's MaxTime
    try:
        secs = time_seconds(value)
    except ValueError as e:
        return str(e)
    if secs == 0:
        return (f"'{value}' is no time limit at all to Slurm; give one (at least 1 minute), or write UNLIMITED if "
                f"that is what you mean")
    if secs % 60:
        up = -(-secs // 60)
        return (f"'{value}' is not a whole number of minutes; Slurm keeps time limits in minutes and would run it "
                f"as {up} minute(s) (--time={up}): write {up // 60:02d}:{up % 60:02d}:00")
    return None


def mem_flag(mem_gb: float) -> str:
    """The `--mem` value the sbatch script gets for `mem_gb`: submitit's own conversion (whole GB as
    `<n>GB`, anything else rounded DOWN to whole MB)."""
    from submitit.slurm.slurm import _convert_mem

    return _convert_mem(mem_gb)


def mem_mb(mem_gb: float) -> int:
    """MB that Slurm reads from the rendered `--mem` (0 means all of the node's memory to Slurm)."""
    flag = mem_flag(mem_gb)
    number, unit = re.match(r"^(\d+)(GB|MB)$", flag).groups()
    return int(number) * (1024 if unit == "GB" else 1)


def mem_problem(mem_gb: float, all_memory: bool = False) -> Optional[str]:
    """Why `mem_gb` would not reach Slurm as asked (None if it does). With `all_memory` (--mem), an
    exact 0 is sbatch's "all of the node's memory" (sbatch(1) --mem) and is accepted."""
    if not math.isfinite(mem_gb):
        return f"must be a finite number of GB, got {mem_gb}"
    if all_memory and mem_gb == 0:
        return None
    if mem_gb <= 0:
        zero = " (or 0: all of the node's memory)" if all_memory else ""
        return f"must be > 0{zero} or null, got {mem_gb}"
    if mem_mb(mem_gb) < 1:
        return (f"{mem_gb} GB is rendered as --mem={mem_flag(mem_gb)} (whole MB, rounded down), and Slurm reads "
                f"--mem=0 as all of the node's memory; ask for at least 0.001 GB (1 MB)")
    return None


def signal_problem(name: str) -> Optional[str]:
    """Why `name` cannot be a stage's stop signal (None if it can)."""
    if name in STOP_SIGNALS:
        return None
    if name in SLURM_SIGNALS:
        why = ("TERM is how Slurm cancels and ends a job: the task could not tell it from a scancel" if name == "TERM"
               else f"SIG{name} cannot be caught, so the task could never checkpoint")
        return f"'{name}' cannot be the stop signal: {why} (use one of {', '.join(STOP_SIGNALS)})"
    return f"unknown signal '{name}': sbatch --signal takes {', '.join(STOP_SIGNALS)} (e.g. USR1, USR2)"


# -- constraint (feature) expressions ----------------------------------------------------------------
# sbatch(1) --constraint: a feature name; name*count (nodes with it); a&b (nodes with both); a|b
# (nodes with either); [a|b] (matching OR: all nodes with the same one); [a*2&b*4] (counts of
# different nodes); parentheses group, e.g. [(knl&snc4)*4&haswell*1].
_FEATURE = r"[A-Za-z0-9_.:=+-]+"
_TOKEN = re.compile(rf"(?P<name>{_FEATURE})|(?P<op>[&|*()\[\]])|(?P<bad>.)", re.S)  # a space is no part of any


@dataclass
class Constraint:
    """A parsed constraint: `tree` is a nested tuple (('name', f) | ('and'|'or', [..]) | ('count', node, n)
    | ('match', node)); `names` every feature it names."""

    tree: tuple
    names: List[str]

    @property
    def per_node(self) -> bool:
        """True when each node is judged alone (no counts, no brackets): a node qualifies if its
        features satisfy the expression."""
        return not _has(self.tree, ("count", "match"))

    def matches(self, features: Set[str]) -> bool:
        """Does one node with these features satisfy the expression (counts and brackets ignored)?"""
        return _eval(self.tree, features)

    def counts(self) -> List[Tuple[tuple, int]]:
        """(sub-expression, nodes needed) of every `x*N`."""
        out: List[Tuple[tuple, int]] = []
        _collect_counts(self.tree, out)
        return out


def parse_constraint(text: str) -> Constraint:
    """Parse a constraint expression the way sbatch accepts it; ValueError says where it breaks."""
    tokens: List[Tuple[str, str]] = []
    pos = 0
    text = str(text)
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        if m.group("bad"):
            raise ValueError(f"unexpected {m.group('bad')!r} at position {m.start('bad')}")
        tokens.append(("name", m.group("name")) if m.group("name") else ("op", m.group("op")))
        pos = m.end()
    if not tokens:
        raise ValueError("empty expression")
    names: List[str] = []
    i = 0

    def peek() -> Optional[Tuple[str, str]]:
        return tokens[i] if i < len(tokens) else None

    def take(kind: str, value: Optional[str] = None) -> str:
        nonlocal i
        t = peek()
        if t is None or t[0] != kind or (value is not None and t[1] != value):
            want = repr(value) if value else "a feature name"
            got = repr(t[1]) if t else "the end"
            raise ValueError(f"expected {want}, found {got}")
        i += 1
        return t[1]

    def expr() -> tuple:
        parts = [conj()]
        while peek() == ("op", "|"):
            take("op", "|")
            parts.append(conj())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def conj() -> tuple:
        parts = [factor()]
        while peek() == ("op", "&"):
            take("op", "&")
            parts.append(factor())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def factor() -> tuple:
        t = peek()
        if t == ("op", "("):
            take("op", "(")
            node = expr()
            take("op", ")")
        elif t == ("op", "["):
            take("op", "[")
            node = ("match", expr())
            take("op", "]")
        else:
            name = take("name")
            names.append(name)
            node = ("name", name)
        if peek() == ("op", "*"):
            take("op", "*")
            count = take("name")
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"a node count after '*' must be a positive whole number, got {count!r}")
            node = ("count", node, int(count))
        return node

    tree = expr()
    if i != len(tokens):
        raise ValueError(f"unexpected {tokens[i][1]!r} after a complete expression")
    return Constraint(tree=tree, names=list(dict.fromkeys(names)))


def _has(tree: tuple, kinds: Sequence[str]) -> bool:
    if tree[0] in kinds:
        return True
    if tree[0] in ("and", "or"):
        return any(_has(t, kinds) for t in tree[1])
    if tree[0] in ("count", "match"):
        return _has(tree[1], kinds)
    return False


def _eval(tree: tuple, features: Set[str]) -> bool:
    op = tree[0]
    if op == "name":
        return tree[1] in features
    if op == "and":
        return all(_eval(t, features) for t in tree[1])
    if op == "or":
        return any(_eval(t, features) for t in tree[1])
    return _eval(tree[1], features)  # count, match: what one node must have


def _collect_counts(tree: tuple, out: List[Tuple[tuple, int]]) -> None:
    if tree[0] == "count":
        out.append((tree[1], tree[2]))
        _collect_counts(tree[1], out)
    elif tree[0] in ("and", "or"):
        for t in tree[1]:
            _collect_counts(t, out)
    elif tree[0] == "match":
        _collect_counts(tree[1], out)


def render_tree(tree: tuple) -> str:
    """A (sub-)expression back as text, for messages."""
    op = tree[0]
    if op == "name":
        return tree[1]
    if op in ("and", "or"):
        sep = "&" if op == "and" else "|"
        return sep.join(render_tree(t) if t[0] in ("name", "count", "match") else f"({render_tree(t)})"
                        for t in tree[1])
    if op == "match":
        return f"[{render_tree(tree[1])}]"
    inner = render_tree(tree[1])
    return f"{inner if tree[1][0] in ('name', 'match') else f'({inner})'}*{tree[2]}"


def constraint_problem(text: str, nodes: Iterable[Tuple[str, Set[str]]], wanted_nodes: int,
                       partition: str) -> Tuple[Optional[str], Optional[List[str]]]:
    """(why the partition's nodes cannot satisfy the constraint, or None; the names of the nodes a
    per-node constraint leaves, for the resource checks that follow, or None when it does not
    judge nodes one by one). `nodes`: (name, AvailableFeatures) of the partition's nodes."""
    try:
        c = parse_constraint(text)
    except ValueError as e:
        return f"{text!r} is not a Slurm constraint expression (a, a&b, a|b, [a|b], a*2): {e}", None
    nodes = list(nodes)
    have: Dict[str, int] = {}
    for _, feats in nodes:
        for f in feats:
            have[f] = have.get(f, 0) + 1
    unknown = [n for n in c.names if n not in have]
    if unknown:
        known = ", ".join(sorted(have)) or "none"
        return (f"no node in partition '{partition}' has feature{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)} (sbatch would fail: Invalid feature specification; features there: "
                f"{known})"), None
    for sub, n in c.counts():
        with_it = sum(1 for _, feats in nodes if _eval(sub, feats))
        if with_it < n:
            return (f"{render_tree(sub)}*{n} needs {n} node(s) with {render_tree(sub)}; partition '{partition}' has "
                    f"{with_it}"), None
    if not c.per_node:
        return None, None
    fit = [name for name, feats in nodes if c.matches(feats)]
    if len(fit) < wanted_nodes:
        return (f"{len(fit)} node(s) of partition '{partition}' satisfy {text!r} "
                f"({', '.join(fit) or 'none'}); the stage asks for {wanted_nodes}"), fit
    return None, fit
