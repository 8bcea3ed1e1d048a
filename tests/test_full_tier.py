"""The full tier's code path (images on disk, DataLoaders, ResNet-20), on tiny files written in
CIFAR-10's exact on-disk format: the same runner the GPU runs use, at toy size on the CPU."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks import runner
from test_data import _write_cifar

CONF = Path(__file__).resolve().parents[1] / "benchmarks" / "conf"


def full_cfg(root, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+table=cifar10", "tier=full", "dataset=cifar10", f"dataset.root={root}",
                                           "+dataset.loader.verify_md5=false", "dataset.loader.val_size=40",
                                           "train.epochs=2", "train.batch_size=20", "search.B=2", "workers=0",
                                           "device=cpu", "threads=1", "progress=false", *overrides])
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    _write_cifar(root, per_batch=24, n_test=30)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
def test_full_tier_cifar10_search_runs_on_disk_data(cifar_root, executor):
    cfg = full_cfg(cifar_root, "method=learn", f"search.executor={executor}", "noise=0.2")
    assert cfg["model"]["name"] == "resnet20" and cfg["train"]["milestones"] == [91, 136]
    metrics, extra, history = runner.run(cfg)
    assert 0.0 <= metrics["top1_error"] <= 100.0
    assert len(history) == 2 and len(history[0]["rewards"]) == 2
    assert extra["data"]["noise"] == 0.2


def test_full_tier_executors_agree_on_disk_data(cifar_root):
    """Seeded DataLoaders give every copy the same batches under both executors."""
    results = [runner.run(full_cfg(cifar_root, "method=select", f"search.executor={ex}", "train.epochs=1"))
               for ex in ("sequential", "vectorized")]
    (m_seq, _, h_seq), (m_vec, _, h_vec) = results
    assert h_seq[0]["rewards"] == h_vec[0]["rewards"]
    assert m_seq["top1_error"] == m_vec["top1_error"]


def test_missing_cifar_is_one_line(tmp_path):
    from benchmarks.data import DatasetError

    with pytest.raises(DatasetError) as e:
        runner.run(full_cfg(tmp_path / "nowhere", "method=ce"))
    assert "\n" not in str(e.value) and "cifar-10-batches-py" in str(e.value)


def _fake_market(root):
    """A tiny Market-1501 in its exact layout and naming scheme (PID_cCAMsSEQ_FRAME_BOX.jpg)."""
    from PIL import Image

    def save(folder, name, shade):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 16), (shade % 256, (3 * shade) % 256, 40)).save(root / folder / name)

    k = 0
    for pid in range(1, 13):  # 12 training identities, each on cameras 1 and 2, two frames each
        for cam in (1, 2):
            for frame in range(2):
                save("bounding_box_train", f"{pid:04d}_c{cam}s1_{frame:06d}_0{frame}.jpg", 20 * pid + frame)
                k += 1
    save("bounding_box_train", "-1_c1s1_000401_03.jpg", 7)  # junk: skipped
    for pid in range(101, 105):  # 4 test identities: a query on camera 1, gallery images on cameras 2 and 3
        save("query", f"{pid:04d}_c1s1_000100_00.jpg", 20 * pid)
        save("bounding_box_test", f"{pid:04d}_c2s1_000200_01.jpg", 20 * pid + 1)
        save("bounding_box_test", f"{pid:04d}_c3s1_000300_01.jpg", 20 * pid + 2)
    for i in range(3):
        save("bounding_box_test", f"0000_c4s1_00050{i}_01.jpg", 5 * i)  # distractors
    return root


@pytest.mark.slow
def test_full_tier_market_search_and_reid_evaluation_on_disk_data(tmp_path):
    root = _fake_market(tmp_path / "market1501")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "+table=market1501", "tier=full", "dataset=market1501", f"dataset.root={root}",
            "dataset.loader.num_val_ids=3", "model.kwargs.input_size=[64,32]", "train.epochs=1",
            "train.batch_size=8", "search.B=2", "workers=0", "device=cpu", "threads=1", "progress=false",
            "method=learn", "rerank=true"])
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    assert plain["model"]["name"] == "sphere_reid_resnet50"
    metrics, extra, history = runner.run(plain)
    assert {"mAP", "rank1", "rank5", "mAP_rk", "rank1_rk"} <= set(metrics)
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
    assert len(history) == 1 and all(0.0 <= r <= 1.0 for r in history[0]["rewards"])  # mAP reward on val ids
    assert extra["num_classes"] == 12 - 3  # 3 identities held out for the reward
