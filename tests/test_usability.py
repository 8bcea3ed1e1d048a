"""A newcomer's mistakes, each through the real command or call: one line naming the problem and
what to do, the documented exit code (2: the input cannot be used; 1: the computation failed),
and nothing half-written (no row, no checkpoint, no stray folder). Also what a sweep shows."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import baselines
import lfs

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]


def run(args, tmp_path, timeout=300, env=None, results=None):
    env = {**os.environ, "LFS_CACHE": str(tmp_path / "cache"), **(env or {})}
    results = results or tmp_path / "res"
    return subprocess.run(RUN + args + [f"results_dir={results}"], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env)


def assert_refused(out, tmp_path, code=2, *needles):
    """Exit code ``code``, exactly one line on stderr (containing ``needles``), no traceback, and
    nothing written: no row, no checkpoint, no ./outputs."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    res = tmp_path / "res"
    if res.exists():
        assert not [p for p in res.rglob("seed=*") if "logs" not in p.parts], list(res.rglob("*"))
    assert not (tmp_path / "outputs").exists()
    return lines[0]


# ------------------------------------------------------------------- part 3: the command line
def test_unwritable_results_dir_is_refused_before_any_job(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = run(["+table=cifar10", "tier=smoke"], tmp_path, results=blocker / "res")
    assert_refused(out, tmp_path, 2, "results_dir=", "is not writable", "choose another results_dir")
    if os.geteuid() != 0:  # root writes anywhere; a read-only folder only stops other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = run(["+table=cifar10", "tier=smoke"], tmp_path, results=ro / "res")
        assert_refused(out, tmp_path, 2, "is not writable")


@pytest.mark.parametrize("content,problem", [(b"", "empty (zero-byte)"), (b"not a jpeg" * 5, "not a readable image")])
def test_bad_image_in_a_reid_folder_is_named(tmp_path, content, problem):
    from test_full_tier import _fake_market

    root = _fake_market(tmp_path / "market")
    bad = root / "bounding_box_train" / "0003_c1s1_000000_00.jpg"
    bad.write_bytes(content)
    # the natural form: dataset.root (and the loader's keys) on a table whose default dataset differs
    out = run(["+table=market1501", "tier=full", "method=learn", f"dataset.root={root}", "workers=0",
               "dataset.loader.num_val_ids=3"], tmp_path)
    assert_refused(out, tmp_path, 2, str(bad), problem, "Market-1501")


@pytest.mark.parametrize("content,problem", [(b"", "empty (zero-byte)"), (b"garbage!" * 4, "not a readable image")])
def test_bad_image_in_a_face_folder_is_named(tmp_path, content, problem):
    from PIL import Image

    from benchmarks.data import DatasetError
    from benchmarks.data.faces import list_image_folder

    for ident in ("0000045", "0000099"):
        (tmp_path / ident).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / ident / "001.jpg")
    (tmp_path / "0000099" / "002.jpg").write_bytes(content)
    with pytest.raises(DatasetError) as e:
        list_image_folder(tmp_path)
    assert "\n" not in str(e.value) and problem in str(e.value) and "0000099/002.jpg" in str(e.value)


def test_zero_byte_cifar_batch_is_named(tmp_path):
    from test_data import _write_cifar

    from benchmarks.data import DatasetError
    from benchmarks.data.cifar10 import read_cifar10_arrays

    _write_cifar(tmp_path, per_batch=4, n_test=4)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        read_cifar10_arrays(tmp_path, verify_md5=False)
    assert "\n" not in str(e.value) and "data_batch_3" in str(e.value)


def test_a_dataloader_workers_dataset_error_comes_back_as_one_line(tmp_path):
    from torch.utils.data import DataLoader

    from benchmarks.data.images import unwrap_worker_error
    from benchmarks.data.reid import ReIDImageDataset

    bad = tmp_path / "0001_c1s1_000000_00.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")  # passes a size check, fails when decoded
    loader = DataLoader(ReIDImageDataset([(str(bad), 0, 0)]), batch_size=1, num_workers=1)
    with pytest.raises(Exception) as e:
        next(iter(loader))
    assert "\n" in str(e.value)  # torch's re-raise: several lines, a traceback inside
    err = unwrap_worker_error(e.value)
    assert err is not None and "\n" not in str(err) and str(bad) in str(err) and "not a readable image" in str(err)
    assert unwrap_worker_error(RuntimeError("something else")) is None


