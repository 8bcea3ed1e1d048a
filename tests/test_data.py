"""benchmarks.data: label noise, splits, mini-tier generators and full-tier on-disk formats.

Full-tier loaders are tested on tiny files written here in the real formats (no download).
Expectations are computed independently of the code under test (hand-written layouts, numpy
re-computations, torchvision / mnist1d / sklearn themselves).
"""
from __future__ import annotations

import json
import os
import pickle
import random
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import benchmarks.data as D
from benchmarks.data import DatasetError, holdout_split, symmetric_label_noise
from benchmarks.data.containers import ClassificationData, RetrievalData


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    return msg


# ------------------------------------------------------------------------------------ noise
def test_noise_flips_exact_count_to_other_classes():
    y = torch.arange(1000) % 10
    noisy, mask = symmetric_label_noise(y, 0.3, 10, seed=0)
    assert noisy.dtype == torch.int64 and mask.dtype == torch.bool
    assert int(mask.sum()) == 300
    assert torch.equal(mask, noisy != y)  # every chosen label really changed
    assert torch.equal(noisy[~mask], y[~mask])
    assert int(noisy.min()) >= 0 and int(noisy.max()) <= 9
    assert torch.equal(y, torch.arange(1000) % 10)  # input untouched
    # 33 * 0.2 = 6.6 -> 7 flips
    _, m = symmetric_label_noise([0, 1, 2] * 11, 0.2, 3, seed=5)
    assert int(m.sum()) == 7
    noisy0, m0 = symmetric_label_noise(np.array([1, 2, 3]), 0.0, 4, seed=0)
    assert not m0.any() and noisy0.tolist() == [1, 2, 3]


def test_noise_is_uniform_over_positions_and_other_classes():
    n, C = 20000, 10
    y = torch.arange(n) % C
    noisy, mask = symmetric_label_noise(y, 0.5, C, seed=1)
    offsets = ((noisy - y) % C)[mask]
    counts = torch.bincount(offsets, minlength=C)
    assert counts[0] == 0
    expected = mask.sum().item() / (C - 1)  # ~1111 each
    assert ((counts[1:] - expected).abs() < 0.15 * expected).all(), counts
    per_class = torch.bincount(y[mask], minlength=C).double() / (n / C)
    assert ((per_class - 0.5).abs() < 0.05).all(), per_class


def test_noise_is_deterministic_by_seed():
    y = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    a = symmetric_label_noise(y, 0.4, 10, seed=3)
    b = symmetric_label_noise(y.clone(), 0.4, 10, seed=3)
    c = symmetric_label_noise(y, 0.4, 10, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    state = torch.get_rng_state()
    symmetric_label_noise(y, 0.4, 10, seed=3)
    assert torch.equal(state, torch.get_rng_state())  # private generator only


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan"), "abc"])
def test_noise_ratio_validation(ratio):
    with pytest.raises(ValueError) as e:
        symmetric_label_noise([0, 1, 2, 3], ratio, 4, seed=0)
    assert "noise" in one_line(e.value)


def test_noise_rejects_out_of_range_labels():
    with pytest.raises(ValueError):
        symmetric_label_noise([0, 1, 5], 0.5, 3, seed=0)


# ------------------------------------------------------------------------------------ holdout
def test_holdout_split_disjoint_and_complete():
    tr, va = holdout_split(100, 0.2, seed=0)
    assert va.numel() == 20 and tr.numel() == 80
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(100))
    tr2, va2 = holdout_split(100, 13, seed=0)
    assert va2.numel() == 13
    assert torch.equal(holdout_split(100, 13, seed=0)[1], va2)
    assert not torch.equal(holdout_split(100, 13, seed=1)[1], va2)


def test_holdout_split_stratified():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    tr, va = holdout_split(100, 10, seed=2, labels=labels)
    lv = [labels[i] for i in va.tolist()]
    assert (lv.count(0), lv.count(1), lv.count(2)) == (5, 3, 2)
    assert set(tr.tolist()).isdisjoint(va.tolist()) and tr.numel() + va.numel() == 100


@pytest.mark.parametrize("size", [1.5, -1, 101, True])
def test_holdout_split_validation(size):
    with pytest.raises(ValueError):
        holdout_split(100, size, seed=0)


