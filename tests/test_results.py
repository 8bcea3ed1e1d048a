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
