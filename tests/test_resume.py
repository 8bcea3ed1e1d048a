"""Checkpoint and resume: atomic checksummed files, exact resume of the search in every mode and
executor, the runner's resumable state, and a real subprocess killed with SIGKILL at random points."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from benchmarks import results
from lfs import checkpoint as ckpt
from lfs.search import LossSearch, SearchConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_search import make_task, params_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- checkpoint files
def test_save_load_round_trip_keeps_previous(tmp_path):
    p = tmp_path / "a.ckpt"
    ckpt.save(p, {"epoch": 1, "t": torch.arange(3)})
    ckpt.save(p, {"epoch": 2, "t": torch.arange(4)})
    assert ckpt.load(p)["epoch"] == 2
    assert ckpt.previous(p).exists() and ckpt._read(ckpt.previous(p))["epoch"] == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    ckpt.remove(p)
    assert not p.exists() and not ckpt.previous(p).exists() and ckpt.load(p) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_checkpoint_falls_back_to_previous(tmp_path, damage, caplog):
    p = tmp_path / "a.ckpt"
    ckpt.save(p, {"epoch": 1})
    ckpt.save(p, {"epoch": 2, "pad": torch.zeros(1000)})
    data = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) - 100
        p.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :])
    else:
        p.write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING"):
        assert ckpt.load(p)["epoch"] == 1  # the previous good one, never the damaged one
    assert "unusable" in caplog.text


def test_no_good_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "a.ckpt"
    ckpt.save(p, {"epoch": 1})
    ckpt.save(p, {"epoch": 2})
    for f in (p, ckpt.previous(p)):
        f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch.*delete these files"):
        ckpt.load(p)


def test_stale_temporaries_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    p = tmp_path / "seed=0.ckpt"
    ckpt.save(p, {"epoch": 3})
    stale = [tmp_path / ".seed=0.ckpt.k1l2d.tmp", tmp_path / ".seed=0.ckpt.prev.x9.tmp"]
    other = tmp_path / ".seed=1.ckpt.abc.tmp"  # another run's: left alone
    for f in stale + [other]:
        f.write_bytes(b"half a checkpoint")
    assert ckpt.load(p)["epoch"] == 3
    assert not any(f.exists() for f in stale) and other.exists()


def test_resume_after_a_damaged_checkpoint_names_the_file_it_read(tmp_path, caplog):
    path = tmp_path / "s.ckpt"
    LossSearch(make_task(), SearchConfig(epochs=2, B=2, seed=4), checkpoint=path).run()
    path.write_bytes(b"garbage")  # the newest is damaged: the previous (after epoch 1) is read
    s = LossSearch(make_task(), SearchConfig(epochs=3, B=2, seed=4), checkpoint=path)
    with caplog.at_level("INFO", logger="lfs"):
        assert s.resume()
    assert s.resumed_path == ckpt.previous(path) and s.resumed_from == 1
    # one epoch numbering everywhere: the epoch the run continues with, 1-based, out of all
    assert f"resumed at epoch 2/3 from {ckpt.previous(path)}" in caplog.text


def test_rng_state_round_trip():
    import numpy as np

    state = ckpt.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


# ------------------------------------------------------------------------- search resume
@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
@pytest.mark.parametrize("mode,broadcast_optimizer", [("learn", True), ("learn", False), ("random", True),
                                                      ("select", True)])
def test_resumed_search_equals_uninterrupted(tmp_path, executor, mode, broadcast_optimizer):
    cfg = SearchConfig(epochs=4, B=3, mode=mode, executor=executor, broadcast_optimizer=broadcast_optimizer, seed=5)
    ref = LossSearch(make_task(), cfg).run()
    p = tmp_path / "s.ckpt"
    for stop in (1, 3):  # interrupted after epoch 1, resumed, interrupted after epoch 3
        LossSearch(make_task(), SearchConfig(**{**asdict(cfg), "epochs": stop}), checkpoint=p).run()
        assert ckpt.load(p)["epoch"] == stop
    s = LossSearch(make_task(), cfg, checkpoint=p)
    res = s.run()
    assert s.resumed_from == 3
    assert [asdict(r) | {"seconds": 0} for r in res.history] == [asdict(r) | {"seconds": 0} for r in ref.history]
    assert res.reward == ref.reward and res.chosen == ref.chosen
    assert torch.equal(params_of(res.state), params_of(ref.state))
    assert torch.equal(res.policy["mu"], ref.policy["mu"])
    # the optimizer state came back too (momentum buffers of the final model)
    ref_sd, res_sd = ref.state.optimizer.state_dict()["state"], res.state.optimizer.state_dict()["state"]
    assert all(torch.equal(ref_sd[k]["momentum_buffer"], res_sd[k]["momentum_buffer"]) for k in ref_sd)


def test_resume_refuses_a_checkpoint_of_another_search(tmp_path):
    p = tmp_path / "s.ckpt"
    LossSearch(make_task(), SearchConfig(epochs=1, B=2, seed=1), checkpoint=p).run()
    with pytest.raises(ValueError, match="search.B=2, this one has search.B=3"):
        LossSearch(make_task(), SearchConfig(epochs=2, B=3, seed=1), checkpoint=p).run()


def test_user_state_is_checkpointed(tmp_path):
    p = tmp_path / "s.ckpt"
    s = LossSearch(make_task(), SearchConfig(epochs=2, B=2), checkpoint=p,
                   on_epoch=lambda r: s.user_state.setdefault("seen", []).append(r.epoch))
    s.run()
    t = LossSearch(make_task(), SearchConfig(epochs=2, B=2), checkpoint=p)
    assert t.resume() and t.user_state["seen"] == [0, 1] and t.epoch == 2


# --------------------------------------------------------------- runner-level resume
def smoke_config(tmp_path, method: str, epochs: int) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "benchmarks" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+table=cifar10", "tier=smoke", f"method={method}", f"train.epochs={epochs}",
                                           f"cache_dir={tmp_path / 'cache'}", "progress=false"])
    return OmegaConf.to_container(cfg, resolve=True)


class Crash(Exception):
    pass


def crash_in_epoch_3(monkeypatch, plain: dict, checkpoint) -> None:
    """Run the job and "crash" in the middle of epoch 3, after 2 checkpoints were written."""
    from benchmarks import runner

    orig, calls = runner.Progress.__call__, {"n": 0}

    def crashing(self, r):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash
        return orig(self, r)

    with monkeypatch.context() as m:
        m.setattr(runner.Progress, "__call__", crashing)
        with pytest.raises(Crash):
            runner.run(plain, checkpoint=checkpoint)
    assert ckpt.load(checkpoint)["epoch"] == 2


def test_runner_resume_restores_early_stopping_best(tmp_path, monkeypatch):
    from benchmarks import runner

    plain = smoke_config(tmp_path, "ce_es", 4)
    ref_metrics, ref_extra, ref_hist = runner.run(plain)
    p = tmp_path / "r.ckpt"
    crash_in_epoch_3(monkeypatch, plain, p)
    metrics, extra, hist = runner.run(plain, checkpoint=p)
    assert metrics == ref_metrics
    assert extra["stopped_epoch"] == ref_extra["stopped_epoch"] and extra["val_reward"] == ref_extra["val_reward"]
    # another config cannot resume it
    other = {**plain, "train": {**plain["train"], "lr": plain["train"]["lr"] * 2}}
    with pytest.raises(runner.ConfigError, match="train.lr="):
        runner.run(other, checkpoint=p)


# ------------------------------------------------------- kill -9 a real run at random points
@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_the_same_row(tmp_path):
    args = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "+table=cifar10", "tier=smoke", "method=learn",
            "noise=0.0", "train.epochs=40", "subsample=1000", "progress=false"]
    env = {**os.environ, "LFS_CACHE": str(tmp_path / "cache")}

    def start(results):
        return subprocess.Popen(args + [f"results_dir={tmp_path / results}", f"hydra.sweep.dir={tmp_path / 'h'}"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, text=True)

    ref = start("ref")
    assert ref.wait(timeout=300) == 0, ref.stdout.read()[-2000:]
    ref.stdout.close()
    row_name = "smoke/cifar10/mnist1d/learn/noise=0.0,subsample=1000,train.epochs=40/seed=0.json"
    reference = json.loads((tmp_path / "ref" / row_name).read_text())

    # Kill within a few epochs of a fresh checkpoint (scaled to this machine's epoch time), so
    # that 4 mid-search kills never run past the 40 epochs, however fast the machine is.
    epoch_s = sum(r["seconds"] for r in results.load_history(tmp_path / "ref" / row_name)) / 40
    rng = random.Random(1234)
    ckpt_file = (tmp_path / "run" / row_name).with_suffix(".ckpt")
    killed_at = []
    for attempt in range(5):
        p = start("run")
        if attempt == 0:  # during start-up, before any checkpoint
            time.sleep(rng.uniform(0.5, 2.0))
        else:  # at a random point of the search, once this process has written a checkpoint
            mtime = lambda: ckpt_file.stat().st_mtime_ns if ckpt_file.exists() else None  # noqa: E731
            before, deadline = mtime(), time.monotonic() + 120
            while mtime() == before and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 3.0 * epoch_s))
        assert p.poll() is None, "the run ended before it was killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        out = p.stdout.read()
        p.stdout.close()
        if killed_at and killed_at[-1] is not None:  # each killed run resumed from the one before
            assert f"resumed at epoch {killed_at[-1] + 1}/40" in out, (killed_at, out[-1500:])
        killed_at.append(ckpt.load(ckpt_file)["epoch"] if ckpt_file.exists() else None)
    final = start("run")
    out = final.communicate(timeout=300)[0]
    assert final.returncode == 0, out[-2000:]
    row = json.loads((tmp_path / "run" / row_name).read_text())
    assert row["metrics"] == reference["metrics"]
    assert row["extra"]["final_mu"] == reference["extra"]["final_mu"]
    hist = results.load_history(tmp_path / "run" / row_name)
    ref_hist = results.load_history(tmp_path / "ref" / row_name)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(hist) == strip(ref_hist)
    assert not ckpt_file.exists()  # removed once the row is written
    # the kills landed at several different epochs, and the last run resumed instead of restarting
    mid = [e for e in killed_at if e is not None and 0 < e < 40]
    assert len(set(mid)) >= 2, killed_at
    assert f"resumed at epoch {killed_at[-1] + 1}/40" in out, (killed_at, out[-1500:])


def test_l2t_dlf_run_resumes_exactly(tmp_path, monkeypatch):
    from benchmarks import runner

    plain = smoke_config(tmp_path, "l2t_dlf", 3)
    ref_metrics, _, ref_hist = runner.run(plain)
    p = tmp_path / "l2t.ckpt"
    crash_in_epoch_3(monkeypatch, plain, p)
    metrics, _, hist = runner.run(plain, checkpoint=p)
    assert metrics == ref_metrics
    assert [h["val_reward"] for h in hist] == [h["val_reward"] for h in ref_hist]


def test_resume_may_switch_executor(tmp_path):
    """States are saved per copy, so a checkpoint of one executor resumes in another (auto's
    choice may differ between runs); the result agrees within float rounding."""
    p = tmp_path / "s.ckpt"
    LossSearch(make_task(), SearchConfig(epochs=2, B=3, executor="sequential", seed=2), checkpoint=p).run()
    res = LossSearch(make_task(), SearchConfig(epochs=4, B=3, executor="vectorized", seed=2), checkpoint=p).run()
    ref = LossSearch(make_task(), SearchConfig(epochs=4, B=3, executor="sequential", seed=2)).run()
    assert [r.chosen for r in res.history] == [r.chosen for r in ref.history]
    assert torch.allclose(params_of(res.state), params_of(ref.state), atol=1e-5)


def test_auto_executor_by_name_in_a_search():
    s = LossSearch(make_task(), SearchConfig(epochs=1, B=3, executor="auto", seed=2))
    s.run()
    assert s.executor.chosen in ("sequential", "vectorized")