def test_containers_check_dtypes():
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    ClassificationData("ok", (x, y), (x, y), (x, y), 2)
    with pytest.raises(ValueError):
        ClassificationData("bad", (x.double(), y), (x, y), (x, y), 2)
    with pytest.raises(ValueError):
        ClassificationData("bad", (x, y.int()), (x, y), (x, y), 2)
    with pytest.raises(ValueError):
        ClassificationData("bad", (x, y + 5), (x, y), (x, y), 2)
    c = torch.zeros(4, dtype=torch.int64)
    RetrievalData("ok", (x, y), 1, (x, y, c), (x, y, c), (x, y, c), (x, y, c))
    with pytest.raises(ValueError):
        RetrievalData("bad", (x, y), 1, (x, y), (x, y, c), (x, y, c), (x, y, c))


# ------------------------------------------------------------------------------------ mnist1d
def test_mnist1d_shapes_split_and_global_rng_untouched():
    np.random.seed(1234)
    random.seed(99)
    np_before, py_before = np.random.get_state(), random.getstate()
    d = D.load("mnist1d", seed=3, num_samples=500)
    np_after = np.random.get_state()
    assert np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert random.getstate() == py_before
    # 500 samples -> mnist1d's 80/20 split: 400 / 100; val = 10 % of 400
    assert d.train[0].shape == (360, 1, 40) and d.val[0].shape == (40, 1, 40)
    assert d.test[0].shape == (100, 1, 40)
    for x, y in (d.train, d.val, d.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    assert d.num_classes == 10
    # the test set is mnist1d's own test split (computed by mnist1d itself)
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples, args.seed = 500, 3
    raw = make_dataset(args)
    assert np.allclose(d.test[0][:, 0].numpy(), raw["x_test"].astype(np.float32))
    assert np.array_equal(d.test[1].numpy(), raw["y_test"])
    train_rows = {tuple(np.round(r, 5)) for r in raw["x"].astype(np.float32)}
    assert all(tuple(np.round(r, 5)) in train_rows for r in d.val[0][:, 0].numpy())


def test_mnist1d_deterministic_and_noise_on_train_only():
    a = D.load("mnist1d", seed=0, num_samples=500)
    b = D.load("mnist1d", seed=0, num_samples=500, noise=0.25)
    c = D.load("mnist1d", seed=1, num_samples=500)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.val[1], b.val[1])
    assert torch.equal(a.test[1], b.test[1])
    assert not torch.equal(a.train[0], c.train[0])
    assert int((a.train[1] != b.train[1]).sum()) == 90 == b.info["flipped"]  # 0.25 * 360
    with pytest.raises(ValueError, match="noise"):
        D.load("mnist1d", num_samples=500, noise=1.0)


# ------------------------------------------------------------------------------------ digits
def test_digits_shapes_and_splits():
    from sklearn.datasets import load_digits
    ref = load_digits()
    d = D.load("digits", seed=0)
    n_te, n_va = 449, 135  # round(0.25 * 1797), round(0.1 * 1348)
    assert d.test[0].shape == (n_te, 64) and d.val[0].shape == (n_va, 64)
    assert d.train[0].shape == (1797 - n_te - n_va, 64)
    assert d.train[0].dtype == torch.float32
    x_all = torch.cat([d.train[0], d.val[0], d.test[0]])
    assert float(x_all.min()) == 0.0 and float(x_all.max()) == 1.0
    idx = torch.cat([d.info["train_indices"], d.info["val_indices"], d.info["test_indices"]])
    assert sorted(idx.tolist()) == list(range(1797))
    te = d.info["test_indices"].numpy()
    assert np.allclose(d.test[0].numpy(), ref.data[te] / 16.0)
    assert np.array_equal(d.test[1].numpy(), ref.target[te])
    noisy = D.load("digits", seed=0, noise=0.2)
    assert int((noisy.train[1] != d.train[1]).sum()) == round(0.2 * len(d.train[1]))
    assert torch.equal(noisy.val[1], d.val[1]) and torch.equal(noisy.test[1], d.test[1])


# ------------------------------------------------------------------------------------ synthetic identities
def mean_ap(qf, qp, qc, gf, gp, gc):
    """Market-1501 protocol mAP / rank-1 with cosine similarity (written for this test)."""
    sim = F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).T
    aps, r1 = [], []
    for i in range(len(qp)):
        keep = ~((gp == qp[i]) & (gc == qc[i]))
        match = (gp[keep] == qp[i])[torch.argsort(sim[i][keep], descending=True)].double()
        if match.sum() == 0:
            continue
        pos = torch.nonzero(match).reshape(-1)
        aps.append(float((torch.cumsum(match, 0)[pos] / (pos + 1)).mean()))
        r1.append(float(match[0]))
    return float(np.mean(aps)), float(np.mean(r1)), len(aps)


