"""report.py: statistics, published cells, Markdown/CSV, the regression check."""
import json
import math

import pytest
import yaml

from benchmarks import report, results


def test_summarize_by_hand():
    s = report.summarize([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3)
    std = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert s["std"] == pytest.approx(std)
    assert s["ci95_high"] - s["mean"] == pytest.approx(4.303 * std / math.sqrt(3))
    one = report.summarize([5.0])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["std"])


def test_published_cells_transcribed():
    cells = report.published_cells()
    get = {(c["table"], c["dataset"], c["method"], c["setting"], c["metric"]): c["value"] for c in cells}
    assert get[("cifar10", "cifar10", "learn", "noise=0.0", "top1_error")] == 6.92
    assert get[("cifar10", "cifar10", "ce", "noise=0.2", "top1_error")] == 15.05
    assert get[("megaface", "megaface", "arcface", "default", "rank1")] == 72.4
    assert get[("market1501", "market1501", "learn", "default", "rank5")] == 98.1
    assert get[("dukemtmc", "dukemtmc", "sphere_reid", "default", "mAP")] == 68.5
    assert get[("ablation_b", "dukemtmc", "learn", "B=16", "mAP")] == 69.7
    assert get[("ablation_m", "market1501", "learn", "M=10", "mAP")] == 84.2
    assert get[("ablation_search", "market1501", "fixed", "default", "mAP")] == 84.0
    assert ("cifar10", "cifar10", "l2t_dlf", "noise=0.1", "top1_error") not in get  # "-" in the paper
    doc = yaml.safe_load(report.PUBLISHED.read_text())
    assert set(doc["tables"]) == {"cifar10", "megaface", "market1501", "dukemtmc", "ablation_b", "ablation_m",
                                  "ablation_search"}


def _row(tmp, tier, table, dataset, method, setting, seed, metrics):
    row = results.make_row(table=table, tier=tier, dataset=dataset, method=method, setting=setting, seed=seed,
                           metrics=metrics, provenance={})
    results.atomic_write_json(results.row_path(tmp, tier, table, dataset, method, setting, seed), row)


def test_check_full_tier_against_published(tmp_path):
    _row(tmp_path, "full", "cifar10", "cifar10", "learn", {"noise": 0.0}, 0, {"top1_error": 7.5})  # 0.58 worse: ok
    _row(tmp_path, "full", "cifar10", "cifar10", "ce", {"noise": 0.0}, 0, {"top1_error": 10.0})  # 1.25 worse
    agg = report.aggregate(results.load_rows(tmp_path))
    lines, ok = report.check(agg, None)
    assert not ok
    assert any(line.startswith("REGRESSION") and " ce noise=0.0 top1_error" in line for line in lines)
    assert any(line.startswith("ok") and " learn noise=0.0 top1_error" in line for line in lines)
    assert any(line.startswith("not run") and "megaface" in line for line in lines)


def test_check_mini_against_reference_and_cli_exit_codes(tmp_path, monkeypatch, capsys):
    for seed, acc in enumerate([80.0, 82.0, 81.0]):
        _row(tmp_path, "mini", "market1501", "synthetic_reid_market", "learn", {}, seed, {"mAP": acc})
    agg = report.aggregate(results.load_rows(tmp_path))
    ref = report.make_reference(agg)
    lines, ok = report.check(agg, ref)
    assert ok and any(line.startswith("ok") and "mini market1501" in line for line in lines)
    ref_path = tmp_path / "ref.json"
    monkeypatch.setattr(report, "REFERENCE", ref_path)
    ref_path.write_text(json.dumps(ref))
    assert report.main(["--results", str(tmp_path), "--check"]) == 0
    # a drop of more than max(1 point, 2 std / sqrt(n)) is a regression
    for seed in range(3):
        _row(tmp_path, "mini", "market1501", "synthetic_reid_market", "learn", {}, seed, {"mAP": 75.0})
    assert report.main(["--results", str(tmp_path), "--check"]) == 1
    assert "1 regressions" in capsys.readouterr().out
    assert report.main(["--results", str(tmp_path / "nowhere"), "--check"]) == 2


def test_tables_show_reproduced_and_published(tmp_path):
    _row(tmp_path, "full", "cifar10", "cifar10", "learn", {"noise": 0.1}, 0, {"top1_error": 10.5})
    agg = report.aggregate(results.load_rows(tmp_path))
    csv_path, md_path = report.write_table("full", "cifar10", agg, tmp_path / "out")
    md = md_path.read_text()
    assert "| cifar10 | learn | noise=0.1 | top1_error | 10.50 (n=1) | 10.05 |" in md
    assert "| cifar10 | ce | noise=0.2 | top1_error | not run | 15.05 |" in md
    assert csv_path.read_text().splitlines()[1].endswith(",10.05")


