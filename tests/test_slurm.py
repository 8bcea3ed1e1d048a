"""Integration tests on a real SLURM cluster (slurm/cluster.sh up; .ci/run starts one).

Skipped when no cluster answers. They check that a table submitted with
``hydra/launcher=slurm_cpu`` really goes through sbatch and all its rows arrive; that the
distributed executor runs as a 2-task SLURM job (srun) and matches the sequential executor; and
that a job preempted by a higher-priority partition is requeued and resumes from its checkpoint.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import results

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slurm


def _slurm_env() -> dict:
    env = dict(os.environ)
    conf = Path(os.environ.get("LFS_SLURM_DIR", "/tmp/lfs-slurm")) / "etc" / "slurm.conf"
    if "SLURM_CONF" not in env and conf.exists():
        env["SLURM_CONF"] = str(conf)
    for k in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        env.pop(k)  # a test run inside a SLURM job must not leak its job's variables
    return env


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, env=_slurm_env())
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split())


if os.environ.get("LFS_REQUIRE_SLURM") == "1" and not _cluster_up():  # .ci/run: a missing cluster is a failure
    raise RuntimeError("LFS_REQUIRE_SLURM=1 but no SLURM cluster answers (slurm/cluster.sh up; logs in /tmp/lfs-slurm/log)")
requires_cluster = pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster answers (slurm/cluster.sh up)")


def sh(*cmd, **kw):
    return subprocess.run(list(cmd), capture_output=True, text=True, env=_slurm_env(), timeout=kw.pop("timeout", 60), **kw)


def wait_job(job_id: str, timeout: float = 300) -> str:
    """Wait until the job leaves the queue; its final state from sacct."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not sh("squeue", "-h", "-j", job_id).stdout.strip():
            break
        time.sleep(1)
    else:
        raise TimeoutError(f"job {job_id} still queued after {timeout}s")
    for _ in range(30):  # sacct may lag behind squeue a little
        state = sh("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").stdout.split()
        if state and state[-1] not in ("RUNNING", "PENDING", "REQUEUED"):
            return state[-1]
        time.sleep(1)
    return state[-1] if state else "UNKNOWN"


def run_table(tmp_path, *overrides, timeout=600, background=False):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), *overrides, "hydra/launcher=slurm_cpu",
           f"results_dir={tmp_path / 'res'}", f"hydra.sweep.dir={tmp_path / 'hydra'}", "progress=false"]
    env = {**_slurm_env(), "LFS_CACHE": str(tmp_path / "cache")}
    if background:
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def rows(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("seed=*.json"))
            if not p.name.endswith(".history.json")]


@requires_cluster
def test_smoke_table_goes_through_sbatch(tmp_path):
    out = run_table(tmp_path, "+table=market1501", "tier=smoke")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    got = rows(tmp_path / "res")
    assert sorted(r["method"] for r in got) == ["learn", "sphere_reid"]
    job_ids = {r["provenance"]["slurm_job_id"] for r in got}
    assert None not in job_ids  # each row was computed inside a SLURM job
    for job in job_ids:
        assert sh("sacct", "-n", "-X", "-P", "-j", job.split("_")[0], "-o", "State").stdout.split()[0] == "COMPLETED"
    assert all(r["provenance"]["torch_threads"] == 1 for r in got)  # threads from SLURM_CPUS_PER_TASK
    assert (tmp_path / "res" / "smoke" / "market1501.csv").exists()  # the report ran after the jobs


