"""CIFAR-10 for the full tier (the paper's CIFAR-10 table, with and without label noise).

Protocol (ARCHITECTURE.md, "Evaluation protocols" -> CIFAR-10): top-1 test error on the 10,000 test
images; label noise = symmetric flips to another class at a given ratio with a fixed seed, on
training labels only (:func:`benchmarks.data.noise.symmetric_label_noise`). AM-LFS's reward
split (Algorithm 1) is a clean validation set of ``val_size`` images held out from the 50,000
training images (stratified by class, seed ``seed``); it never sees the noise or augmentation.

On-disk format: the "python version" of CIFAR-10, ``root/cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` (Python-2 pickles of dicts with ``data``:
uint8 ``(n, 3072)``, rows = 1024 red, 1024 green, 1024 blue values of a 32x32 image, and
``labels``; read with ``encoding="latin1"`` the keys are ``str``, with ``encoding="bytes"``
they are ``b'data'``/``b'labels'``) and ``batches.meta`` (``label_names``). Bytes keys are
accepted too.

Integrity checks: ``torchvision.datasets.CIFAR10`` verifies the md5 of every file each time it
is constructed (``_check_integrity`` and ``_load_meta``), so it cannot open anything but the
genuine files. This loader therefore reads the pickles itself with the same semantics as
torchvision (``pickle.load(f, encoding="latin1")``, ``np.vstack(data).reshape(-1, 3, 32, 32)
.transpose(0, 2, 3, 1)``, labels from ``"labels"``, images returned as PIL) and checks the md5s
separately against torchvision's own table (``CIFAR10.train_list``, ``test_list``, ``meta``)
with torchvision's ``check_integrity`` when ``verify_md5=True`` (the default: a real run always
verifies). Tests pass ``verify_md5=False`` to open small files written in the same format, and
check, with torchvision's md5 check patched out, that torchvision reads them identically.
``download=True`` is passed through to torchvision (``CIFAR10(root, download=True)``).

Transforms: training images get the standard CIFAR augmentation ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip()``, then ``ToTensor()`` and ``Normalize`` with the CIFAR-10 channel means
(0.4914, 0.4822, 0.4465) and stds (0.2470, 0.2435, 0.2616); validation and test images only
``ToTensor`` + ``Normalize``.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .noise import holdout_split, symmetric_label_noise

__all__ = ["load_cifar10", "CIFAR10Data", "ArrayImageDataset", "read_cifar10_arrays",
           "cifar10_transforms", "CIFAR10_MEAN", "CIFAR10_STD", "BASE_FOLDER", "TRAIN_FILES",
           "TEST_FILES", "META_FILE"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
_NAME = "CIFAR-10"


def _layout(root: str) -> str:
    base = os.path.join(root, BASE_FOLDER)
    return (f"{base}/{{data_batch_1..data_batch_5,test_batch,batches.meta}} "
            "(the python-pickle version, cifar-10-python.tar.gz extracted)")


def cifar10_transforms(augment: bool = True):
    """``(train_transform, eval_transform)`` of the standard CIFAR-10 recipe."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    train = T.Compose(([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []) + norm)
    return train, T.Compose(list(norm))


class ArrayImageDataset(Dataset):
    """Images held as a uint8 ``(n, H, W, 3)`` array; item ``i`` is ``(transform(PIL image), label)``,
    as ``torchvision.datasets.CIFAR10.__getitem__`` returns it."""

    def __init__(self, data: np.ndarray, targets, transform: Callable | None = None,
                 indices: np.ndarray | None = None, clean_targets=None):
        self.data = data
        self.targets = [int(t) for t in targets]
        self.transform = transform
        self.indices = indices
        self.clean_targets = None if clean_targets is None else [int(t) for t in clean_targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]


@dataclass
class CIFAR10Data:
    """Datasets of one CIFAR-10 run: ``train`` (noisy labels, augmented), ``val`` (clean, held out
    from the 50k training images), ``test`` (10k), ``classes`` and provenance ``info``."""

    train: ArrayImageDataset
    val: ArrayImageDataset
    test: ArrayImageDataset
    classes: list[str]
    num_classes: int = 10
    info: dict[str, Any] = field(default_factory=dict)


