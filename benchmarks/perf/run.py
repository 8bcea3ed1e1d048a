"""Run the speed benchmarks and write their figures to results/perf/ (one command):

    python benchmarks/perf/run.py                  # loss, executors, auto (threads 2 and 1), smoke tier
    python benchmarks/perf/run.py --no-smoke       # without the smoke-tier timing (~3 min less)
    python benchmarks/perf/run.py --only smoke     # only the smoke-tier timing
    python benchmarks/perf/run.py --only mini      # time the mini tier's paper tables (lfs-bench run-all), then --check them
    python benchmarks/perf/run.py --only mini --with-analysis   # and the analysis tables (ablation_scale, ...)

Writes ``results/perf/cpu.csv`` (one row per measurement: name, case, B, threads, seconds,
reference, reference seconds, ratio, target, met, rounds, note, and provenance: commit, dirty
flag, CPU model, torch and python versions, date, host, command; rows of earlier runs with other
keys are kept; a new measurement replaces the row of the same one), ``results/perf/tier_runs.csv``
(every timed run of a whole tier, ``--only mini`` or the smoke tier, appended, never replaced: how
much the same tier's time varies between runs, with the computed jobs' own seconds) and ``results/perf/benchmark-cpu.json`` (pytest-benchmark's own record of the
whole suite; a run of a subset, ``-- -k ...``, writes its record to the temporary folder). The
Markdown table for README.md is printed at the end (``--table`` prints it from the CSV only).

The whole mini tier is not re-run by default (20 minutes): its row is then computed from the
committed result rows' timestamps (``results/mini``), and says so. ``--only mini`` runs it, as a
user does (``lfs-bench run-all``: every paper table, two at a time, each a fresh process with its
report), into ``runs/perf-mini`` (replaced), records the measured wall time, and then runs
``benchmarks/report.py --results runs/perf-mini --check`` against the committed mini reference:
its summary goes into the row's note.

GPU figures (the loss on the device, ResNet-20 step/epoch time for 1, 8 and 32 copies with both
executors and channels_last / bf16 / torch.compile variants, the Table 2 estimate on one GPU) come
from another command, on a machine with a CUDA GPU: ``python benchmarks/perf/gpu.py`` (writes
``results/perf/gpu.csv``; ``--device cpu --quick`` is a dry run; see its docstring).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.perf import cases  # noqa: E402

MINI_DIR = "runs/perf-mini"


def run_all_timed(name: str, args: list[str], scratch: str | None = None) -> tuple[list[dict], float, bool, str]:
    """Time one ``lfs-bench run-all`` (:mod:`benchmarks.run_all`: the tables two at a time, each
    running its jobs one after another) with ``args``: ``(one "<name>_tier_table" row per table,
    total seconds, whether every table succeeded, the command as shown)``. A ``scratch`` folder in
    the arguments is shown as ``$TMP`` in the rows' notes."""
    import re

    shown = " ".join(["python -m benchmarks.run_all", *args])
    if scratch:
        shown = shown.replace(scratch, "$TMP")
    print(f"  {name}: {shown} ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_all", *args], cwd=ROOT, capture_output=True,
                          text=True)
    total = time.perf_counter() - start
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    rows, failed = [], []
    for table, seconds, code in re.findall(r"^  (?:done  |FAILED) (\S+) in (\d+) s \(exit (\d+)\)", proc.stdout, re.M):
        if code != "0":
            failed.append(table)
        rows.append(cases.row(f"{name}_tier_table", table, float(seconds), metric="seconds", threads=1, rounds=1,
                              note=("" if code == "0" else "FAILED: ") + f"{shown}: this table's own process, "
                                   "while another table ran beside it"))
    return rows, total, proc.returncode == 0 and not failed, shown


