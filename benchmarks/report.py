"""Tables, figures and the regression check, from the result rows alone.

    python benchmarks/report.py [--results runs] [--tier mini] [--table NAME]
    python benchmarks/report.py --check            # your runs (runs/) vs published / the mini reference
    python benchmarks/report.py --results results --check   # the committed rows
    python benchmarks/report.py --results results --write-reference  # freeze the mini means

For each (tier, table): ``results/<tier>/<table>.csv`` (one line per dataset x method x setting x
metric: n, mean, std, 95 % confidence interval of the mean, and the published value where the
paper has one) and ``results/<tier>/<table>.md`` (reproduced beside published). Figures go to
``results/<tier>/figures/``: Figure 1 (search space vs known losses), Figure 3 (mu over epochs),
Figure 4 (gradient of the intra-class term vs activation, AM-LFS vs baseline), the B and M
ablations.

The check. Full tier: every published cell is compared with the reproduced mean; a cell is a
regression when it is worse than published by more than ``FULL_TOLERANCE`` points. Mini tier:
each cell is compared with the committed reference (``benchmarks/mini_reference.json``); a
regression is a mean worse than the reference mean by more than
``max(MINI_ABS_TOLERANCE, 2 sqrt(s_ref^2 / n_ref + s_new^2 / n_new))`` (:func:`mini_tolerance`:
the seed noise of both runs). Cells without rows say "not run".
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from benchmarks import results
from benchmarks.results import load_rows, setting_key
from benchmarks.stats import summarize, t95  # noqa: F401  (t95: re-exported)

HERE = Path(__file__).resolve().parent
PUBLISHED = HERE / "published.yaml"
REFERENCE = HERE / "mini_reference.json"
FULL_TOLERANCE = 1.0  # percentage points
MINI_ABS_TOLERANCE = 1.0  # percentage points (metrics are in %)
LOWER_IS_BETTER = {"top1_error", "approx_error"}
TABLE_ORDER = ("cifar10", "megaface", "market1501", "dukemtmc", "ablation_b", "ablation_m", "ablation_search",
               "ablation_sigma", "ablation_scale", "figure1")


def all_tables() -> list[str]:
    """Every table: :data:`TABLE_ORDER` first, then any other table config (a new one is never left out)."""
    conf = Path(__file__).resolve().parent / "conf" / "table"
    return list(TABLE_ORDER) + sorted(p.stem for p in conf.glob("*.yaml") if p.stem not in TABLE_ORDER)


def aggregate(rows: list[dict]) -> dict:
    """{(tier, table, dataset, method, setting_key, metric): summary} over seeds."""
    groups: dict = defaultdict(list)
    for r in rows:
        for metric, value in r["metrics"].items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                key = (r["tier"], r["table"], r["dataset"], r["method"], setting_key(r["setting"]), metric)
                groups[key].append(float(value))
    return {k: summarize(v) for k, v in groups.items()}


# ---------------------------------------------------------------------------- published
def published_cells() -> list[dict]:
    """Flat list of published cells: table, dataset, method, setting_key, metric, value, source."""
    doc = yaml.safe_load(PUBLISHED.read_text())
    out = []
    for table, spec in doc["tables"].items():
        for cell in spec["cells"]:
            dataset = cell.get("dataset", spec.get("dataset"))
            for metric, value in cell.items():
                if metric in ("method", "setting", "dataset", "source"):
                    continue
                out.append({"table": table, "dataset": dataset, "method": cell["method"],
                            "setting": setting_key(cell.get("setting") or {}), "metric": metric, "value": float(value),
                            "source": cell.get("source", doc["source"])})
    return out


def worse_by(metric: str, value: float, reference: float) -> float:
    """How much worse ``value`` is than ``reference`` (positive = worse)."""
    return value - reference if metric in LOWER_IS_BETTER else reference - value


# ------------------------------------------------------------------------------- tables
def sampling_std(setting: dict) -> float | None:
    """The sampling Gaussian's std of a setting that records ``sigma`` (and its reading
    ``sigma_is``: "variance", Eq. 19's, the default, or "std"); None where it records no sigma."""
    if "sigma" not in setting:
        return None
    sigma = float(setting["sigma"])
    return sigma if setting.get("sigma_is", "variance") == "std" else math.sqrt(sigma)


