"""MNIST-1D (Greydanus, 2020) for the mini tier: the CPU-scale analogue of the CIFAR-10 tables.

Protocol (ARCHITECTURE.md, "Tiers" -> mini; "Evaluation protocols" -> CIFAR-10): the data set is
generated offline by the ``mnist1d`` package (``make_dataset`` with ``args.num_samples`` and
``args.seed``), no download. Its own train/test split (``train_split=0.8``) gives our test set;
a clean validation split (the AM-LFS reward) is held out of its training part; symmetric label
noise, if asked for, is applied to the remaining training labels only (:mod:`.noise`).

``mnist1d.data.make_dataset`` calls ``np.random.seed`` and ``random.seed`` (global state). This
loader saves and restores both generators' state around the call, so loading data never changes
the randomness of the caller.

Shapes: ``x`` is ``(n, 1, 40)`` float32 (a channel dimension for a 1-D CNN), 10 classes.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from .containers import ClassificationData
from .noise import holdout_split, symmetric_label_noise

__all__ = ["load_mnist1d"]


def load_mnist1d(seed: int = 0, num_samples: int = 5000, val_fraction=0.1, noise: float = 0.0
                 ) -> ClassificationData:
    """Generate MNIST-1D deterministically from ``seed``.

    Args:
        seed: generator seed (``args.seed`` of mnist1d); also seeds the validation split and
            the label noise (distinct private generators, see ``info``).
        num_samples: total examples (``args.num_samples``; 80 % train, 20 % test).
        val_fraction: fraction (or int count) of mnist1d's training part held out as clean
            validation.
        noise: symmetric label-noise ratio in ``[0, 1)`` for the training labels.
    """
    if not (0.0 <= float(noise) < 1.0):
        raise ValueError(f"noise ratio must be in [0, 1), got {noise}")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    x_all = torch.from_numpy(np.asarray(raw["x"], dtype=np.float32)).unsqueeze(1)
    y_all = torch.from_numpy(np.asarray(raw["y"], dtype=np.int64))
    x_test = torch.from_numpy(np.asarray(raw["x_test"], dtype=np.float32)).unsqueeze(1)
    y_test = torch.from_numpy(np.asarray(raw["y_test"], dtype=np.int64))

    split_seed, noise_seed = seed, seed + 1
    tr, va = holdout_split(len(y_all), val_fraction, split_seed, labels=y_all)
    y_clean = y_all[tr]
    y_train, flipped = symmetric_label_noise(y_clean, noise, 10, noise_seed)
    info = {
        "source": "mnist1d.data.make_dataset (generated offline)",
        "seed": seed, "num_samples": int(num_samples), "split_seed": split_seed,
        "noise": float(noise), "noise_seed": noise_seed, "flipped": int(flipped.sum()),
        "val_size": int(va.numel()), "train_size": int(tr.numel()), "test_size": int(len(y_test)),
        "train_indices": tr, "val_indices": va,
    }
    if noise > 0:
        info["train_clean_labels"] = y_clean
        info["flipped_mask"] = flipped
    return ClassificationData(
        name="mnist1d", train=(x_all[tr].contiguous(), y_train), val=(x_all[va].contiguous(), y_all[va]),
        test=(x_test.contiguous(), y_test), num_classes=10, info=info)