def test_split_smaller_than_the_batch_is_one_line(tmp_path):
    out = run(["+table=megaface", "tier=smoke", "method=learn", "subsample=3"], tmp_path)
    assert_refused(out, tmp_path, 2, "batch_size=", "training split (3 examples)", "subsample")


def test_too_many_held_out_identities_is_one_line(tmp_path):
    from test_full_tier import _fake_market

    root = _fake_market(tmp_path / "market")
    out = run(["+table=market1501", "tier=full", "method=learn", f"dataset.root={root}", "workers=0",
               "dataset.loader.num_val_ids=50"], tmp_path)
    assert_refused(out, tmp_path, 2, "dataset.loader.num_val_ids=50 is not possible")


def test_slurm_launcher_without_slurm_is_one_line(tmp_path):
    path = str(Path(sys.executable).parent)  # no sbatch / srun here
    out = run(["+table=cifar10", "tier=smoke", "hydra/launcher=slurm_cpu"], tmp_path, env={"PATH": path})
    assert_refused(out, tmp_path, 2, "SLURM launcher", "not on PATH", "drop hydra/launcher")


def test_download_without_network_is_one_line_and_leaves_no_folder(tmp_path):
    root = tmp_path / "data" / "cifar10"
    unreachable = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                   "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": ""}
    out = run(["+table=cifar10", "tier=full", "method=ce", "dataset=cifar10", f"dataset.root={root}",
               "dataset.loader.download=true", "noise=0.0", "workers=0"], tmp_path, env=unreachable)
    assert_refused(out, tmp_path, 2, "could not be downloaded", "download=false")
    assert not root.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu_is_refused(tmp_path):
    out = run(["+table=cifar10", "tier=smoke", "device=cuda"], tmp_path)
    assert_refused(out, tmp_path, 2, "device=cuda", "device=cpu")


@pytest.mark.parametrize("override", ["search.BB=4", "+search.BB=4"])
def test_unknown_keys_are_refused_with_the_valid_ones(tmp_path, override):
    out = run(["+table=cifar10", "tier=smoke", override], tmp_path, timeout=60)
    line = assert_refused(out, tmp_path, 2, "unknown key 'search.BB'", "valid keys in search:")
    assert " B," in line and "sigma" in line  # the group's keys, so the fix is obvious


@pytest.mark.parametrize("override,example", [("model=mlp", "model.name=..."), ("search=1", "search.B=...")])
def test_a_value_for_a_group_of_keys_is_refused_with_its_keys(tmp_path, override, example):
    """``model=mlp`` replaced the model's keys with a string; the job then failed deep inside with
    an AttributeError asking to be reported."""
    out = run(["+table=cifar10", "tier=smoke", override], tmp_path, timeout=60)
    key = override.split("=")[0]
    line = assert_refused(out, tmp_path, 2, f"{key} is a group of keys (", "not a value", example)
    assert "AttributeError" not in out.stderr


@pytest.mark.parametrize("override,needle", [("tier=huge", "unknown tier 'huge' (tier=...); valid: full, mini, smoke"),
                                             ("dataset=market", "unknown dataset 'market'"),
                                             ("method=lern", "unknown method 'lern'")])
def test_unknown_choices_are_one_line(tmp_path, override, needle):
    out = run(["+table=cifar10", override], tmp_path, timeout=60)
    assert_refused(out, tmp_path, 2, needle)


def test_dataset_root_in_its_natural_form_reaches_the_dataset(tmp_path):
    """Hydra alone refuses dataset.root on a table whose default dataset has no root (it checks
    overrides before the sweep picks market1501); the suite passes it on."""
    out = run(["+table=market1501", "tier=full", "method=learn", f"dataset.root={tmp_path / 'nowhere'}"], tmp_path)
    assert_refused(out, tmp_path, 2, "Market-1501 not found", str(tmp_path / "nowhere"))


