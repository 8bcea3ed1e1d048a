"""Every table of a tier in one command: ``lfs-bench run-all`` (``python -m benchmarks.run_all``).

    lfs-bench run-all [--analysis] [--at-once N] [key=value ...]

runs the paper tables (with ``--analysis`` also the suite's own studies, ``analysis: true`` in a
table's YAML) as ``benchmarks/run.py +table=T`` processes, ``N`` tables at a time (default 2, one
per core of the mini tier's machine), each running its own jobs one after another
(``tier.jobs=1``). So no core waits while one table starts, finishes its last job or writes its
report: another table is computing. Every ``key=value`` goes to every table (``tier=smoke``,
``results_dir=...``).

Order (our choice; it changes how long the tier takes, never a row): a table starts once the
tables its YAML names in ``after`` have finished, when they are part of the run (their rows are
the ones it reuses, ``reuse``, or reads, the transfers); among the tables ready to start, the one
that heads the longest chain of job time goes first: its own, plus that of the longest chain of
tables waiting for it (critical-path list scheduling, the longest first where none waits, so that
the last table to finish is a short one), from the computed rows (not the reused copies) of the
committed ``results/<tier>``.

Each table's own output goes to ``<results_dir>/logs/<tier>/run-all/<date_time>/<table>.log``;
this command prints one line as each table starts and finishes (with its time and exit code),
then a summary. Exit code: 0 when every table succeeded; 2 when a table's input could not be used
(no further table is started: the same key would fail them all); 130 when interrupted (Ctrl-C:
the running tables are stopped as by a kill, and the same command resumes them: rows that exist
are skipped, searches continue from their checkpoints); otherwise 1.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

from benchmarks.arguments import argument, config_defaults, default_tree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TABLES = HERE / "conf" / "table"


def table_configs() -> dict[str, dict]:
    """Every table's YAML (its top-level keys: ``analysis``, ``after``, ...)."""
    return {p.stem: yaml.safe_load(p.read_text()) or {} for p in sorted(TABLES.glob("*.yaml"))}