@pytest.fixture(scope="module")
def market():
    return D.load("synthetic_reid_market", seed=0)


def test_synthetic_identities_disjoint_and_distractors(market):
    d = market
    train_orig = set(d.info["train_pids_original"].tolist())
    val_ids = set(d.val_query[1].tolist()) | (set(d.val_gallery[1].tolist()) - {0})
    test_ids = set(d.query[1].tolist()) | (set(d.gallery[1].tolist()) - {0})
    assert len(train_orig) == 150 and len(val_ids) == 50 and len(test_ids) == 150
    assert train_orig.isdisjoint(val_ids) and train_orig.isdisjoint(test_ids)
    assert val_ids.isdisjoint(test_ids) and 0 not in train_orig
    assert sorted(set(d.train[1].tolist())) == list(range(d.num_classes))
    assert (d.query[1] > 0).all() and (d.val_query[1] > 0).all()
    assert int((d.gallery[1] == 0).sum()) == 500
    assert set(d.query[1].tolist()) == set(d.gallery[1].tolist()) - {0}


def test_synthetic_cameras_and_query_structure(market):
    d, C = market, 6
    for part in (d.val_query, d.val_gallery, d.query, d.gallery):
        assert int(part[2].min()) >= 0 and int(part[2].max()) < C
    tc = d.info["train_camid"]
    assert int(tc.min()) >= 0 and int(tc.max()) < C
    q, g = d.query, d.gallery
    pairs = list(zip(q[1].tolist(), q[2].tolist()))
    assert len(pairs) == len(set(pairs))  # one query per identity and camera
    for pid, cam in pairs[:50]:
        same = (g[1] == pid) & (g[2] == cam)
        other = (g[1] == pid) & (g[2] != cam)
        assert int(same.sum()) == 2 and int(other.sum()) >= 2  # 3 images per camera
    # every training identity is seen by >= 2 cameras
    for k in range(0, d.num_classes, 10):
        assert len(set(tc[d.train[1] == k].tolist())) >= 2


def test_synthetic_deterministic_by_seed(market):
    again = D.load("synthetic_reid_market", seed=0)
    other = D.load("synthetic_reid_market", seed=1)
    for part in ("train", "val_query", "val_gallery", "query", "gallery"):
        for a, b in zip(getattr(market, part), getattr(again, part)):
            assert torch.equal(a, b)
    assert not torch.equal(market.train[0][:100], other.train[0][:100])


def test_synthetic_learnable_but_not_trivial(market):
    d = market
    q, g = d.query, d.gallery
    raw_map, raw_r1, nq = mean_ap(q[0], q[1], q[2], g[0], g[1], g[2])
    gen = torch.Generator().manual_seed(0)
    rnd_map, _, _ = mean_ap(torch.randn(q[0].shape, generator=gen), q[1], q[2],
                            torch.randn(g[0].shape, generator=gen), g[1], g[2])
    assert nq == len(q[1])  # every query has a cross-camera match
    assert raw_map > 3 * rnd_map and raw_map < 0.3, (raw_map, rnd_map)
    # a transform fitted on the TRAINING identities only (camera means removed, within-class
    # whitening) transfers to the unseen test identities: the structure is learnable
    x, y, cam = d.train[0], d.train[1], d.info["train_camid"]
    mu = torch.stack([x[cam == c].mean(0) for c in range(6)])
    xc = x - mu[cam]
    centers = torch.zeros(d.num_classes, x.shape[1]).index_add_(0, y, xc) / torch.bincount(y)[:, None]
    w = xc - centers[y]
    L = torch.linalg.cholesky(torch.linalg.inv(w.T @ w / len(y) + 1e-3 * torch.eye(x.shape[1])))
    lin_map, _, _ = mean_ap((q[0] - mu[q[2]]) @ L, q[1], q[2], (g[0] - mu[g[2]]) @ L, g[1], g[2])
    assert lin_map > raw_map + 0.3 and lin_map < 0.95, (raw_map, lin_map)


