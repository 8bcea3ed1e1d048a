"""Result rows: identity -> path, atomic writes, loading, malformed files."""
import json
import multiprocessing as mp

import pytest

from benchmarks import results


def test_setting_key_and_row_path_are_stable():
    assert results.setting_key({}) == "default"
    assert results.setting_key({"noise": 0.1, "B": 8}) == "B=8,noise=0.1"
    p = results.row_path("res", "mini", "cifar10", "mnist1d", "learn", {"noise": 0.2}, 3)
    assert str(p) == "res/mini/cifar10/mnist1d/learn/noise=0.2/seed=3.json"


def test_atomic_write_leaves_no_temporary_and_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "seed=0.json"
    results.atomic_write_json(path, {"x": 1})
    results.atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["seed=0.json"]


def test_failed_write_keeps_the_old_row(tmp_path):
    path = tmp_path / "seed=0.json"
    results.atomic_write_json(path, {"x": 1})
    with pytest.raises(TypeError):
        results.atomic_write_json(path, {"x": object()})  # not JSON-serializable
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["seed=0.json"]


def _writer(args):
    root, i = args
    row = results.make_row(table="t", tier="mini", dataset="d", method="m", setting={"i": i}, seed=0,
                           metrics={"acc": float(i)}, provenance={})
    results.atomic_write_json(results.row_path(root, "mini", "t", "d", "m", {"i": i}, 0), row)


def test_concurrent_writers_lose_nothing(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), i) for i in range(16)])
    rows = results.load_rows(tmp_path)
    assert sorted(r["metrics"]["acc"] for r in rows) == [float(i) for i in range(16)]


def test_load_rows_names_a_malformed_file(tmp_path):
    bad = tmp_path / "mini" / "t" / "seed=0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="malformed result row .*seed=0.json"):
        results.load_rows(tmp_path)
    bad.write_text(json.dumps({"table": "t"}))
    with pytest.raises(ValueError, match="missing tier"):
        results.load_rows(tmp_path)


def test_provenance_has_the_required_fields():
    prov = results.provenance(["+table=cifar10"])
    for key in ("command", "overrides", "git_commit", "git_dirty", "host", "cpu", "gpu", "versions", "date"):
        assert key in prov
    assert prov["overrides"] == ["+table=cifar10"]
    assert {"python", "torch", "lfs"} <= set(prov["versions"])


def test_rows_keep_only_compact_loader_info(tmp_path):
    info = {"noise": 0.2, "name": "x", "flipped": 12, "world": {"W": [[0.1] * 64] * 64},
            "train_camid": list(range(5000)), "params": {"a": 1, "b": [1, 2]}, "classes": ["cat", "dog"]}
    assert results.compact(info) == {"noise": 0.2, "name": "x", "flipped": 12, "params": {"a": 1, "b": [1, 2]},
                                     "classes": ["cat", "dog"]}
    path = tmp_path / "seed=0.json"
    results.atomic_write_json(path, {"x": 1})
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_history_round_trip_gzipped_to_seven_significant_digits(tmp_path):
    import gzip
    import math

    from benchmarks import results

    row = tmp_path / "seed=0.json"
    assert results.load_history(row) is None
    history = [{"epoch": 0, "rewards": [0.30288598837701747, float("nan")], "candidates": [[1.0, 1 / 3, -2e-9]],
                "searcher": {"mu": [0.1234567891]}, "failed": [False, True], "chosen": 0}]
    path = results.write_history(row, history)
    assert path.name == "seed=0.history.json.gz" and gzip.decompress(path.read_bytes())  # gzip, complete
    back = results.load_history(row)
    assert back[0]["rewards"][0] == 0.302886 and math.isnan(back[0]["rewards"][1])
    assert back[0]["candidates"] == [[1.0, 0.3333333, -2e-9]] and back[0]["searcher"]["mu"] == [0.1234568]
    assert back[0]["failed"] == [False, True] and back[0]["chosen"] == 0  # only floats are rounded
    for rec, orig in zip(back[0]["candidates"][0], history[0]["candidates"][0]):
        assert math.isclose(rec, orig, rel_tol=5e-7)
    # the older plain files still read
    path.unlink()
    (tmp_path / "seed=0.history.json").write_text(json.dumps(history))
    assert results.load_history(row)[0]["rewards"][0] == 0.30288598837701747


def test_a_malformed_history_is_one_line_naming_the_file(tmp_path):
    from benchmarks import results

    row = tmp_path / "seed=0.json"
    results.write_history(row, [{"epoch": 0}])
    gz = results.history_path(row)
    gz.write_bytes(gz.read_bytes()[:10])  # truncated
    with pytest.raises(ValueError) as e:
        results.load_history(row)
    assert "malformed history" in str(e.value) and str(gz) in str(e.value) and "\n" not in str(e.value)
    # the report that draws figures from histories says it in one line, exit 2
    from benchmarks import report

    results.atomic_write_json(row, results.make_row(table="dukemtmc", tier="mini", dataset="d", method="learn",
                                                    setting={}, seed=0, metrics={"mAP": 1.0}, provenance={}))
    assert report.main(["--results", str(tmp_path)]) == 2