def mini_tier(analysis: bool = False) -> list[dict]:
    """Wall time of the mini tier's paper tables (with ``analysis``, of every table): one
    ``lfs-bench run-all`` into ``runs/perf-mini`` (emptied first), as a user runs the tier; then
    the regression check of those rows against the committed mini reference."""
    import shutil

    shutil.rmtree(ROOT / MINI_DIR, ignore_errors=True)
    rows, total, ok, shown = run_all_timed("mini", [*(["--analysis"] if analysis else []), f"results_dir={MINI_DIR}"])
    target = cases.TARGETS["mini_tier_minutes"] * 60
    check = subprocess.run([sys.executable, "benchmarks/report.py", "--results", MINI_DIR, "--check"], cwd=ROOT,
                           capture_output=True, text=True)
    summary = ([line for line in check.stdout.splitlines() if line.startswith("check:")] or ["check: no summary"])[-1]
    print(check.stdout, flush=True)
    rows.append(cases.row("mini_tier_total", "all tables" if analysis else "paper tables", total, "target", target, total / target, 1.0,
                          metric="seconds", threads=1, rounds=1, meets=(total <= target) and ok,
                          note=f"measured: {shown} ({len(rows)} tables, 2 at a time)" + ("" if ok else "; FAILED")
                               + f"; then report.py --results {MINI_DIR} --check: {summary[len('check: '):]}"))
    cases.append_run({**rows[-1], "jobs_s": computed_job_seconds(ROOT / MINI_DIR, "mini")})
    print(f"  mini tier total: {total:.1f}s ({total / 60:.1f} min; target {target / 60:.0f} min)", flush=True)
    return rows


def computed_job_seconds(results_dir: Path, tier: str) -> float:
    """The sum of the computed jobs' own times (``wall_seconds``) of the rows in
    ``results_dir/<tier>``; rows copied from another table (``reused_from``) cost no computation
    and are not counted (:func:`benchmarks.run_all.job_seconds`)."""
    from benchmarks.run_all import job_seconds

    return round(sum(job_seconds(tier, results_dir, computed_only=True).values()), 1)


def benchmark_json(extra: list[str]) -> Path:
    """Where pytest-benchmark's raw record goes: ``results/perf/benchmark-cpu.json`` for the whole
    suite; a subset (extra pytest arguments, e.g. ``-k loss``) writes beside the temporary files
    instead, so that it does not replace the whole run's record (its rows still merge into cpu.csv)."""
    if extra:
        return Path(tempfile.gettempdir()) / "lfs-bench-benchmark-cpu-subset.json"
    return cases.RESULTS / "benchmark-cpu.json"


def run_pytest(threads: str, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", "benchmarks/perf", "-p", "no:cacheprovider", "-q", "--benchmark-enable",
           "--benchmark-json", str(benchmark_json(extra)), "--benchmark-columns=min,median,rounds",
           f"--perf-threads={threads}", *extra]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def smoke_tier() -> list[dict]:
    """Wall time of the whole smoke tier, every table (the analysis tables too) as a user runs it:
    one ``lfs-bench run-all --analysis tier=smoke`` into a scratch folder."""
    with tempfile.TemporaryDirectory(prefix="perf-smoke-") as tmp:
        rows, total, ok, shown = run_all_timed("smoke", ["--analysis", "tier=smoke", f"results_dir={tmp}/results"],
                                               scratch=tmp)
        jobs = computed_job_seconds(Path(tmp) / "results", "smoke")
    target = cases.TARGETS["smoke_tier_minutes"] * 60
    rows.append(cases.row("smoke_tier_total", "all tables", total, "target", target, total / target, 1.0, metric="seconds",
                          threads=1, rounds=1, meets=(total <= target) and ok,
                          note=f"measured: {shown} ({len(rows)} tables, 2 at a time)" + ("" if ok else "; FAILED")))
    cases.append_run({**rows[-1], "jobs_s": jobs})
    print(f"  smoke tier total: {total:.1f}s ({total / 60:.2f} min; target {target / 60:.0f} min)", flush=True)
    return rows