def logit_scale(setting: dict) -> float | None:
    """``s * std``: how far, in logits, a sampled loss's perturbation reaches, for a setting that
    records the head's scale ``s`` and the sampling ``sigma``; None otherwise."""
    std = sampling_std(setting)
    return None if std is None or "s" not in setting else float(setting["s"]) * std


def parse_setting_key(key: str) -> dict:
    """The inverse of :func:`benchmarks.results.setting_key` (values as strings)."""
    return {} if key == "default" else dict(part.partition("=")[::2] for part in key.split(","))


def fmt(s: dict | None) -> str:
    if s is None:
        return "not run"
    if s["n"] == 1:
        return f"{s['mean']:.2f} (n=1)"
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}] (n={s['n']})"


def write_table(tier: str, table: str, agg: dict, out_dir: Path) -> tuple[Path, Path] | None:
    keys = sorted(k for k in agg if k[0] == tier and k[1] == table)
    pub = [c for c in published_cells() if c["table"] == table]
    if not keys and tier != "full":
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    # a table whose settings record the head scale s and the sampling sigma shows s * std beside each cell
    scale = {k[4]: logit_scale(parse_setting_key(k[4])) for k in keys}
    scaled = any(v is not None for v in scale.values())
    lines = [["tier", "table", "dataset", "method", "setting", *(["s_std"] if scaled else []),
              "metric", "n", "mean", "std", "ci95_low", "ci95_high", "published"]]
    published_header = "published" if tier == "full" else "paper (full scale)"
    note = ("published: the paper's cell for the same dataset." if tier == "full" else
            f"paper (full scale): the paper's cell for the same method and setting on "
            f"{pub[0]['dataset'] if pub else '-'}; the {tier} tier runs a laptop-scale analogue, so compare "
            "differences between methods, not absolute values.")
    md = [f"# {table} ({tier} tier)", "",
          f"Mean ± std over seeds [95 % CI of the mean] (n seeds); {note}", "",
          f"| dataset | method | setting | {'s·std | ' if scaled else ''}metric | reproduced | {published_header} |",
          "|---|---|---|---|---|---|" + ("---|" if scaled else "")]
    seen = set()
    for k in keys:
        _, _, dataset, method, setting, metric = k
        s = agg[k]
        # full tier: the published cell of the same dataset; other tiers: the paper's full-scale
        # cell of the same method/setting/metric (first dataset of the table) for comparison of gains
        # (mini: the table's first dataset's cell, else another dataset's, e.g. a second paper's)
        same = [c for c in pub if c["method"] == method and c["setting"] == setting and c["metric"] == metric]
        if tier == "full":
            same = [c for c in same if c["dataset"] == dataset]
        else:
            same.sort(key=lambda c: c["dataset"] != pub[0]["dataset"])
        p = same[0]["value"] if same else None
        seen.add((dataset, method, setting, metric))
        x = [] if not scaled else ["" if scale[setting] is None else f"{scale[setting]:.4g}"]
        lines.append(list(map(str, [tier, table, dataset, method, setting, *x, metric, s["n"], f"{s['mean']:.6g}",
                                    f"{s['std']:.6g}", f"{s['ci95_low']:.6g}", f"{s['ci95_high']:.6g}",
                                    "" if p is None else p])))
        shown = [] if not scaled else ["" if scale[setting] is None else f"{scale[setting]:.2f}"]
        md.append(f"| {dataset} | {method} | {setting} | {''.join(v + ' | ' for v in shown)}{metric} | {fmt(s)} | "
                  f"{'' if p is None else p} |")
    if tier == "full":
        for c in pub:
            if (c["dataset"], c["method"], c["setting"], c["metric"]) not in seen:
                md.append(f"| {c['dataset']} | {c['method']} | {c['setting']} | {c['metric']} | not run | {c['value']} |")
    csv_path, md_path = out_dir / f"{table}.csv", out_dir / f"{table}.md"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)  # a setting such as "noise=0.0,search.lr=0.2" is quoted
    csv_path.write_text(buf.getvalue())
    md_path.write_text("\n".join(md) + "\n")
    return csv_path, md_path