# ------------------------------------------------------------------- part 4: library inputs
LOSSES = {"am_lfs_loss": lambda cos, target: lfs.am_lfs_loss(cos, target, lfs.identity_theta(6), 10.0),
          **{name: (lambda fn: lambda cos, target: fn(cos, target))(baselines.get(name).fn)
             for name in baselines.available() if baselines.get(name).fn is not None}}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_refuse_bad_inputs_with_one_line(name):
    loss = LOSSES[name]
    cos, target = torch.rand(8, 5) * 2 - 1, torch.randint(0, 5, (8,))
    loss(cos, target)  # good inputs pass
    cases = [
        (cos, target[:7], ValueError, "target has shape (7,) but cos has 8 rows"),
        (cos, torch.cat([target, target[:1]]), ValueError, "target has shape (9,) but cos has 8 rows"),
        ((cos > 0).long(), target, TypeError, "cos must be a floating-point tensor"),
        (cos, target.float(), TypeError, "target must be an int64 tensor"),
        (cos, torch.tensor([0, 1, 2, 3, 4, 0, 1, 7]), ValueError, "class index 7, outside [0, 5)"),
        (cos, torch.tensor([0, 1, 2, 3, 4, 0, 1, -1]), ValueError, "class index -1, outside [0, 5)"),
    ]
    for c, t, kind, needle in cases:
        with pytest.raises(kind) as e:
            loss(c, t)
        assert needle in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def test_am_lfs_loss_refuses_a_theta_that_is_not_4m():
    cos, target = torch.rand(8, 5) * 2 - 1, torch.randint(0, 5, (8,))
    theta = lfs.identity_theta(6)
    for bad, needle in [(theta[:23], "got (23,)"), (theta[None], "pass theta[0]"), (theta.reshape(4, 6), "got (4, 6)")]:
        with pytest.raises(ValueError) as e:
            lfs.am_lfs_loss(cos, target, bad, 10.0)
        assert "theta must have shape (4M,)" in str(e.value) and needle in str(e.value)


def test_documented_choices_half_precision_and_cos_outside_the_unit_interval():
    torch.manual_seed(0)
    cos, target = torch.rand(64, 10) * 2 - 1, torch.randint(0, 10, (64,))
    theta = lfs.identity_theta(6)
    ref = lfs.am_lfs_loss(cos, target, theta, 10.0)
    for dtype in (torch.float16, torch.bfloat16):  # computed in that precision, returned in it
        out = lfs.am_lfs_loss(cos.to(dtype), target, theta, 10.0)
        assert out.dtype == dtype and torch.isclose(out.float(), ref, rtol=2e-2)
    wide = cos * 3  # |cos| > 1 is accepted: identity theta is still cross entropy
    assert torch.allclose(lfs.am_lfs_loss(wide, target, theta, 10.0),
                          torch.nn.functional.cross_entropy(10.0 * wide, target), rtol=1e-6, atol=0)


def test_search_docstring_lists_every_option_with_its_default():
    import dataclasses

    doc = lfs.search.__doc__
    for f in dataclasses.fields(lfs.SearchConfig):
        if f.name == "epochs":
            assert "``epochs`` (required)" in doc
            continue
        shown = f'{f.name}="{f.default}"' if isinstance(f.default, str) else f"{f.name}={f.default}"
        assert f"``{shown}``" in doc, f"lfs.search's docstring does not say {shown}"