def test_synthetic_presets_sizes():
    import time
    sizes = {}
    for name in ("synthetic_reid_market", "synthetic_reid_duke", "synthetic_face"):
        t = time.perf_counter()
        d = D.load(name, seed=2)
        elapsed = time.perf_counter() - t
        nbytes = sum(t.numel() * t.element_size() for part in
                     (d.train, d.val_query, d.val_gallery, d.query, d.gallery) for t in part)
        assert nbytes < 50e6 and elapsed < 1.0, (name, nbytes, elapsed)  # ~0.03-0.15 s measured
        sizes[name] = d
        print(f"{name}: generated in {elapsed:.3f} s, {nbytes / 1e6:.1f} MB")
    m, k, f = sizes["synthetic_reid_market"], sizes["synthetic_reid_duke"], sizes["synthetic_face"]
    assert int(k.gallery[2].max()) == 7 and int(m.gallery[2].max()) == 5
    assert int((k.gallery[1] == 0).sum()) > int((m.gallery[1] == 0).sum())
    # face: many identities, few images each, one camera nuisance, probes vs gallery+distractors
    assert f.num_classes == 1000 and f.info["params"]["num_cameras"] == 1
    assert torch.bincount(f.train[1]).max() == 5
    assert set(f.query[2].tolist()) == {0} and set(f.gallery[2].tolist()) == {1}
    gp = f.gallery[1][f.gallery[1] > 0]
    assert len(gp) == len(set(gp.tolist())) == 200  # one gallery image per test identity
    assert int((f.gallery[1] == 0).sum()) == 10000
    assert torch.bincount(f.query[1]).max() == 4
    # rank-1 identification on raw inputs: above chance (1 / 10,200), far from solved
    sim = F.normalize(f.query[0], dim=1) @ F.normalize(f.gallery[0], dim=1).T
    r1 = float((f.gallery[1][sim.argmax(1)] == f.query[1]).double().mean())
    assert 0.02 < r1 < 0.8, r1


def test_synthetic_validation():
    with pytest.raises(ValueError):
        D.load("synthetic_reid_market", images_per_id_per_camera=1)
    with pytest.raises(ValueError):
        D.load("synthetic_reid_market", num_cameras=1)


# ------------------------------------------------------------------------------------ CIFAR-10
def _write_cifar(root, per_batch=12, n_test=10, data_override=None):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    labels_all, rows_all = [], []
    k = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        rows = np.stack([(np.arange(3072) + 7 * (k + j)) % 256 for j in range(n)]).astype(np.uint8)
        labels = [(k + j) % 10 for j in range(n)]
        k += n
        if name != "test_batch":
            labels_all += labels
            rows_all.append(rows)
        entry = {"batch_label": name, "labels": labels, "data": rows,
                 "filenames": [f"img_{k + j}.png" for j in range(n)]}
        if data_override and name in data_override:
            entry["data"] = data_override[name]
        with open(base / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh, protocol=2)
    return np.concatenate(rows_all), np.array(labels_all)


MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def _expected_tensor(row):
    hwc = row.reshape(3, 32, 32).transpose(1, 2, 0).astype(np.float32) / 255.0
    return torch.from_numpy(((hwc - MEAN) / STD).transpose(2, 0, 1).copy())


def test_cifar10_splits_noise_and_transforms(tmp_path):
    rows, labels = _write_cifar(tmp_path)
    from benchmarks.data.cifar10 import load_cifar10
    d = load_cifar10(tmp_path, val_size=10, noise=0.2, seed=0, verify_md5=False)
    assert (len(d.train), len(d.val), len(d.test)) == (50, 10, 10)
    assert d.classes[0] == "airplane" and d.num_classes == 10
    assert sorted(d.train.indices.tolist() + d.val.indices.tolist()) == list(range(60))
    assert sorted(labels[d.val.indices].tolist()) == list(range(10))  # stratified: 1 per class
    # val: clean labels, no augmentation, exact normalisation
    for i in range(len(d.val)):
        img, t = d.val[i]
        j = d.val.indices[i]
        assert t == labels[j]
        assert torch.allclose(img, _expected_tensor(rows[j]), atol=1e-5)
    # train: exactly round(0.2 * 50) = 10 noisy labels, to other classes, clean kept aside
    noisy, clean = np.array(d.train.targets), labels[d.train.indices]
    assert np.array_equal(np.array(d.train.clean_targets), clean)
    assert int((noisy != clean).sum()) == 10 == d.info["flipped"]
    assert d.info["val_size"] == 10 and d.info["seed"] == 0 and d.info["noise"] == 0.2
    img, _ = d.train[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    from torchvision import transforms as T
    tfs = d.train.transform.transforms
    crop = [t for t in tfs if isinstance(t, T.RandomCrop)]
    assert len(crop) == 1 and crop[0].size == (32, 32) and crop[0].padding == 4
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in tfs)
    norm = [t for t in tfs if isinstance(t, T.Normalize)][0]
    assert np.allclose(norm.mean, MEAN) and np.allclose(norm.std, STD)
    assert not any(isinstance(t, (T.RandomCrop, T.RandomHorizontalFlip)) for t in d.val.transform.transforms)
    img_t, t_t = d.test[3]
    assert t_t == 3 and torch.allclose(img_t, _expected_tensor(
        ((np.arange(3072) + 7 * (60 + 3)) % 256).astype(np.uint8)), atol=1e-5)
    noaug = load_cifar10(tmp_path, val_size=10, seed=0, verify_md5=False, augment=False)
    j = noaug.train.indices[0]
    assert torch.allclose(noaug.train[0][0], _expected_tensor(rows[j]), atol=1e-5)
    assert noaug.train.targets == labels[noaug.train.indices].tolist()


