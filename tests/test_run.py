"""benchmarks/run.py end to end: a smoke sweep through Hydra, rows, report, skip, config errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import results

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]


def run(args, tmp_path, timeout=300):
    env = {**os.environ, "LFS_CACHE": str(tmp_path / "cache")}
    return subprocess.run(RUN + args + [f"results_dir={tmp_path / 'res'}", f"hydra.sweep.dir={tmp_path / 'hydra'}"],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_smoke_table_writes_rows_report_and_skips_existing(tmp_path):
    out = run(["+table=market1501", "tier=smoke"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = sorted((tmp_path / "res" / "smoke" / "market1501").rglob("seed=*.json"))
    rows = [p for p in rows if not p.name.endswith(".history.json")]
    assert [p.parent.parent.name for p in rows] == ["learn", "sphere_reid"]
    row = json.loads(rows[0].read_text())
    assert row["table"] == "market1501" and row["tier"] == "smoke" and row["seed"] == 0
    assert set(row["metrics"]) >= {"mAP", "rank1", "rank5"}
    prov = row["provenance"]
    for key in ("command", "overrides", "git_commit", "git_dirty", "host", "cpu", "versions", "date", "wall_seconds"):
        assert key in prov
    assert "method=learn" in prov["overrides"]
    history = results.load_history(rows[0])
    assert len(history) == 2 and len(history[0]["searcher"]["mu"]) == 24  # 2 smoke epochs, 4M entries of mu
    # the run ends by saying where the table's CSV, Markdown and figures are
    assert "market1501 (smoke tier): CSV" in out.stdout
    assert (tmp_path / "res" / "smoke" / "market1501.csv").exists()
    assert (tmp_path / "res" / "smoke" / "market1501.md").exists()
    # rerunning skips the rows that exist
    before = rows[0].stat().st_mtime_ns
    again = run(["+table=market1501", "tier=smoke"], tmp_path)
    assert again.returncode == 0
    assert again.stdout.count("skip:") == 2
    assert rows[0].stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_job_another_table_computed_is_reused_and_equals_a_recomputation(tmp_path):
    """ablation_search's smoke jobs sphere_reid and learn are market1501's (same config but for
    the table's labels): they are copied, and a recomputation (reuse=false) gives the same
    numbers and history, bit for bit."""
    first = run(["+table=market1501", "tier=smoke"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    out = run(["+table=ablation_search", "tier=smoke", "method=sphere_reid,learn"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {m: tmp_path / "res" / "smoke" / "ablation_search" / "synthetic_reid_market" / m / "default" / "seed=0.json"
            for m in ("sphere_reid", "learn")}
    assert out.stdout.count("reused: ") == 2 and "2 reused" in out.stdout
    again = subprocess.run(RUN + ["+table=ablation_search", "tier=smoke", "method=sphere_reid,learn", "reuse=false",
                                  f"results_dir={tmp_path / 'recomputed'}", f"hydra.sweep.dir={tmp_path / 'h2'}"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env={**os.environ, "LFS_CACHE": str(tmp_path / "cache")})
    assert again.returncode == 0 and "reused" not in again.stdout
    for method, path in rows.items():
        copied = json.loads(path.read_text())
        source = tmp_path / "res" / "smoke" / "market1501" / "synthetic_reid_market" / method / "default" / "seed=0.json"
        assert copied["provenance"]["reused_from"]["row"] == str(source.relative_to(tmp_path / "res"))
        assert copied["table"] == "ablation_search"
        recomputed = tmp_path / "recomputed" / path.relative_to(tmp_path / "res")
        assert copied["metrics"] == json.loads(recomputed.read_text())["metrics"]
        def untimed(history):  # each epoch's seconds are the one thing a recomputation changes
            return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]
        assert untimed(results.load_history(path)) == untimed(results.load_history(recomputed))
        assert results.load_history(path) == results.load_history(source)


@pytest.mark.parametrize("override,key", [("search.B=0", "search.B"), ("search.M=0", "search.M"),
                                          ("search.sigma=0", "search.sigma"), ("noise=1.0", "noise"),
                                          ("noise=-0.1", "noise"), ("reuse=maybe", "reuse")])
def test_config_errors_fail_fast_with_one_line(tmp_path, override, key):
    out = run(["+table=cifar10", "tier=smoke", override], tmp_path, timeout=120)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0]
    assert not (tmp_path / "res").exists()  # no job ran, no half-written result


def test_figure1_table_runs_without_training(tmp_path):
    out = run(["+table=figure1", "tier=smoke"], tmp_path, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = list((tmp_path / "res" / "smoke" / "figure1").rglob("seed=0.json"))
    assert len(rows) == 15  # 5 losses x M in {3, 6, 10}
    assert (tmp_path / "res" / "smoke" / "figures" / "figure1_search_space.png").exists()


def test_unknown_table_is_one_line(tmp_path):
    out = run(["+table=cifar100"], tmp_path, timeout=60)
    assert out.returncode == 2  # a usage error
    tables = ", ".join(sorted(p.stem for p in (ROOT / "benchmarks" / "conf" / "table").glob("*.yaml")))
    assert "ablation_sigma" in tables and "cifar10" in tables and "megaface" in tables
    assert out.stderr.strip().splitlines() == [f"error: unknown table 'cifar100' (+table=...); available: {tables}"]


def test_row_setting_keeps_variants_apart():
    from benchmarks.config import resumable, row_setting

    assert row_setting({"noise": 0.1}, {"noise": "${noise}"}, ["noise=0.1", "method=learn", "seed=2", "+table=cifar10"]) == {
        "noise": 0.1}
    assert row_setting({}, {}, ["search.sigma_is=std", "results_dir=x", "hydra.sweep.dir=y"]) == {"search.sigma_is": "std"}
    # a knob interpolated from a key already records that key's override
    assert row_setting({"B": 8}, {"B": "${search.B}"}, ["search.B=8"]) == {"B": 8}
    assert row_setting({"B": 8}, {"B": "${search.B}"}, ["search.M=3", "method_args.loss.epsilon=2"]) == {
        "B": 8, "search.M": "3", "method_args.loss.epsilon": "2"}
    # where and how a run executes is not what it computes
    assert row_setting({}, {}, ["hydra/launcher=submitit_slurm", "search.executor=distributed", "checkpoint=false",
                                "dataset.root=/data/m", "workers=8", "dataset.megaface.batch_size=64"]) == {}
    # the same definition decides what a checkpoint must agree on
    cfg = {"search": {"executor": "auto", "B": 8}, "dataset": {"root": "/a", "loader": {"n": 1}}, "threads": 2, "seed": 0}
    assert resumable(cfg) == {"search": {"B": 8}, "dataset": {"loader": {"n": 1}}, "seed": 0}


def test_missing_dataset_is_one_line_error_and_no_row(tmp_path):
    out = run(["+table=market1501", "tier=full", "method=learn", "dataset=market1501",
               "dataset.root=" + str(tmp_path / "nowhere")],
              tmp_path, timeout=120)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Market-1501 not found" in errors[0] and "bounding_box_train" in errors[0]
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "res").rglob("seed=*.json")) if (tmp_path / "res").exists() else True


def test_no_arguments_and_help_print_usage_not_tracebacks(tmp_path):
    empty = subprocess.run(RUN, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert empty.returncode == 2 and "usage:" in empty.stderr and "Traceback" not in empty.stderr
    assert "cifar10" in empty.stderr and "README" in empty.stderr
    helped = subprocess.run(RUN + ["--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert helped.returncode == 0 and "usage:" in helped.stdout and "Traceback" not in helped.stderr


def test_lfs_bench_command_lists_runs_and_refuses_clearly(tmp_path, capsys):
    from benchmarks import cli

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for what in ("tables", "tiers", "methods", "datasets", "search_softmax", "synthetic_face", "[face]", "smoke"):
        assert what in out
    assert cli.main([]) == 2 and "usage:" in capsys.readouterr().err
    assert cli.main(["run", "nosuchtable"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown table 'nosuchtable'; available: ablation_b" in err
    assert cli.main(["run", "tier=smoke"]) == 2 and "needs a table first" in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err
    assert cli.main(["check", "--results", str(tmp_path / "none")]) == 2  # report.py's own one-line error