def _union_seconds(spans: list) -> float:
    """Seconds covered by the union of ``(start, end)`` intervals (jobs run two at a time; rows of
    one table added on another day are another interval, not the days between)."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(spans):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += (cur_end - cur_start).total_seconds()
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += (cur_end - cur_start).total_seconds()
    return total


def mini_tier_from_rows(results: Path = ROOT / "results" / "mini") -> list[dict]:
    """The mini tier's wall time from its committed rows: per table, the time covered by its jobs
    (each from end - wall_seconds to end; two jobs at a time), summed over the tables (they run one
    after another). Process start-up and the report between tables are not in it."""
    spans: dict[str, list] = {}
    commits = set()
    for f in results.rglob("*.json"):
        if f.name.endswith(".history.json") or "history" in f.name:
            continue
        try:
            r = json.loads(f.read_text())
            p = r["provenance"]
            end = dt.datetime.fromisoformat(p["date"])
            start = end - dt.timedelta(seconds=float(p["wall_seconds"]))
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            continue
        spans.setdefault(r["table"], []).append((start, end))
        commits.add(str(p.get("git_commit", ""))[:7])
    if not spans:
        return []
    total = sum(_union_seconds(v) for v in spans.values())
    target = cases.TARGETS["mini_tier_minutes"] * 60
    return [cases.row("mini_tier_spans", "all tables (committed rows, not re-run)", total, "target", target,
                      total / target, 1.0, metric="seconds", threads=1, rounds=1,
                      note=f"job spans of {sum(len(v) for v in spans.values())} rows in results/mini, "
                           f"commit {', '.join(sorted(commits))}; without process start and reports")]


def markdown(path: Path = cases.RESULTS / "cpu.csv", threads: str = "2") -> str:
    """The README table: the issue's targets, at ``threads`` threads where it matters."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))

    def pick(name, case=None, th=threads):
        for r in rows:
            if r["name"] == name and (case is None or r["case"] == case) and (th is None or r["threads"] == th):
                return r
        return None

    def ratio(r):
        return f"{float(r['ratio']):.2f}" if r and r["ratio"] else "not run"

    def met(r):
        return "" if r is None or not r["meets"] else ("yes" if r["meets"] == "True" else "**no**")

    lines = ["| measurement | target | measured | met |", "|---|---|---|---|"]
    for case, label in (("256x10575", "(256, 10575)"), ("128x10", "(128, 10)")):
        r = pick("loss_vs_cross_entropy", case)
        before = pick("loss_autograd_vs_cross_entropy", case)
        was = f" (autograd version: {ratio(before)})" if before else ""
        lines.append(f"| `am_lfs_loss` fwd+bwd ÷ `F.cross_entropy` fwd+bwd, {label} | ≤ {cases.TARGETS[f'loss_vs_cross_entropy/{case}']:g} "
                     f"| {ratio(r)}{was} | {met(r)} |")
    r, rb = pick("vectorized_vs_sequential_epoch", "cnn1d"), pick("vectorized_vs_best_sequential_epoch", "cnn1d")
    if rb:  # held against the faster sequential epoch (conv=native or matmul)
        lines.append(f"| one search epoch, mini 1D CNN, B = {rb['B']}: vectorized ÷ the faster sequential "
                     f"| ≤ {cases.TARGETS['vectorized_vs_sequential_epoch/cnn1d']:g} | {ratio(rb)} (÷ sequential on "
                     f"the same conv=matmul model: {ratio(r)}) | {met(rb)} |")
    else:
        lines.append(f"| one search epoch, mini 1D CNN, B = {r['B'] if r else 32}: vectorized ÷ sequential "
                     f"| ≤ {cases.TARGETS['vectorized_vs_sequential_epoch/cnn1d']:g} | {ratio(r)} | {met(r)} |")
    for case in ("mlp", "cnn1d", "resnet20"):
        r = pick("auto_vs_best_epoch", case)
        chosen = ""
        if r and "auto chose" in r["note"]:
            chosen = " (chose " + r["note"].split("auto chose ")[1].split(";")[0] + ")"
        run, choice = pick("auto_vs_best_run", case), pick("auto_choice_vs_best_epoch", case)
        shown = choice or r
        extra = f" (auto's own epochs timed again: {ratio(r)}" if choice else " ("
        extra += f"; with its probe, over a run: {ratio(run)})" if run else ")"
        lines.append(f"| `auto` epoch ÷ better of sequential/vectorized, {case}, B = {r['B'] if r else '?'}{chosen} "
                     f"| ≤ 1.05 | {ratio(shown)}{extra} | {met(run or shown)} |")
    r = pick("screening_candidates_per_second")
    shown = f"{1 / float(r['value_s']):.0f} per second" if r else "not run"
    lines.append(f"| evolved losses: candidates screened (validity + LRP + GEC), (256, 10) | ≥ "
                 f"{cases.TARGETS['screening_candidates_per_second/256x10']:g} per second | {shown} | {met(r)} |")
    r = pick("strided_patches_vs_unfold", "cnn1d", th="1")  # the mini tier's one thread per job
    lines.append(f"| mini 1D CNN convolutions fwd+bwd, B = {r['B'] if r else 8}, 1 thread: strided-slice patches ÷ "
                 f"`unfold`'s (same bits) | ≤ {cases.TARGETS['strided_patches_vs_unfold/cnn1d']:g} | {ratio(r)} | {met(r)} |")
    r = pick("flush_denormal_vs_not", "8x1000x64", th="1")
    lines.append(f"| elementwise op on float32 denormals, 1 thread: `flush_denormal` ÷ not "
                 f"| ≤ {cases.TARGETS['flush_denormal_vs_not/8x1000x64']:g} | {ratio(r)} | {met(r)} |")
    timed = [x for x in rows if x["name"] == "mini_tier_total"]
    r = max(timed, key=lambda x: x.get("date") or "") if timed else None  # the latest timed run
    spans = pick("mini_tier_spans", th=None)
    if r:
        which = "paper tables" if r["case"] == "paper tables" else "whole mini tier"
        lines.append(f"| mini tier, {which} (`--only mini`, {(r.get('date') or '')[:10]}) | ≤ 30 min | "
                     f"{float(r['value_s']) / 60:.1f} min | {met(r)} |")
    elif spans:
        lines.append(f"| whole mini tier | ≤ 30 min | {float(spans['value_s']) / 60:.1f} min (job spans of the committed "
                     f"rows, not re-run) | {met(spans)} |")
    else:
        lines.append("| whole mini tier | ≤ 30 min | not run | |")
    r = pick("smoke_tier_total", th=None)
    lines.append(f"| smoke tier, all tables | ≤ 2 min | {float(r['value_s']) / 60:.1f} min | {met(r)} |" if r
                 else "| smoke tier, all tables | ≤ 2 min | not run | |")
    any_row = rows[0] if rows else {}
    lines.append("")
    lines.append(f"{any_row.get('cpu', '?')}, {threads} torch threads (a shared 2-core machine), torch "
                 f"{any_row.get('torch', '?')}, commit {str(any_row.get('commit', '?'))[:7]}"
                 f"{' (dirty)' if any_row.get('dirty') == 'True' else ''}, {str(any_row.get('date', '?'))[:10]}; "
                 "every row, and threads = 1, in `results/perf/cpu.csv`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2,1", help="torch thread counts for the pytest benchmarks (default 2,1)")
    ap.add_argument("--only", choices=["bench", "smoke", "mini"], default=None,
                    help="only the pytest benchmarks, only the smoke-tier timing, or only the mini tier re-run")
    ap.add_argument("--no-smoke", action="store_true")
    ap.add_argument("--with-analysis", action="store_true",
                    help="with --only mini: also run the analysis tables (analysis: true in their YAML)")
    ap.add_argument("--table", action="store_true", help="print the README table from results/perf/cpu.csv and exit")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. -k loss")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown())
        return 0
    cases.RESULTS.mkdir(parents=True, exist_ok=True)
    rc = 0
    start = time.perf_counter()
    if args.only in (None, "bench"):
        rc = run_pytest(args.threads, args.pytest_args)
        cases.write_rows(mini_tier_from_rows())
    if args.only == "mini":
        cases.write_rows(mini_tier(args.with_analysis), replace=("mini_tier_table",))  # this run's tables only
    if args.only == "smoke" or (args.only is None and not args.no_smoke):
        cases.write_rows(smoke_tier(), replace=("smoke_tier_table",))
    print(f"perf: done in {time.perf_counter() - start:.0f}s; figures in {cases.RESULTS / 'cpu.csv'}\n")
    print(markdown())
    return rc


if __name__ == "__main__":
    sys.exit(main())