def test_csv_quotes_a_setting_with_commas(tmp_path):
    import csv

    _row(tmp_path, "mini", "cifar10", "mnist1d", "learn", {"noise": 0.0, "search.lr": "0.2"}, 0, {"top1_error": 62.0})
    agg = report.aggregate(results.load_rows(tmp_path))
    csv_path, _ = report.write_table("mini", "cifar10", agg, tmp_path / "out")
    header, row = list(csv.reader(csv_path.open()))
    assert len(row) == len(header) and dict(zip(header, row))["setting"] == "noise=0.0,search.lr=0.2"
    assert dict(zip(header, row))["mean"] == "62"


def test_mini_tolerance_counts_both_runs_seed_noise():
    from benchmarks.report import MINI_ABS_TOLERANCE, mini_tolerance

    ref = {"mean": 73.2, "std": 1.8, "n": 3}
    new = {"mean": 72.2, "std": 1.1, "n": 3}
    assert mini_tolerance(ref, new) == pytest.approx(2 * math.sqrt(1.8 ** 2 / 3 + 1.1 ** 2 / 3))  # 2.44
    assert mini_tolerance(ref, {"mean": 72.2, "std": math.nan, "n": 1}) == pytest.approx(2 * 1.8 / math.sqrt(3))
    assert mini_tolerance({"mean": 1, "std": 0.1, "n": 3}, {"mean": 1, "std": 0.1, "n": 3}) == MINI_ABS_TOLERANCE


def test_table2_and_section46_figures_and_readable_labels(tmp_path):
    from benchmarks import figures

    rows = [{"table": "cifar10", "dataset": "digits", "method": m, "setting": {"noise": n}, "seed": s,
             "metrics": {"top1_error": 1.0 + n * 10 + s * 0.1 + (m == "learn")}}
            for m in ("ce", "learn") for n in (0.0, 0.1, 0.2) for s in range(3)]
    rows += [{"table": "ablation_search", "dataset": "market", "method": m, "setting": {}, "seed": s,
              "metrics": {"mAP": 60.0 + s + (m == "learn")}} for m in ("fixed", "learn") for s in range(2)]
    variant = {"table": "cifar10", "dataset": "digits", "method": "learn", "setting": {"noise": 0.0, "search.lr": "0.2"},
               "seed": 0, "metrics": {"top1_error": 60.0}}
    series = {s for _, s, _ in figures.noise_points(rows + [variant])}
    assert series == {"ce", "learn", "learn (search.lr=0.2)"}  # a variant is its own line, not pooled
    assert figures.noise_points(rows + [variant])[("digits", "learn", 0.0)] == [2.0, 2.1, 2.2]
    p = figures.noise_curves(rows, tmp_path)
    q = figures.method_bars(rows, tmp_path, "ablation_search")
    assert p.name == "cifar10_noise.png" and p.stat().st_size > 5000
    assert q.name == "ablation_search_mAP.png" and q.stat().st_size > 3000
    assert figures._setting_label({"noise": 0.2, "B": 8}) == "B=8, noise=0.2" and figures._setting_label({}) == ""
    assert figures.noise_curves([], tmp_path) is None


def test_compute_section_only_where_the_table_asks_for_it(tmp_path):
    rows = []
    for method, extras in (("ce", [{"model_epochs": 24, "train_seconds": 2.0}, {"model_epochs": 24, "train_seconds": 4.0}]),
                           ("learn", [{"model_epochs": 192, "train_seconds": 30.0}]), ("old", [{}])):
        for seed, extra in enumerate(extras):
            rows.append(results.make_row(table="loss_search", tier="mini", dataset="mnist1d", method=method, setting={},
                                         seed=seed, metrics={"top1_error": 10.0},
                                         provenance={}, extra=extra))
    md = tmp_path / "loss_search.md"
    md.write_text("# t\n")
    report.write_cost("mini", "loss_search", rows, md)
    text = md.read_text()
    assert "| mnist1d | ce | default | 2 | 24 | 3.0 |" in text
    assert "| mnist1d | learn | default | 1 | 192 | 30.0 |" in text
    assert "| mnist1d | old | default | 1 | not recorded | not recorded |" in text
    for r in rows:
        r["table"] = "cifar10"  # a table whose YAML does not ask for the section
    other = tmp_path / "other.md"
    other.write_text("# t\n")
    report.write_cost("mini", "cifar10", rows, other)
    assert other.read_text() == "# t\n"
