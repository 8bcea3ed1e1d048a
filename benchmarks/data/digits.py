"""scikit-learn's 8x8 digits for the mini/smoke tiers: a CPU-scale CIFAR-10 analogue.

Protocol (ARCHITECTURE.md, "Tiers" -> mini/smoke; "Evaluation protocols" -> CIFAR-10): the 1,797
images ship with scikit-learn (``sklearn.datasets.load_digits``, no download). A stratified test
split is drawn first, then a clean validation split (the AM-LFS reward) is held out of the rest;
symmetric label noise, if asked for, is applied to the remaining training labels only.

Inputs are the 64 pixel intensities (0..16) scaled to ``[0, 1]``: ``x`` is ``(n, 64)`` float32,
10 classes.
"""
from __future__ import annotations

import numpy as np
import torch

from .containers import ClassificationData
from .noise import holdout_split, symmetric_label_noise

__all__ = ["load_digits"]


def load_digits(seed: int = 0, test_fraction=0.25, val_fraction=0.1, noise: float = 0.0
                ) -> ClassificationData:
    """Load and split the digits deterministically from ``seed``.

    Args:
        seed: seeds the test split (``seed``), the validation split (``seed + 1``) and the noise
            (``seed + 2``), each with its own private generator.
        test_fraction: fraction (or int count) of all images used as the test set.
        val_fraction: fraction (or int count) of the non-test images held out as clean validation.
        noise: symmetric label-noise ratio in ``[0, 1)`` for the training labels.
    """
    if not (0.0 <= float(noise) < 1.0):
        raise ValueError(f"noise ratio must be in [0, 1), got {noise}")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32) / 16.0)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    rest, te = holdout_split(len(y), test_fraction, seed, labels=y)
    tr_local, va_local = holdout_split(len(rest), val_fraction, seed + 1, labels=y[rest])
    tr, va = rest[tr_local], rest[va_local]
    y_clean = y[tr]
    y_train, flipped = symmetric_label_noise(y_clean, noise, 10, seed + 2)
    info = {
        "source": "sklearn.datasets.load_digits", "seed": seed,
        "noise": float(noise), "noise_seed": seed + 2, "flipped": int(flipped.sum()),
        "train_size": int(tr.numel()), "val_size": int(va.numel()), "test_size": int(te.numel()),
        "train_indices": tr, "val_indices": va, "test_indices": te,
    }
    if noise > 0:
        info["train_clean_labels"] = y_clean
        info["flipped_mask"] = flipped
    return ClassificationData(name="digits", train=(x[tr], y_train), val=(x[va], y[va]),
                              test=(x[te], y[te]), num_classes=10, info=info)
