"""The distributed executor: 2 CPU ranks under torchrun give the same chosen indices, rewards and
mu as the sequential executor, for the same seeds; checkpoints written by rank 0 resume."""
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from lfs.search import LossSearch, SearchConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_search import make_task, params_of  # noqa: E402

HERE = Path(__file__).resolve().parent


def torchrun(tmp_path, nproc=2, **kw):
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(HERE / "distributed_worker.py"), str(out), json.dumps(kw)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


def sequential(**kw):
    # one thread, as every rank runs (OMP_NUM_THREADS=1): another thread count may round a matmul
    # differently, and a sampled loss far from CE amplifies one ulp into a flipped validation example
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = LossSearch(make_task(), SearchConfig(executor="sequential", **kw)).run()
    finally:
        torch.set_num_threads(threads)
    return {"history": [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in res.history],
            "mu": res.policy["mu"].tolist(), "params": params_of(res.state).tolist(), "reward": res.reward}


def assert_same_search(dist_out, ref):
    for d, r in zip(dist_out["history"], ref["history"], strict=True):
        assert d["chosen"] == r["chosen"]
        assert d["candidates"] == r["candidates"]
        assert d["rewards"] == pytest.approx(r["rewards"], abs=1e-12, nan_ok=True)
        assert d["searcher"]["mu_next"] == pytest.approx(r["searcher"]["mu_next"], abs=1e-12)
    assert dist_out["mu"] == pytest.approx(ref["mu"], abs=1e-12)
    assert torch.allclose(torch.tensor(dist_out["params"]), torch.tensor(ref["params"]), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kw", [
    dict(epochs=3, B=4, seed=3),  # 2 copies per rank
    dict(epochs=2, B=5, seed=4, mode="random"),  # uneven blocks (3 + 2), no broadcast
    dict(epochs=2, B=4, seed=5, broadcast_optimizer=False, local="vectorized"),
])
def test_two_ranks_match_sequential(tmp_path, kw):
    kw = dict(kw)
    out = torchrun(tmp_path, **kw)
    kw.pop("local", None)
    assert out["world"] == 2
    assert_same_search(out, sequential(**kw))


@pytest.mark.slow
def test_distributed_checkpoint_resumes(tmp_path):
    ck = str(tmp_path / "d.ckpt")
    torchrun(tmp_path, epochs=1, B=4, seed=6, checkpoint=ck)
    out = torchrun(tmp_path, epochs=3, B=4, seed=6, checkpoint=ck)
    assert out["resumed_from"] == 1
    assert_same_search(out, sequential(epochs=3, B=4, seed=6))


def test_group_of_one_equals_sequential(tmp_path):
    """Outside any launcher the executor forms a group of one (in a subprocess: the default
    process group is global state)."""
    out = tmp_path / "one.json"
    p = subprocess.run([sys.executable, str(HERE / "distributed_worker.py"), str(out), json.dumps(dict(epochs=2, B=3, seed=7))],
                       capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_NTASKS")})
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["world"] == 1
    assert_same_search(res, sequential(epochs=2, B=3, seed=7))


def test_slurm_environment_is_read(monkeypatch):
    from lfs.distributed import environment

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is parsed here
    env = environment()
    assert env == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07", "MASTER_PORT": "21234"}
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert environment() is None


def test_unknown_local_executor_is_a_clear_error():
    from lfs.distributed import DistributedExecutor

    with pytest.raises(ValueError, match="local executor must be 'sequential' or 'vectorized', got 'threads'"):
        DistributedExecutor("threads")
