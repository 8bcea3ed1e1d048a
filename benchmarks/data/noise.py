"""Label noise and hold-out splits, seeded and exact.

Implements two pieces of the protocols in ARCHITECTURE.md ("Evaluation protocols"):

* CIFAR-10 label noise: "symmetric flips to any other class at a given ratio, with a fixed seed,
  training labels only". :func:`symmetric_label_noise` flips EXACTLY ``round(ratio * n)`` labels
  (Python's ``round``, half to even), chosen uniformly at random without replacement, each to a
  class drawn uniformly from the ``num_classes - 1`` OTHER classes. (Some papers instead flip each
  label with probability ``ratio`` and let it land on any class, including the true one; that
  gives fewer effective flips. We use the exact-count, other-class variant and say so.)
* AM-LFS's reward split (Algorithm 1): a validation split held out from the training set, never
  the test set. :func:`holdout_split` returns disjoint train/validation indices, optionally
  stratified by label.

Both use a private ``torch.Generator`` seeded with ``seed``: they never touch the global RNGs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["symmetric_label_noise", "holdout_split", "resolve_size"]


def _as_long_tensor(labels) -> Tensor:
    if isinstance(labels, Tensor):
        t = labels.detach().cpu()
    else:
        t = torch.as_tensor(np.asarray(labels))
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise ValueError(f"labels must be integers, got dtype {t.dtype}")
    return t.to(torch.int64).reshape(-1).clone()


def symmetric_label_noise(labels, ratio: float, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Flip exactly ``round(ratio * n)`` labels to a uniformly random other class.

    Args:
        labels: 1-D integer labels in ``[0, num_classes)`` (tensor, array or list).
        ratio: noise ratio in ``[0, 1)``.
        num_classes: number of classes (>= 2 when anything is flipped).
        seed: seed of the private generator (same inputs and seed -> same output).

    Returns:
        ``(noisy_labels, flipped_mask)``: int64 labels and a bool mask of the flipped positions;
        ``noisy_labels[flipped_mask] != labels[flipped_mask]`` everywhere and the rest is unchanged.

    Raises:
        ValueError: ratio outside ``[0, 1)`` (message names ``noise``), labels out of range.
    """
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"noise ratio must be a number in [0, 1), got {ratio!r}") from None
    if not (0.0 <= ratio < 1.0):
        raise ValueError(f"noise ratio must be in [0, 1), got {ratio}")
    y = _as_long_tensor(labels)
    n = y.numel()
    num_classes = int(num_classes)
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) to add noise")
    k = int(round(ratio * n))
    mask = torch.zeros(n, dtype=torch.bool)
    if k == 0:
        return y, mask
    if num_classes < 2:
        raise ValueError("noise needs at least 2 classes to flip a label to another class")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:k]
    offset = torch.randint(1, num_classes, (k,), generator=g)  # uniform over the other classes
    noisy = y.clone()
    noisy[idx] = (y[idx] + offset) % num_classes
    mask[idx] = True
    return noisy, mask


def resolve_size(size, n: int, what: str = "val_size") -> int:
    """An int count, or a fraction in ``[0, 1)`` of ``n`` (rounded), validated against ``n``."""
    if isinstance(size, bool):
        raise ValueError(f"{what} must be an int count or a fraction, got {size!r}")
    if isinstance(size, (int, np.integer)):
        k = int(size)
    elif isinstance(size, (float, np.floating)):
        if not (0.0 <= float(size) < 1.0):
            raise ValueError(f"{what} as a fraction must be in [0, 1), got {size}")
        k = int(round(float(size) * n))
    else:
        raise ValueError(f"{what} must be an int count or a fraction, got {size!r}")
    if not (0 <= k <= n):
        raise ValueError(f"{what}={size} does not fit {n} examples")
    return k


def holdout_split(n: int, val_size, seed: int, labels: Sequence[int] | Tensor | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into disjoint ``(train_idx, val_idx)`` (sorted int64 tensors).

    Args:
        n: number of examples.
        val_size: int count or fraction in ``[0, 1)`` of ``n``.
        seed: seed of the private generator.
        labels: if given, the split is stratified: class ``c`` gets ``val_size * n_c / n``
            validation examples, rounded by largest remainder so the total is exactly
            ``val_size``.
    """
    n = int(n)
    k = resolve_size(val_size, n)
    g = torch.Generator().manual_seed(int(seed))
    if labels is None:
        val = torch.randperm(n, generator=g)[:k]
    else:
        y = _as_long_tensor(labels)
        if y.numel() != n:
            raise ValueError(f"labels has {y.numel()} entries, expected {n}")
        classes, counts = torch.unique(y, return_counts=True)
        quota = counts.double() * k / max(n, 1)
        base = quota.floor().long()
        short = k - int(base.sum())
        if short > 0:
            rem = quota - base.double()
            # largest remainder first; ties broken by class order (stable sort)
            order = torch.sort(-rem, stable=True).indices
            base[order[:short]] += 1
        parts = []
        for c, q in zip(classes.tolist(), base.tolist()):
            members = torch.nonzero(y == c, as_tuple=False).reshape(-1)
            perm = torch.randperm(members.numel(), generator=g)
            parts.append(members[perm[:q]])
        val = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[val] = True
    return torch.nonzero(~is_val).reshape(-1), torch.nonzero(is_val).reshape(-1)