def test_histories_drop_sampled_candidates_by_default_and_compact_rewrites_old_ones(tmp_path):
    history = [{"epoch": e, "rewards": [0.5, 0.25], "candidates": [[1.0, 2.0], [3.0, 4.0]], "searcher": {"mu": [0.1]}}
               for e in range(3)]
    assert results.without_candidates(history) == [{"epoch": e, "rewards": [0.5, 0.25], "searcher": {"mu": [0.1]}}
                                                   for e in range(3)]
    row = tmp_path / "mini" / "t" / "d" / "m" / "default" / "seed=0.json"
    row.parent.mkdir(parents=True)
    row.write_text("{}")
    results.write_history(row, history)
    legacy = tmp_path / "mini" / "t" / "d" / "m" / "default" / "seed=1.json"
    legacy.write_text("{}")
    legacy.with_name("seed=1.history.json").write_text(json.dumps(history))
    n, before, after = results.compact_histories(tmp_path)
    assert n == 2 and after < before
    for r in (row, legacy):
        assert results.load_history(r) == results.without_candidates(history)
    assert not legacy.with_name("seed=1.history.json").exists()
    assert results.compact_histories(tmp_path)[0] == 0  # nothing left to compact


def _row_with(tmp_path, table, config, **prov):
    """A finished row of ``table`` (dataset d, method m, seed 0) whose run had ``config``."""
    provenance = {"git_commit": "abc", "git_dirty": False, "code_digest": "c0de", "versions": {"torch": "x"}, "cpu": "cpu", "gpu": None,
                  "torch_threads": 1, "world_size": 1, "command": f"run.py +table={table}", "overrides": [],
                  "date": "2026-12-01T00:00:00+00:00", "wall_seconds": 9.5, "config": config, **prov}
    path = results.row_path(tmp_path, "mini", table, "d", "m", config["setting"], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = results.make_row(table=table, tier="mini", dataset="d", method="m", setting=config["setting"], seed=0,
                           metrics={"mAP": 51.25}, provenance=provenance, extra={"model_epochs": 80})
    results.atomic_write_json(path, row)
    return path


CURRENT = {"git_commit": "abc", "git_dirty": False, "code_digest": "c0de", "versions": {"torch": "x"}, "cpu": "cpu", "gpu": None,
           "torch_threads": 1, "world_size": 1, "command": "run.py +table=ablation_b", "overrides": ["search.B=8"]}


def _config(table, setting, **search):
    return {"table": table, "setting": setting, "results_dir": "/somewhere", "progress": True, "force": False,
            "tier": {"name": "mini", "jobs": 2}, "seed": 0, "method": "m", "dataset": {"name": "d"},
            "search": {"B": 8, "M": 6, "executor": "vectorized", **search}}


def test_the_code_digest_follows_the_code_and_not_the_documents(tmp_path):
    (tmp_path / "lfs").mkdir()
    (tmp_path / "lfs" / "loss.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("docs\n")
    first = results.code_digest(tmp_path)
    results._DIGESTS.clear()
    (tmp_path / "README.md").write_text("other docs\n")
    assert results.code_digest(tmp_path) == first
    results._DIGESTS.clear()
    (tmp_path / "lfs" / "loss.py").write_text("x = 2\n")
    assert results.code_digest(tmp_path) != first
    results._DIGESTS.clear()
    assert len(results.provenance()["code_digest"]) == 64


def test_a_job_another_table_computed_is_found_whatever_its_labels(tmp_path):
    source = _row_with(tmp_path, "market1501", _config("market1501", {}))
    mine = _config("ablation_b", {"B": 8})
    mine["results_dir"], mine["tier"]["jobs"], mine["progress"] = "/elsewhere", 1, False  # labels and output only
    found = results.same_computation(tmp_path, "mini", "ablation_b", "d", "m", 0, mine, CURRENT)
    assert found == source
    # the copy: this job's labels, command and config; the computation's provenance; where it came from
    ident = dict(table="ablation_b", tier="mini", dataset="d", method="m", setting={"B": 8}, seed=0)
    row = results.reused_row(found, tmp_path, ident=ident, config=mine, current=CURRENT)
    assert row["table"] == "ablation_b" and row["setting"] == {"B": 8} and row["metrics"] == {"mAP": 51.25}
    assert row["extra"] == {"model_epochs": 80}
    prov = row["provenance"]
    assert prov["command"] == CURRENT["command"] and prov["overrides"] == ["search.B=8"] and prov["config"] is mine
    assert prov["wall_seconds"] == 9.5 and prov["date"] == "2026-12-01T00:00:00+00:00"  # the computation's
    assert prov["reused_from"]["row"] == "mini/market1501/d/m/default/seed=0.json"
    assert prov["reused_from"]["command"] == "run.py +table=market1501"
    # a table never reuses its own rows (those are skipped, or recomputed with force=true)
    assert results.same_computation(tmp_path, "mini", "market1501", "d", "m", 0, _config("market1501", {}),
                                    CURRENT) is None


@pytest.mark.parametrize("change", ["executor", "B", "code", "old_row", "torch", "cpu", "threads", "no_config", "seed"])
def test_anything_that_can_change_a_bit_prevents_reuse(tmp_path, change):
    prov = {}
    if change == "old_row":  # written before rows recorded the code digest
        prov["code_digest"] = None
    source = _row_with(tmp_path, "market1501", _config("market1501", {}), **prov)
    if change == "no_config":  # an older row that did not record its config
        row = json.loads(source.read_text())
        del row["provenance"]["config"]
        results.atomic_write_json(source, row)
    mine, current, seed = _config("ablation_b", {"B": 8}), dict(CURRENT), 0
    if change == "executor":  # executors agree to rounding, not bit for bit
        mine["search"]["executor"] = "sequential"
    elif change == "B":
        mine["search"]["B"] = 16
    elif change == "code":
        current["code_digest"] = "another"
    elif change == "torch":
        current["versions"] = {"torch": "y"}
    elif change == "cpu":
        current["cpu"] = "another cpu"
    elif change == "threads":
        current["torch_threads"] = 2
    elif change == "seed":
        seed = mine["seed"] = 1
    assert results.same_computation(tmp_path, "mini", "ablation_b", "d", "m", seed, mine, current) is None