def _read_batch(path: str, root: str) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DatasetError(_NAME, path, f"unreadable batch file ({type(e).__name__})", _layout(root)) from e
    if isinstance(entry, dict) and any(isinstance(k, bytes) for k in entry):
        # the official files (pickled by Python 2) load with str keys; a copy re-pickled by
        # Python 3 from bytes-keyed dicts (b'data', b'labels') is accepted as well
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if not isinstance(entry, dict) or "data" not in entry or ("labels" not in entry and "fine_labels" not in entry):
        raise DatasetError(_NAME, path, "malformed batch (no 'data'/'labels' keys)", _layout(root))
    data = np.asarray(entry["data"])
    labels = list(entry["labels"] if "labels" in entry else entry["fine_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise DatasetError(_NAME, path, f"malformed batch (data {data.dtype}{list(data.shape)}, "
                           f"{len(labels)} labels)", "uint8 data of shape (n, 3072) and n labels")
    return data, labels


def read_cifar10_arrays(root: str | os.PathLike, verify_md5: bool = True) -> dict[str, Any]:
    """Read the python-pickle CIFAR-10 under ``root`` into ``{"train": (x, y), "test": (x, y),
    "classes": [...]}`` with ``x`` uint8 ``(n, 32, 32, 3)`` (HWC, like torchvision's ``.data``)
    and ``y`` an int64 array. Raises :class:`DatasetError` if a file is missing, malformed, or
    (``verify_md5``) differs from the official file."""
    root = os.fspath(root)
    base = os.path.join(root, BASE_FOLDER)
    names = TRAIN_FILES + TEST_FILES + (META_FILE,)
    missing = [n for n in names if not os.path.isfile(os.path.join(base, n))]
    if missing:
        where = base if os.path.isdir(base) else root
        raise DatasetError(_NAME, where, f"not found (missing {', '.join(missing)})", _layout(root))
    if verify_md5:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_integrity

        table = [tuple(x) for x in CIFAR10.train_list + CIFAR10.test_list]
        table.append((CIFAR10.meta["filename"], CIFAR10.meta["md5"]))
        for fname, md5 in table:
            if not check_integrity(os.path.join(base, fname), md5):
                raise DatasetError(_NAME, os.path.join(base, fname),
                                   "corrupted (md5 mismatch with the official file)",
                                   f"md5 {md5}; pass verify_md5=False only for a deliberate copy")
    out: dict[str, Any] = {}
    for split, files in (("train", TRAIN_FILES), ("test", TEST_FILES)):
        datas, labels = [], []
        for fname in files:
            d, l = _read_batch(os.path.join(base, fname), root)
            datas.append(d)
            labels.extend(l)
        x = np.vstack(datas).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        y = np.asarray(labels, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DatasetError(_NAME, base, f"labels outside 0..9 in {split} batches", _layout(root))
        out[split] = (np.ascontiguousarray(x), y)
    meta_path = os.path.join(base, META_FILE)
    try:
        with open(meta_path, "rb") as f:
            meta = pickle.load(f, encoding="latin1")
        names = meta["label_names"] if "label_names" in meta else meta[b"label_names"]
        out["classes"] = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    except Exception as e:  # noqa: BLE001
        raise DatasetError(_NAME, meta_path, "malformed batches.meta", "a pickled dict with 'label_names'") from e
    return out


def download_cifar10(root: str) -> None:
    """torchvision's download (and md5 check) into ``root``; without a network, one line and no
    empty folder left behind (a folder that existed before is kept)."""
    import shutil

    from torchvision.datasets import CIFAR10

    existed = os.path.isdir(root)
    try:
        CIFAR10(root, train=True, download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on a bad md5
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
        reason = getattr(e, "reason", None) or e
        raise DatasetError(_NAME, root, f"could not be downloaded ({type(e).__name__}: {reason})",
                           f"network access to {CIFAR10.url}, or the extracted files copied there "
                           "with dataset.loader.download=false") from None


def load_cifar10(root: str | os.PathLike, val_size=5000, noise: float = 0.0, seed: int = 0,
                 download: bool = False, augment: bool = True, verify_md5: bool = True
                 ) -> CIFAR10Data:
    """CIFAR-10 train (noisy, augmented) / val (clean, held out) / test datasets.

    Args:
        root: directory containing ``cifar-10-batches-py``.
        val_size: images (int) or fraction of the 50k training images held out as clean
            validation (stratified by class, seed ``seed``).
        noise: symmetric label-noise ratio in ``[0, 1)`` on the remaining training labels
            (seed ``seed + 1``).
        seed: split/noise seed (recorded in ``info``).
        download: passed to ``torchvision.datasets.CIFAR10`` (downloads and verifies).
        augment: standard crop+flip augmentation on ``train``.
        verify_md5: check each file against torchvision's official md5s (see module docstring).
    """
    if not (0.0 <= float(noise) < 1.0):
        raise ValueError(f"noise ratio must be in [0, 1), got {noise}")
    root = os.fspath(root)
    if download:
        download_cifar10(root)
    arrays = read_cifar10_arrays(root, verify_md5=verify_md5)
    x, y = arrays["train"]
    tr, va = holdout_split(len(y), val_size, seed, labels=y)
    tr, va = tr.numpy(), va.numpy()
    y_clean = torch.from_numpy(y[tr])
    y_noisy, flipped = symmetric_label_noise(y_clean, noise, 10, seed + 1)
    train_tf, eval_tf = cifar10_transforms(augment)
    x_test, y_test = arrays["test"]
    info = {"root": root, "val_size": int(len(va)), "train_size": int(len(tr)),
            "test_size": int(len(y_test)), "noise": float(noise), "flipped": int(flipped.sum()),
            "seed": seed, "split_seed": seed, "noise_seed": seed + 1, "augment": augment,
            "md5_verified": bool(verify_md5)}
    return CIFAR10Data(
        train=ArrayImageDataset(x[tr], y_noisy.tolist(), train_tf, indices=tr, clean_targets=y_clean.tolist()),
        val=ArrayImageDataset(x[va], y[va], eval_tf, indices=va),
        test=ArrayImageDataset(x_test, y_test, eval_tf),
        classes=arrays["classes"], info=info)