# -------------------------------------------------------------------------- search cost
def table_config(table: str) -> dict:
    """The table's own YAML (``benchmarks/conf/table/<table>.yaml``) as written ({} if none): the
    report options it declares (``cost_section``, ``search_cost.speedup_over``)."""
    path = HERE / "conf" / "table" / f"{table}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def search_cost(rows: list[dict], speedup_over: str | None = None) -> list[dict]:
    """Per (dataset, method, setting) of rows that ran a search over loss expressions (their
    ``extra`` has ``explored``): seeds, candidates explored, losses trained (evaluations), the share
    not trained (``filtered_pct``: screened out, or reused as GEC duplicates), search seconds, explored losses per hour, the speed-up in explored
    per hour over the arm ``speedup_over`` (the table's ``search_cost.speedup_over``, e.g. naive
    evolution) on the same dataset, the share of search time spent on candidates that were
    rejected, and the rejections by reason summed over seeds."""
    groups: dict = defaultdict(list)
    for r in rows:
        if isinstance(r.get("extra"), dict) and "explored" in r["extra"]:
            groups[(r["dataset"], r["method"], setting_key(r["setting"]))].append(r)
    out = []
    for (dataset, method, setting), rs in sorted(groups.items()):
        explored = sum(r["extra"]["explored"] for r in rs)
        trained = sum(r["extra"]["evaluations"] for r in rs)
        seconds = sum(r["extra"]["search_seconds"] for r in rs)
        rejected: dict = defaultdict(int)
        for r in rs:
            for reason, n in (r["extra"].get("rejected") or {}).items():
                rejected[reason] += n
        shares = [r["extra"]["rejected_share_of_search_time"] for r in rs
                  if isinstance(r["extra"].get("rejected_share_of_search_time"), (int, float))]
        out.append({"dataset": dataset, "method": method, "setting": setting, "n": len(rs),
                    "explored": explored / len(rs), "trained": trained / len(rs),
                    "filtered_pct": 100.0 * (explored - trained) / explored if explored else float("nan"),
                    "search_seconds": seconds / len(rs), "explored_per_hour": explored / max(seconds, 1e-9) * 3600,
                    "speedup_over": speedup_over, "rejected": dict(sorted(rejected.items())),
                    "rejected_time_pct": 100.0 * sum(shares) / len(shares) if shares else None})
    for c in out:
        ref = [d for d in out if d["dataset"] == c["dataset"] and d["method"] == c["speedup_over"]
               and d["setting"] == c["setting"]]
        c["speedup"] = c["explored_per_hour"] / ref[0]["explored_per_hour"] if ref else None
    return out