# ----------------------------------------------------------------------- part 2: what a run shows
@pytest.mark.slow
def test_a_sweep_shows_one_line_per_job_and_ends_with_its_table(tmp_path):
    out = run(["+table=dukemtmc", "tier=smoke"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    jobs = [line for line in lines if line.startswith("[")]
    assert [j.split("]")[0] for j in jobs] == ["[1/2", "[2/2"]  # done / total
    assert "ETA" in jobs[0] and "elapsed" in jobs[0] and "mAP=" in jobs[0]
    assert "[HYDRA]" not in out.stdout + out.stderr  # no preamble
    assert "epoch 1/2" not in out.stdout + out.stderr  # epoch lines only in the job's log
    assert "| dataset | method | setting | metric | reproduced | paper (full scale) |" in out.stdout
    assert "dukemtmc (smoke tier): CSV" in out.stdout and "figure3_mu_dukemtmc" in out.stdout
    assert out.stderr.strip() == ""
    assert not (tmp_path / "outputs").exists()  # Hydra's files are under the results folder
    logs = sorted((tmp_path / "res" / "logs" / "smoke" / "dukemtmc").glob("*/*/run.log"))
    assert len(logs) == 2 and all("epoch 2/2" in p.read_text() and "mAP=" in p.read_text() for p in logs)
    again = run(["+table=dukemtmc", "tier=smoke", "verbose=true", "force=true", "method=learn"], tmp_path)
    assert again.returncode == 0 and "epoch 2/2" in again.stderr


def test_count_jobs_follows_hydras_sweeper():
    from benchmarks.progress import count_jobs

    params = {"dataset": "mnist1d", "method": "ce,learn,fixed", "noise": "0.0,0.1,0.2", "seed": "0,1,2"}
    assert count_jobs(params, ["+table=cifar10"]) == 27
    assert count_jobs(params, ["+table=cifar10", "seed=0"]) == 9  # the command line replaces a swept key
    assert count_jobs(params, ["method=learn", "search.sigma=0.1,0.2"]) == 18


def test_progress_lines_count_and_estimate(tmp_path):
    import io

    from benchmarks import progress

    path = tmp_path / "progress.jsonl"
    os.environ[progress.ENV] = str(path)
    try:
        assert progress.report_job({"status": "skip", "label": "a/ce/default/seed=0"})
        assert progress.report_job({"status": "done", "label": "a/learn/default/seed=0", "metrics": {"mAP": 12.345},
                                    "seconds": 6.2})
    finally:
        del os.environ[progress.ENV]
    assert not progress.report_job({"status": "done", "label": "x"})  # outside a sweep: the caller prints
    out = io.StringIO()
    shown = progress.SweepProgress(path, total=4, stream=out)
    shown.poll()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/4] skip: a/ce/default/seed=0: its row exists")
    assert lines[1].startswith("[2/4] a/learn/default/seed=0 mAP=12.35 (6.2 s)") and "ETA" in lines[1]
    assert shown.summary().startswith("2 job(s) in") and "1 run, 1 skipped" in shown.summary()
    assert progress.duration(30) == "30 s" and progress.duration(300) == "5 min"
    assert progress.duration(4800) == "1 h 20 min"


def test_report_check_prints_one_line_per_table_and_writes_no_empty_full_tables(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "mini" / "ablation_m", results / "mini" / "ablation_m")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results", str(results), "--check"],
                         capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:2] == ["mini", "ablation_m"] and "ok" in line for line in lines)
    assert not any(line.startswith("not run") for line in lines)  # per table, not per cell
    assert lines[-1].startswith("check: ") and "--verbose" in lines[-1]
    verbose = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results", str(results),
                              "--check", "--verbose"], capture_output=True, text=True, timeout=120)
    assert sum(line.startswith("not run") for line in verbose.stdout.splitlines()) > 10
    built = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results", str(results)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert not (results / "full").exists()
    assert (results / "mini" / "ablation_m.md").exists()


def test_slurm_installed_but_not_answering_is_one_line(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in (("sbatch", "exit 0"), ("srun", "exit 0"),
                       ("sinfo", "echo 'sinfo: error: Unable to contact slurm controller' >&2; exit 1")):
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    path = f"{fake}:{Path(sys.executable).parent}"
    out = run(["+table=cifar10", "tier=smoke", "hydra/launcher=slurm_cpu"], tmp_path, env={"PATH": path})
    assert_refused(out, tmp_path, 2, "the cluster does not answer", "Unable to contact slurm controller")


@pytest.mark.parametrize("args,needle", [
    (["table=dukemtmc"], "write +table=dukemtmc (with a +), or lfs-bench run dukemtmc"),
    (["+table=market1501", "tier=mini", "dataset.root=/x"],
     "dataset.root is not a key of synthetic_reid_market, the dataset(s) of +table=market1501 at tier=mini; "
     "it is a key of cifar10, dukemtmc, market1501, megaface"),
    (["+table=dukemtmc", "tier=smoke", "model.kwargs.input_size=[10,10]"], "is not a key of synthetic_reid_duke"),
    (["+table=cifar10", "tier=smoke", "dataset.name=digits"], "choose a dataset with dataset=NAME"),
    (["+table=cifar10", "tier=smoke", "seed=-1"], "seed must be an integer >= 0"),
])
def test_more_mistakes_are_one_line(tmp_path, args, needle):
    out = run(args, tmp_path, timeout=60)
    assert_refused(out, tmp_path, 2, needle)


def test_a_loader_argument_the_loader_does_not_take_is_one_line(tmp_path):
    out = run(["+table=cifar10", "tier=smoke", "method=ce", "noise=0.0", "dataset=digits",
               "+dataset.loader.num_samples=5"], tmp_path)
    assert_refused(out, tmp_path, 2, "unexpected keyword argument 'num_samples'", "dataset.loader.*")


def test_a_quoted_tilde_in_results_dir_is_expanded(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = run(["+table=cifar10", "tier=smoke", "method=ce", "noise=0.0", "dataset=digits"], tmp_path,
              env={"HOME": str(home)}, results="~/lfs-runs")
    assert out.returncode == 0, out.stderr[-2000:]
    assert list((home / "lfs-runs" / "smoke" / "cifar10").rglob("seed=0.json"))