def test_cifar10_reads_like_torchvision(tmp_path, monkeypatch):
    _write_cifar(tmp_path)
    import torchvision.datasets.cifar as tvc
    from benchmarks.data.cifar10 import read_cifar10_arrays
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)  # fake files, real parser
    ours = read_cifar10_arrays(tmp_path, verify_md5=False)
    for split, train in (("train", True), ("test", False)):
        tv = tvc.CIFAR10(str(tmp_path), train=train)
        assert np.array_equal(ours[split][0], tv.data)
        assert ours[split][1].tolist() == tv.targets
    assert ours["classes"] == tv.classes


def test_cifar10_accepts_bytes_keys(tmp_path):
    rows, labels = _write_cifar(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    for name in ["data_batch_3", "batches.meta"]:
        with open(base / name, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        with open(base / name, "wb") as fh:
            pickle.dump({k.encode(): v for k, v in entry.items()}, fh)
    from benchmarks.data.cifar10 import read_cifar10_arrays
    arrays = read_cifar10_arrays(tmp_path, verify_md5=False)
    assert np.array_equal(arrays["train"][0].transpose(0, 3, 1, 2).reshape(60, 3072), rows)
    assert arrays["train"][1].tolist() == labels.tolist() and arrays["classes"][9] == "truck"


def test_cifar10_md5_verification_rejects_fake_files(tmp_path):
    _write_cifar(tmp_path)
    with pytest.raises(DatasetError) as e:
        D.load("cifar10", root=tmp_path)
    msg = one_line(e.value)
    assert "md5" in msg and "cifar-10-batches-py" in msg


def test_cifar10_missing_and_malformed(tmp_path):
    with pytest.raises(DatasetError) as e:
        D.load("cifar10", root=tmp_path / "nowhere")
    msg = one_line(e.value)
    assert "CIFAR-10" in msg and "nowhere" in msg
    for f in ("cifar-10-batches-py", "data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert f in msg
    bad = tmp_path / "bad"
    _write_cifar(bad, data_override={"data_batch_2": np.zeros((12, 100), np.uint8)})
    with pytest.raises(DatasetError) as e:
        D.load("cifar10", root=bad, verify_md5=False)
    assert "data_batch_2" in one_line(e.value) and "3072" in str(e.value)
    with pytest.raises(ValueError, match="noise"):
        D.load("cifar10", root=bad, noise=1.0)


# ------------------------------------------------------------------------------------ re-ID
def _touch_jpgs(folder, names):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        Image.new("RGB", (8, 16), (i * 20 % 256, 0, 0)).save(folder / n)


MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c1s6_001751_02.jpg",
                           "0007_c3s3_064444_01.jpg", "0007_c3s3_064469_02.jpg", "0010_c6s4_002427_02.jpg",
                           "-1_c1s1_000401_03.jpg"],
    "query": ["0003_c1s6_015971_00.jpg", "0003_c4s6_015641_00.jpg", "0011_c2s1_001976_00.jpg"],
    "bounding_box_test": ["-1_c3s1_000001_00.jpg", "0000_c1s1_000000_01.jpg", "0003_c2s1_000001_03.jpg",
                          "0003_c4s6_015616_02.jpg", "0011_c5s1_002126_04.jpg", "0000_c6s2_000100_01.jpg"],
}


def _market(root, sub="Market-1501-v15.09.15"):
    base = root / sub if sub else root
    for folder, names in MARKET.items():
        _touch_jpgs(base / folder, names)
    (base / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")  # non-jpg files are ignored
    return base


def test_market_parse_counts_pids_camids(tmp_path):
    from benchmarks.data.reid import parse_reid
    base = _market(tmp_path)
    p = parse_reid(tmp_path, "market1501")
    # train: junk (-1) skipped, pids 2, 7, 10 -> 0, 1, 2 (sorted by file name)
    assert [(os.path.basename(a), b, c) for a, b, c in p["train"]] == [
        ("0002_c1s1_000451_03.jpg", 0, 0), ("0002_c2s1_000301_01.jpg", 0, 1),
        ("0007_c1s6_001751_02.jpg", 1, 0), ("0007_c3s3_064444_01.jpg", 1, 2),
        ("0007_c3s3_064469_02.jpg", 1, 2), ("0010_c6s4_002427_02.jpg", 2, 5)]
    assert [(b, c) for _, b, c in p["query"]] == [(3, 0), (3, 3), (11, 1)]
    assert [(b, c) for _, b, c in p["gallery"]] == [(0, 0), (0, 5), (3, 1), (3, 3), (11, 4)]
    assert all(a.startswith(str(base)) for a, _, _ in p["train"])
    # the root may also be the Market folder itself
    assert parse_reid(base, "market1501") == p


def test_reid_dataset_items_and_validation_holdout(tmp_path):
    from benchmarks.data.reid import ReIDImageDataset, load_reid
    _market(tmp_path, sub=None)
    d = load_reid(tmp_path, "market1501", num_val_ids=1, seed=0, test_transform=lambda im: im.size)
    # only pids 2 and 7 are seen by >= 2 cameras
    vp = d.info["val_pids_original"]
    assert len(vp) == 1 and vp[0] in (2, 7)
    assert d.num_classes == 2 and sorted({p for _, p, _ in d.train.items}) == [0, 1]
    assert {p for _, p, _ in d.val_query.items} == set(vp)
    vq_cams = [c for _, _, c in d.val_query.items]
    assert len(vq_cams) == len(set(vq_cams)) == (2 if vp[0] == 2 else 2)  # one query per camera
    n_val_imgs = {2: 2, 7: 3}[vp[0]]
    assert len(d.val_query) + len(d.val_gallery) == n_val_imgs
    assert len(d.train) == 6 - n_val_imgs
    img, pid, camid = d.query[2]
    assert img == (8, 16) and (pid, camid) == (11, 1)
    raw = ReIDImageDataset([(d.gallery.items[0][0], 0, 0)])[0][0]
    assert raw.mode == "RGB" and raw.size == (8, 16)
    none = load_reid(tmp_path, "market1501", num_val_ids=0)
    assert none.num_classes == 3 and len(none.val_query) == 0
    with pytest.raises(ValueError):
        load_reid(tmp_path, "market1501", num_val_ids=3)


def test_duke_parse(tmp_path):
    from benchmarks.data.reid import parse_reid
    base = tmp_path / "DukeMTMC-reID"
    _touch_jpgs(base / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c8_f0047000.jpg", "0005_c1_f0001.jpg"])
    _touch_jpgs(base / "query", ["0005_c2_f0042.jpg"])
    _touch_jpgs(base / "bounding_box_test", ["0005_c7_f0100.jpg", "0009_c8_f0101.jpg"])
    p = D.load("dukemtmc", root=tmp_path, num_val_ids=0)
    assert p.num_classes == 2 and [(b, c) for _, b, c in p.train.items] == [(0, 1), (0, 7), (1, 0)]
    assert [(b, c) for _, b, c in parse_reid(tmp_path, "dukemtmc")["gallery"]] == [(5, 6), (9, 7)]


def test_reid_errors_are_one_line(tmp_path):
    from benchmarks.data.reid import parse_reid
    with pytest.raises(DatasetError) as e:
        parse_reid(tmp_path / "none", "market1501")
    msg = one_line(e.value)
    assert "Market-1501" in msg and "bounding_box_train" in msg and "query" in msg
    assert "bounding_box_test" in msg and "0002_c1s1_000451_03.jpg" in msg

    base = _market(tmp_path / "a")
    os.rename(base / "query", base / "query_moved")
    with pytest.raises(DatasetError) as e:
        parse_reid(tmp_path / "a", "market1501")
    assert "missing query" in one_line(e.value)

    base = _market(tmp_path / "b")
    for f in (base / "query").iterdir():
        f.unlink()
    with pytest.raises(DatasetError) as e:
        parse_reid(tmp_path / "b", "market1501")
    assert "no .jpg" in one_line(e.value) and str(base / "query") in str(e.value)

    base = _market(tmp_path / "c")
    _touch_jpgs(base / "bounding_box_test", ["img_0001.jpg"])
    with pytest.raises(DatasetError) as e:
        parse_reid(tmp_path / "c", "market1501")
    assert "img_0001.jpg" in one_line(e.value)

    base = _market(tmp_path / "d")
    _touch_jpgs(base / "query", ["0004_c7s1_000001_00.jpg"])  # Market has 6 cameras
    with pytest.raises(DatasetError) as e:
        parse_reid(tmp_path / "d", "market1501")
    assert "c7" in one_line(e.value)
    with pytest.raises(ValueError):
        parse_reid(tmp_path / "d", "cuhk03")


# ------------------------------------------------------------------------------------ faces
def test_casia_webface_folder(tmp_path):
    base = tmp_path / "CASIA-WebFace"
    _touch_jpgs(base / "0000100", ["001.jpg"])
    _touch_jpgs(base / "0000045", ["001.jpg", "002.jpg"])
    _touch_jpgs(base / "0000099", ["001.png", "002.jpg", "003.jpg"])
    (base / "0000099" / "notes.txt").write_text("not an image")
    d = D.load("casia_webface", root=tmp_path)
    assert d.classes == ["0000045", "0000099", "0000100"] and d.num_classes == 3
    assert [os.path.relpath(p, base) for p, _ in d.train.samples] == [
        "0000045/001.jpg", "0000045/002.jpg", "0000099/001.png", "0000099/002.jpg",
        "0000099/003.jpg", "0000100/001.jpg"]
    assert d.train.targets == [0, 0, 1, 1, 1, 2]
    img, label = d.train[2]
    assert img.mode == "RGB" and label == 1
    v = D.load("casia_webface", root=base, num_val_ids=1, seed=0)
    assert v.num_classes == 2 and len(v.info["val_classes"]) == 1
    assert set(v.val.targets) == {0} and len(v.train) + len(v.val) == 6
    assert sorted(set(v.train.targets)) == [0, 1]


def test_casia_webface_errors(tmp_path):
    with pytest.raises(DatasetError) as e:
        D.load("casia_webface", root=tmp_path / "missing")
    msg = one_line(e.value)
    assert "CASIA-WebFace" in msg and "missing" in msg and "<identity>/<image>.jpg" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as e:
        D.load("casia_webface", root=tmp_path / "empty")
    assert "no identity folders" in one_line(e.value)
    _touch_jpgs(tmp_path / "x" / "0000001", ["001.jpg"])
    (tmp_path / "x" / "0000002").mkdir()
    with pytest.raises(DatasetError) as e:
        D.load("casia_webface", root=tmp_path / "x")
    assert "0000002" in one_line(e.value)


def _insightface_style_bin(path, feature):
    """A writer as insightface's remove_noises.py: header (d, 1, 4, 5), then d float32."""
    with open(path, "wb") as f:
        f.write(struct.pack("4i", len(feature), 1, 4, 5))
        f.write(struct.pack("%df" % len(feature), *feature))


def test_megaface_feature_bin_round_trip(tmp_path):
    from benchmarks.data.faces import read_feature_bin, read_feature_vector, write_feature_bin
    v = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    write_feature_bin(tmp_path / "a.bin", v)
    raw = (tmp_path / "a.bin").read_bytes()
    assert raw[:16] == struct.pack("<4i", 512, 1, 4, 5) and len(raw) == 16 + 512 * 4
    assert np.array_equal(np.frombuffer(raw[16:], "<f4"), v)
    m = read_feature_bin(tmp_path / "a.bin")
    assert m.shape == (512, 1) and m.dtype == np.float32 and np.array_equal(m[:, 0], v)
    _insightface_style_bin(tmp_path / "b.bin", v.tolist())
    assert np.array_equal(read_feature_vector(tmp_path / "b.bin"), v)
    w = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    write_feature_bin(tmp_path / "c.bin", w)
    assert (tmp_path / "c.bin").read_bytes()[:16] == struct.pack("<4i", 3, 4, 32, 6)
    back = read_feature_bin(tmp_path / "c.bin")
    assert back.dtype == np.float64 and np.array_equal(back, w)


def test_megaface_feature_bin_errors(tmp_path):
    from benchmarks.data.faces import read_feature_bin, write_feature_bin
    write_feature_bin(tmp_path / "ok.bin", np.ones(8, np.float32))
    raw = (tmp_path / "ok.bin").read_bytes()
    cases = {"trunc.bin": (raw[:-4], "truncated"), "head.bin": (raw[:10], "truncated header"),
             "trail.bin": (raw + b"\0", "trailing"),
             "type.bin": (struct.pack("<4i", 8, 1, 4, 7) + raw[16:], "type 7"),
             "stride.bin": (struct.pack("<4i", 8, 1, 8, 5) + raw[16:], "malformed header")}
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DatasetError) as e:
            read_feature_bin(tmp_path / name)
        msg = one_line(e.value)
        assert words in msg and name in msg and "int32 rows" in msg
    with pytest.raises(DatasetError):
        read_feature_bin(tmp_path / "absent.bin")


def test_megaface_json_lists_and_features(tmp_path):
    from benchmarks.data.faces import (feature_file, load_features, megaface_list_name,
                                       read_facescrub_list, read_megaface_list, write_feature_bin)
    tl = tmp_path / "templatelists"
    tl.mkdir()
    probes = {"id": ["Aaron_Eckhart", "Aaron_Eckhart", "Adam_Brody"],
              "path": ["Aaron_Eckhart/Aaron_Eckhart_134.jpg", "Aaron_Eckhart/Aaron_Eckhart_202.jpg",
                       "Adam_Brody/Adam_Brody_17.jpg"]}
    (tl / "facescrub_features_list.json").write_text(json.dumps(probes))
    assert megaface_list_name(10) == "megaface_features_list.json_10_1"
    distr = {"path": ["991/99137011@N00/4473578624_0.jpg", "992/99263473@N00/8013286545_1.jpg"]}
    (tl / megaface_list_name(10)).write_text(json.dumps(distr))
    paths, ids = read_facescrub_list(tl / "facescrub_features_list.json")
    assert paths == probes["path"] and ids == probes["id"]
    assert read_megaface_list(tl / "megaface_features_list.json_10_1") == distr["path"]
    assert feature_file("/f", distr["path"][0], "_r100.bin") == "/f/991/99137011@N00/4473578624_0.jpg_r100.bin"
    feats = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    for p, f in zip(distr["path"], feats):
        out = tmp_path / "feat" / (p + "_r100.bin")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_feature_bin(out, f)
    assert np.array_equal(load_features(tmp_path / "feat", distr["path"], "_r100.bin"), feats)
    with pytest.raises(DatasetError) as e:
        load_features(tmp_path / "feat", ["missing.jpg"], "_r100.bin")
    assert "missing.jpg_r100.bin" in one_line(e.value)
    bad = {"path": ["a.jpg", "b.jpg"], "id": ["x"]}
    (tl / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError) as e:
        read_facescrub_list(tl / "bad.json")
    assert "2 paths but 1 ids" in one_line(e.value)
    (tl / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError) as e:
        read_megaface_list(tl / "broken.json")
    assert "JSON" in one_line(e.value)
    (tl / "nopath.json").write_text(json.dumps({"id": ["x"]}))
    with pytest.raises(DatasetError) as e:
        read_megaface_list(tl / "nopath.json")
    assert '"path"' in one_line(e.value)


# ------------------------------------------------------------------------------------ registry
def test_registry_names_and_unknown():
    assert D.available() == ["mnist1d", "digits", "synthetic_reid_market", "synthetic_reid_duke",
                             "synthetic_face", "cifar10", "market1501", "dukemtmc", "casia_webface"]
    with pytest.raises(ValueError) as e:
        D.load("imagenet")
    msg = one_line(e.value)
    assert "imagenet" in msg and all(n in msg for n in D.available())
    d = D.load("digits", seed=1)
    assert isinstance(d, ClassificationData) and d.name == "digits"
    with pytest.raises(DatasetError):
        D.load("market1501", root="/nonexistent/market")


def test_dataset_error_is_one_line_value_error():
    e = DatasetError("Market-1501", "/x", "not found", "/x/bounding_box_train,\n/x/query")
    assert isinstance(e, ValueError)
    assert one_line(e) == "Market-1501 not found at /x: expected /x/bounding_box_train, /x/query"
    assert str(pickle.loads(pickle.dumps(e))) == str(e)