def write_search_cost(tier: str, table: str, rows: list[dict], md_path: Path) -> Path | None:
    """``<table>_search.csv`` and a "Search cost" section appended to the table's Markdown, when
    the table's rows ran searches over loss expressions."""
    over = (table_config(table).get("search_cost") or {}).get("speedup_over")
    cells = search_cost([r for r in rows if r["tier"] == tier and r["table"] == table], over)
    if not cells:
        return None
    keys = ["dataset", "method", "setting", "n", "explored", "trained", "filtered_pct", "search_seconds",
            "explored_per_hour", "speedup_over", "speedup", "rejected_time_pct", "rejected"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for c in cells:
        w.writerow([json.dumps(c[k], sort_keys=True) if k == "rejected" else ("" if c[k] is None else c[k]) for k in keys])
    csv_path = md_path.with_name(f"{table}_search.csv")
    csv_path.write_text(buf.getvalue())
    md = ["", "## Search cost", "",
          "Means per search over seeds: candidates explored (screened out, reused or trained), losses trained on the "
          "proxy task, the share not trained (screened out or reused), search wall-clock, explored losses per hour and its "
          "speed-up over the arm named, the share of search time spent on candidates that were rejected; rejections "
          "by reason are summed over the seeds.", "",
          "| dataset | method | setting | seeds | explored | trained | not trained | search s | explored / h | speed-up | "
          "time on rejected | rejected (all seeds) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        speed = "" if c["speedup"] is None else f"{c['speedup']:.2f}x over {c['speedup_over']}"
        rej = ", ".join(f"{k} {v}" for k, v in c["rejected"].items())
        share = "" if c["rejected_time_pct"] is None else f"{c['rejected_time_pct']:.1f} %"
        md.append(f"| {c['dataset']} | {c['method']} | {c['setting']} | {c['n']} | {c['explored']:.1f} | "
                  f"{c['trained']:.1f} | {c['filtered_pct']:.1f} % | {c['search_seconds']:.1f} | "
                  f"{c['explored_per_hour']:.0f} | {speed} | {share} | {rej} |")
    with md_path.open("a") as f:
        f.write("\n".join(md) + "\n")
    return csv_path


def write_cost(tier: str, table: str, rows: list[dict], md_path: Path) -> None:
    """A "Compute" section appended to the table's Markdown when the table's YAML asks for it
    (``cost_section: true``): per arm, the mean model-epochs (every model trained, one epoch each:
    B copies, tuning points, proxy trainings and the final retraining all count) and train seconds."""
    if not table_config(table).get("cost_section"):
        return
    rows = [r for r in rows if r["tier"] == tier and r["table"] == table]
    groups: dict = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["method"], setting_key(r["setting"]))].append(r.get("extra") or {})
    if not groups:
        return
    md = ["", "## Compute", "", "Mean per run over seeds: model-epochs (every model trained counts one per epoch: the B "
          "copies of a search, each tuning point, each proxy training of an evolution and its final retraining) and "
          "the run's train seconds (on the machine and with the parallelism of each row's run: see its provenance).", "",
          "| dataset | method | setting | seeds | model-epochs | train s |", "|---|---|---|---|---|---|"]
    for (dataset, method, setting), extras in sorted(groups.items()):
        epochs = [e["model_epochs"] for e in extras if isinstance(e.get("model_epochs"), (int, float))]
        secs = [e["train_seconds"] for e in extras if isinstance(e.get("train_seconds"), (int, float))]
        shown_epochs = f"{sum(epochs) / len(epochs):.0f}" if epochs else "not recorded"
        shown_secs = f"{sum(secs) / len(secs):.1f}" if secs else "not recorded"
        md.append(f"| {dataset} | {method} | {setting} | {len(extras)} | {shown_epochs} | {shown_secs} |")
    with md_path.open("a") as f:
        f.write("\n".join(md) + "\n")


# ------------------------------------------------------------------------------ the check
def check(agg: dict, reference: dict | None) -> tuple[list[str], bool]:
    """Lines of the check report and whether it passed."""
    lines, ok = [], True
    for c in published_cells():
        key = ("full", c["table"], c["dataset"], c["method"], c["setting"], c["metric"])
        s = agg.get(key)
        cell = f"full {c['table']} {c['dataset']} {c['method']} {c['setting']} {c['metric']}"
        if s is None:
            lines.append(f"not run    {cell} (published {c['value']})")
            continue
        d = worse_by(c["metric"], s["mean"], c["value"])
        status = "REGRESSION" if d > FULL_TOLERANCE else "ok"
        ok &= status == "ok"
        lines.append(f"{status:<10} {cell}: {s['mean']:.2f} vs published {c['value']} (tolerance {FULL_TOLERANCE})")
    for key_str, ref in sorted((reference or {}).items()):
        key = tuple(key_str.split("|"))
        s = agg.get(key)
        cell = " ".join(key)
        if s is None:
            lines.append(f"not run    {cell} (reference {ref['mean']:.2f})")
            continue
        tol = mini_tolerance(ref, s)
        d = worse_by(key[5], s["mean"], ref["mean"])
        status = "REGRESSION" if d > tol else "ok"
        ok &= status == "ok"
        lines.append(f"{status:<10} {cell}: {s['mean']:.2f} vs reference {ref['mean']:.2f} (tolerance {tol:.2f})")
    return lines, ok


def mini_tolerance(ref: dict, new: dict) -> float:
    """How much worse than the reference a mini cell may be: ``max(MINI_ABS_TOLERANCE, 2 sqrt(
    s_ref^2 / n_ref + s_new^2 / n_new))``, twice the standard error of the difference of the two
    means, so that the new run's own seed noise counts as well as the reference's (a cell with one
    seed contributes no variance)."""
    def var_of_mean(c: dict) -> float:
        std = c.get("std")
        return std * std / c["n"] if c["n"] > 1 and std is not None and math.isfinite(std) else 0.0

    return max(MINI_ABS_TOLERANCE, 2 * math.sqrt(var_of_mean(ref) + var_of_mean(new)))