def job_seconds(tier: str, results: Path = ROOT / "results", computed_only: bool = False) -> dict[str, float]:
    """Per table, the sum of its committed rows' job times (``wall_seconds``) in ``results/<tier>``:
    the estimate that orders the tables (0 for a table with no committed row). With
    ``computed_only``, rows copied from another table (``reused_from``) are left out: they cost no
    computation (``perf/run.py``'s ``jobs_s``)."""
    out: dict[str, float] = {}
    for path in (results / tier).glob("*/**/seed=*.json"):
        if path.name.endswith(".history.json"):
            continue
        try:
            row = json.loads(path.read_text())
            if computed_only and row["provenance"].get("reused_from"):
                continue
            out[row["table"]] = out.get(row["table"], 0.0) + float(row["provenance"]["wall_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def schedule(tables: list[str], after: dict[str, list[str]], cost: dict[str, float]):
    """The order the tables become ready in: ``next_ready(done, running)`` -> the table to start
    now, or None. Ready: every table of ``after[t]`` that is in ``tables`` has finished. Among
    the ready tables, the one that heads the longest chain of work goes first: its own ``cost``
    plus the longest chain of the tables that wait for it (critical-path list scheduling; the
    longest table first where no table waits)."""
    waiting = {t: [u for u in tables if t in (after.get(u) or [])] for t in tables}
    chain: dict[str, float] = {}

    def length(t: str, seen: frozenset = frozenset()) -> float:
        if t not in chain:
            below = [length(u, seen | {t}) for u in waiting[t] if u not in seen | {t}]  # a cycle: never ready anyway
            chain[t] = cost.get(t, 0.0) + max(below, default=0.0)
        return chain[t]

    def ready(done: set, running: set) -> list[str]:
        return [t for t in tables if t not in done and t not in running
                and all(d in done for d in after.get(t, []) if d in tables)]

    def next_ready(done: set, running: set) -> str | None:
        cands = ready(done, running)
        return max(cands, key=lambda t: (length(t), cost.get(t, 0.0), -tables.index(t))) if cands else None

    return next_ready


def _loop(tables, at_once, overrides, logs, next_ready, start, running, done, codes) -> None:
    """Start tables while a slot is free and one is ready; record each one's exit code as it ends."""
    stop = False
    while len(done) < len(tables):
        while not stop and len(running) < at_once:
            table = next_ready(done, set(running))
            if table is None:
                break
            log = open(logs / f"{table}.log", "w")
            cmd = [sys.executable, str(HERE / "run.py"), f"+table={table}", "tier.jobs=1", "progress=false",
                   *overrides]
            running[table] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, time.monotonic())
            print(f"  start  {table}", flush=True)
        if not running:  # nothing left that can start (a table failed with bad input)
            break
        time.sleep(0.5)
        for table, (proc, log, began) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            log.close()
            del running[table]
            done.add(table)
            codes[table] = code
            took = time.monotonic() - began
            print(f"  {'done  ' if code == 0 else 'FAILED'} {table} in {took:.0f} s (exit {code}); "
                  f"{len(done)}/{len(tables)} tables, {time.monotonic() - start:.0f} s elapsed"
                  + ("" if code == 0 else f"; see {logs / (table + '.log')}"), flush=True)
            stop = stop or code == 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lfs-bench run-all", description=__doc__.split("\n\n")[0])
    ap.add_argument("--analysis", action="store_true", help="also the analysis tables (analysis: true)")
    ap.add_argument("--at-once", type=int, default=2, metavar="N", help="tables at a time (default 2)")
    ap.add_argument("--tables", default=None, help="only these tables, comma-separated")
    ap.add_argument("overrides", nargs="*", help="key=value for every table (tier=smoke, results_dir=...)")
    args = ap.parse_args(argv)
    if args.at_once < 1:
        print(f"error: --at-once must be an integer >= 1, got {args.at_once}", file=sys.stderr)
        return 2
    bad = [o for o in args.overrides if "=" not in o or o.lstrip("+").startswith("table=")]
    if bad:
        print(f"error: {bad[0]!r} is not a key=value override for every table (the tables are chosen by "
              f"--analysis and --tables)", file=sys.stderr)
        return 2
    configs = table_configs()
    if args.tables:
        tables = [t.strip() for t in args.tables.split(",") if t.strip()]
        unknown = [t for t in tables if t not in configs]
        if unknown:
            print(f"error: unknown table {unknown[0]!r}; available: {', '.join(configs)}", file=sys.stderr)
            return 2
    else:
        tables = [t for t, c in configs.items() if args.analysis or not c.get("analysis", False)]
    tier = argument(args.overrides, "tier") or config_defaults()["tier"]
    results_dir = Path(argument(args.overrides, "results_dir") or default_tree()["results_dir"])
    logs = results_dir / "logs" / tier / "run-all" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot write the logs under {results_dir}: {e.strerror}; set results_dir= to a writable "
              f"folder", file=sys.stderr)
        return 2
    after = {t: list(configs[t].get("after") or []) for t in tables}
    next_ready = schedule(tables, after, job_seconds(tier, computed_only=True))
    print(f"run-all: {len(tables)} table(s) of the {tier} tier, {args.at_once} at a time; each table's output in "
          f"{logs}", flush=True)

    start, running, done, codes = time.monotonic(), {}, set(), {}
    try:
        _loop(tables, args.at_once, args.overrides, logs, next_ready, start, running, done, codes)
    except KeyboardInterrupt:
        for proc, log, _ in running.values():
            proc.terminate()  # each table stops as after a kill: its finished rows stay, a search keeps its checkpoint
        for proc, log, _ in running.values():
            proc.wait()
            log.close()
        print(f"run-all: interrupted with {', '.join(running) or 'no table'} running; the same command resumes "
              f"(rows that exist are skipped, searches continue from their checkpoints)", file=sys.stderr)
        return 130
    total = time.monotonic() - start
    failed = [t for t, c in codes.items() if c != 0]
    skipped = [t for t in tables if t not in codes]
    print(f"run-all: {len(tables) - len(failed) - len(skipped)} of {len(tables)} table(s) in {total:.0f} s "
          f"({total / 60:.1f} min)" + (f"; FAILED: {', '.join(failed)}" if failed else "")
          + (f"; not started: {', '.join(skipped)}" if skipped else ""), flush=True)
    if any(c == 2 for c in codes.values()):
        return 2
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
