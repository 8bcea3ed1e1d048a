"""Classification metrics for the CIFAR-10 tables (ARCHITECTURE.md, "Evaluation protocols").

The AM-LFS CIFAR-10 rows (Li et al., ICCV 2019, Tables 1-3) report the **top-1 test error in
percent**: ``100 * (number of test images whose highest-scoring class is not the label) / N``.
These helpers compute exactly that, with no averaging over batches (so a ragged last batch cannot
bias the number): feed the scores of the whole test set, or sum the counts yourself.

Ties in the scores are broken like ``torch.argmax`` / ``torch.topk`` (the lowest class index
wins for an exact tie), which is what a PyTorch training script reports.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["accuracy", "top1_error", "num_correct"]


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(np.asarray(x))


def num_correct(scores, target, k: int = 1) -> int:
    """Number of rows whose label is among the ``k`` highest scores.

    Args:
        scores: ``(N, C)`` class scores (logits, probabilities, cosines: any monotone score), or
            ``(N,)`` integer predictions (only with ``k == 1``).
        target: ``(N,)`` integer labels in ``[0, C)``.
        k: top-k (1 for the paper's top-1).
    """
    scores = _as_tensor(scores)
    target = _as_tensor(target).long().reshape(-1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if scores.dim() == 1:
        if k != 1:
            raise ValueError("1-D predictions only support k=1")
        if scores.shape[0] != target.shape[0]:
            raise ValueError(f"{scores.shape[0]} predictions for {target.shape[0]} labels")
        return int((scores.long() == target).sum().item())
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, C) or (N,), got shape {tuple(scores.shape)}")
    n, c = scores.shape
    if n != target.shape[0]:
        raise ValueError(f"{n} score rows for {target.shape[0]} labels")
    if k > c:
        raise ValueError(f"k={k} > number of classes {c}")
    if n and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError("labels out of range [0, C)")
    if k == 1:
        pred = scores.argmax(dim=1)
        return int((pred == target).sum().item())
    topk = scores.topk(k, dim=1).indices
    return int((topk == target[:, None]).any(dim=1).sum().item())


def accuracy(scores, target, k: int = 1) -> float:
    """Top-k accuracy in percent (``100 * correct / N``).

    See :func:`num_correct` for the accepted shapes. Raises ``ValueError`` on an empty set.
    """
    target_t = _as_tensor(target).reshape(-1)
    n = int(target_t.shape[0])
    if n == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return 100.0 * num_correct(scores, target_t, k=k) / n


def top1_error(scores, target) -> float:
    """Top-1 error in percent, the CIFAR-10 metric of AM-LFS: ``100 - accuracy(scores, target)``.

    Computed from the integer count (``100 * wrong / N``), not as a float difference.
    """
    target_t = _as_tensor(target).reshape(-1)
    n = int(target_t.shape[0])
    if n == 0:
        raise ValueError("error of an empty set is undefined")
    return 100.0 * (n - num_correct(scores, target_t, k=1)) / n