def make_reference(agg: dict, tier: str = "mini") -> dict:
    return {"|".join(map(str, k)): {"mean": s["mean"], "std": s["std"], "n": s["n"]}
            for k, s in sorted(agg.items()) if k[0] == tier}


# ---------------------------------------------------------------------------------- main
def build(results_dir: Path, tier: str | None = None, table: str | None = None,
          rows: list[dict] | None = None) -> list[Path]:
    """Regenerate CSV/Markdown tables and figures; returns the files written. ``rows``: the rows of
    ``results_dir`` if already loaded."""
    from benchmarks import figures

    rows = load_rows(results_dir) if rows is None else rows
    agg = aggregate(rows)
    tiers = [tier] if tier else sorted({r["tier"] for r in rows})  # no full/ folder of empty tables
    written: list[Path] = []
    for t in tiers:
        for tb in ([table] if table else all_tables()):
            paths = write_table(t, tb, agg, results_dir / t)
            if paths:
                written.extend(paths)
                write_cost(t, tb, rows, paths[1])
                extra = write_search_cost(t, tb, rows, paths[1])
                if extra:
                    written.append(extra)
        written.extend(figures.draw_all([r for r in rows if r["tier"] == t], results_dir / t / "figures", table))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Tables, figures and the regression check from result rows.")
    ap.add_argument("--results", default="runs", type=Path,
                    help="folder of result rows (default runs/, where run.py writes; committed rows: results/)")
    ap.add_argument("--tier", default=None)
    ap.add_argument("--table", default=None)
    ap.add_argument("--check", action="store_true", help="compare with published cells / the mini reference")
    ap.add_argument("--verbose", action="store_true", help="--check: every cell's line, not one line per table")
    ap.add_argument("--write-reference", action="store_true", help=f"write {REFERENCE.name} from the mini rows")
    ap.add_argument("--compact-histories", action="store_true",
                    help="rewrite the rows' histories without sampled candidates (history_candidates=false's format)")
    args = ap.parse_args(argv)
    if not args.results.is_dir():
        print(f"error: results folder {args.results} does not exist (run benchmarks/run.py +table=NAME first, "
              "or pass --results results for the committed rows)", file=sys.stderr)
        return 2
    if args.compact_histories:
        try:
            n, before, after = results.compact_histories(args.results)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"compacted {n} histories: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
        return 0
    try:
        rows = load_rows(args.results)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not (args.write_reference or args.check):
        try:
            written = build(args.results, args.tier, args.table, rows)
        except ValueError as e:  # e.g. a malformed history file (results.load_history names it)
            print(f"error: {e}", file=sys.stderr)
            return 2
        for path in written:
            print(path)
        return 0
    agg = aggregate(rows)
    if args.write_reference:
        REFERENCE.write_text(json.dumps(make_reference(agg), indent=1, sort_keys=True) + "\n")
        print(f"reference: {REFERENCE} ({sum(1 for k in agg if k[0] == 'mini')} cells)")
        return 0
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else None  # --check
    lines, ok = check(agg, reference)
    print("\n".join(check_summary(lines, verbose=args.verbose)))
    counts = {w: sum(line.startswith(w) for line in lines) for w in ("ok", "REGRESSION", "not run")}
    print(f"check: {counts['ok']} ok, {counts['REGRESSION']} regressions, {counts['not run']} not run"
          + ("" if reference is not None else f" (no {REFERENCE.name} yet)")
          + ("" if args.verbose else " (--verbose lists every cell)"))
    return 0 if ok else 1


def check_summary(lines: list[str], verbose: bool = False) -> list[str]:
    """The check's lines as one line per (tier, table) with its counts, followed by the
    regressions in full; ``verbose``: every cell's line."""
    if verbose:
        return lines
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for line in lines:
        status = "not run" if line.startswith("not run") else line.split()[0]
        tier, table = line[10:].split()[:2]
        c = counts.setdefault((tier, table), {"ok": 0, "REGRESSION": 0, "not run": 0})
        c[status] += 1
    out = [f"{tier:<5} {table:<16} {c['ok']:>4} ok  {c['REGRESSION']:>3} regressions  {c['not run']:>4} not run"
           for (tier, table), c in sorted(counts.items())]
    return out + [line for line in lines if line.startswith("REGRESSION")]

if __name__ == "__main__":
    sys.exit(main())