@requires_cluster
def test_distributed_executor_as_two_task_slurm_job(tmp_path):
    from test_distributed import assert_same_search, sequential

    kw = dict(epochs=2, B=4, seed=11)
    out = tmp_path / "out.json"
    script = f"srun --kill-on-bad-exit=1 {sys.executable} {HERE / 'distributed_worker.py'} {out} '{json.dumps(kw)}'"
    sub = sh("sbatch", "--parsable", "-n", "2", "-c", "1", "-o", str(tmp_path / "slurm-%j.out"), "--wrap", script,
             cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    state = wait_job(job)
    log = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert state == "COMPLETED", log[-3000:]
    res = json.loads(out.read_text())
    assert res["world"] == 2
    assert_same_search(res, sequential(**kw))


@requires_cluster
def test_table_search_as_two_task_submitit_job(tmp_path):
    """hydra.launcher.tasks_per_node=2: both tasks run the job, the search spreads its samples
    over them (distributed executor), rank 0 alone writes the row."""
    out = run_table(tmp_path, "+table=market1501", "tier=smoke", "method=learn", "hydra.launcher.tasks_per_node=2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (row,) = rows(tmp_path / "res")
    assert row["provenance"]["world_size"] == 2 and row["extra"]["executor"] == "distributed"
    assert row["provenance"]["slurm_job_id"] is not None


@requires_cluster
def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    """A search on the low partition filling the node is preempted by a job on the high
    partition; SLURM signals it, submitit requeues it, and it resumes from its last checkpoint."""
    # 200 epochs (~0.1-0.2 s each): the search must still be running when the preemption lands, up
    # to a scheduling cycle (sched_interval=5 s) after the high job's submission. At 40 epochs it
    # sometimes ended first (1 CI run in 6: its step died of the user signal 1 s after the high
    # job's submission, on its way out, and SLURM saw a job that had ended, not one to requeue)
    overrides = ["+table=cifar10", "tier=smoke", "method=learn", "noise=0.0", "train.epochs=200", "subsample=1000",
                 "hydra.launcher.cpus_per_task=2", "hydra.launcher.signal_delay_s=30"]
    proc = run_table(tmp_path, *overrides, background=True)
    row_name = "smoke/cifar10/mnist1d/learn/noise=0.0,subsample=1000,train.epochs=200/seed=0.json"
    ckpt_file = (tmp_path / "res" / row_name).with_suffix(".ckpt")
    try:
        end = time.monotonic() + 240
        while not ckpt_file.exists():  # the search is running inside its SLURM job
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < end, "no checkpoint appeared"
            time.sleep(0.2)
        time.sleep(2.0)
        job = sh("squeue", "-h", "-p", "low", "-t", "RUNNING", "-o", "%i").stdout.split()[0]
        high = sh("sbatch", "--parsable", "-p", "high", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 3")
        assert high.returncode == 0, high.stderr
        # the low job is preempted and requeued; skip the requeue delay (StartTime now+3)
        end = time.monotonic() + 120
        while True:
            state = sh("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
            if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
                break
            if time.monotonic() >= end:  # e.g. it left the queue as a completed job
                acct = sh("sacct", "-n", "-X", "-P", "-j", job, "-o", "State,ExitCode").stdout.strip()
                raise AssertionError(f"job {job} was not requeued (squeue state {state!r}; sacct {acct!r})")
            time.sleep(0.5)
        wait_job(high.stdout.strip())
        sh("scontrol", "update", f"jobid={job}", "StartTime=now+3")
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    (row,) = [r for r in rows(tmp_path / "res") if r["method"] == "learn"]
    assert row["provenance"]["slurm_job_id"] == job
    assert row["provenance"]["slurm_restart_count"] >= 1  # it ran twice
    assert row["extra"]["resumed_at_epoch"] >= 1  # from its checkpoint, not from scratch
    # the same result as an uninterrupted run of the same job on this machine
    from omegaconf import OmegaConf

    from benchmarks import runner

    ref_metrics, ref_extra, _ = runner.run(OmegaConf.to_container(OmegaConf.create(row["provenance"]["config"])))
    assert row["metrics"] == ref_metrics
    assert row["extra"]["final_mu"] == ref_extra["final_mu"]


@requires_cluster
def test_evolution_generation_as_a_slurm_job_array(tmp_path):
    """evolve.array.enabled=true: each generation's screened candidates train as the tasks of one
    SLURM job array (submitit); the search's history and row are those of a single process."""
    def search(name, *extra):
        cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "+table=autoloss_zero", "tier=smoke",
               "dataset=digits", "method=autoloss_zero", f"results_dir={tmp_path / name}",
               f"hydra.sweep.dir={tmp_path / 'hydra' / name}", "progress=false", *extra]
        out = subprocess.run(cmd, cwd=tmp_path, env={**_slurm_env(), "LFS_CACHE": str(tmp_path / "cache")},
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        (row,) = rows(tmp_path / name)
        path = next((tmp_path / name).rglob("seed=0.json"))
        return row, results.load_history(path)

    local, local_history = search("local")
    array, array_history = search("array", "evolve.array.enabled=true")
    assert [(h["formula"], h["fitness"], h["reason"]) for h in array_history] == \
        [(h["formula"], h["fitness"], h["reason"]) for h in local_history]
    assert array["metrics"] == local["metrics"] and array["extra"]["loss"] == local["extra"]["loss"]
    tasks = [p.parent.name for p in (tmp_path / "array").rglob("*_result.pkl")]  # submitit: <job>_<task>/
    jobs = sorted({t.split("_")[0] for t in tasks})
    assert jobs, "no job array was submitted"
    assert max(sum(t.startswith(j + "_") for t in tasks) for j in jobs) >= 2  # one array held several candidates
    for job in jobs:
        assert sh("sacct", "-n", "-X", "-P", "-j", job, "-o", "State").stdout.split()[0] == "COMPLETED"
