"""Feature extraction and distance matrices for the retrieval protocols (re-ID, MegaFace).

Protocol (ARCHITECTURE.md, "Evaluation protocols"; SphereFace / CosFace / ArcFace MegaFace scripts):
the test feature of an image is ``f(x) + f(flip(x))`` (the embedding of the image plus the
embedding of its horizontal mirror, "flip-summed"), then L2-normalized. For NCHW image batches
the horizontal flip is along the last dimension, hence the default ``flip_dims=(-1,)``.

Distances follow torchreid's ``torchreid/metrics/distance.py`` (KaiyangZhou/deep-person-reid):
``cosine`` is ``1 - <a/|a|, b/|b|>``; torchreid's ``"euclidean"`` is in fact the *squared*
Euclidean distance, which is called ``"sqeuclidean"`` here; ``"euclidean"`` here is the true
(square-rooted) Euclidean distance. Both give the same ranking (so the same CMC/mAP without
re-ranking); they differ only as inputs to k-reciprocal re-ranking, see :mod:`.reid`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["extract_features", "pairwise_distance", "METRICS"]

METRICS = ("euclidean", "sqeuclidean", "cosine")


def _batch_input(batch):
    """A batch is a tensor, or a tuple/list/dict whose first item (or key ``"img"``/``"x"``) is."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("img", "x", "input", "image"):
            if key in batch:
                return batch[key]
        raise KeyError(f"cannot find the input in a batch dict with keys {list(batch)}")
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(batch)
    raise TypeError(f"unsupported batch type {type(batch).__name__}")


@torch.no_grad()
def extract_features(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable,
    flip: bool = True,
    flip_dims: Sequence[int] = (-1,),
    normalize: bool = True,
    device: torch.device | str | None = None,
    eval_mode: bool = True,
) -> torch.Tensor:
    """Embed every batch; optionally flip-sum and L2-normalize; concatenate on the CPU.

    ``feature(x) = embed_fn(x) + embed_fn(x.flip(flip_dims))`` when ``flip`` (MegaFace /
    SphereFace protocol), then ``feature / max(||feature||_2, 1e-12)`` when ``normalize``.
    Runs under ``torch.no_grad()``.

    Args:
        embed_fn: maps an input batch ``(B, ...)`` to embeddings ``(B, D)`` (a model, or a
            function returning the penultimate features). If it is an ``nn.Module`` in training
            mode and ``eval_mode`` is true, it is switched to ``eval()`` for the extraction and
            restored afterwards (BatchNorm/Dropout must be in inference mode for test features).
        batches: iterable of batches: tensors, or tuples/lists whose first element is the input
            (a ``DataLoader`` of ``(img, label, ...)``), or dicts with key ``img``/``x``.
        flip: add the embedding of the flipped input.
        flip_dims: dimensions of the *input* to flip (``(-1,)``: horizontal flip of NCHW).
        normalize: L2-normalize each row at the end.
        device: move each input batch there first (the features come back on the CPU).
        eval_mode: see ``embed_fn``.

    Returns:
        ``(N, D)`` float tensor on the CPU (N = total rows over the batches); ``(0, 0)`` if no
        batch was given.
    """
    module = embed_fn if isinstance(embed_fn, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None and eval_mode and was_training:
        module.eval()
    try:
        feats = []
        for batch in batches:
            x = _batch_input(batch)
            if device is not None:
                x = x.to(device)
            f = embed_fn(x)
            if f.dim() != 2:
                f = f.reshape(f.shape[0], -1)
            if flip:
                f = f + embed_fn(x.flip(dims=tuple(flip_dims))).reshape(f.shape)
            if normalize:
                f = F.normalize(f, p=2, dim=1, eps=1e-12)
            feats.append(f.detach().cpu())
    finally:
        if module is not None and eval_mode and was_training:
            module.train(True)
    if not feats:
        return torch.zeros(0, 0)
    return torch.cat(feats, dim=0)


def _to_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(np.asarray(x))


def pairwise_distance(a, b, metric: str = "euclidean") -> torch.Tensor:
    """Distance matrix ``D[i, j] = d(a[i], b[j])`` of shape ``(len(a), len(b))``.

    Metrics:
        ``"euclidean"``: ``||a_i - b_j||_2``.
        ``"sqeuclidean"``: ``||a_i - b_j||_2^2`` (torchreid's ``"euclidean"``).
        ``"cosine"``: ``1 - cos(a_i, b_j)`` (rows normalized first, as torchreid does).

    The Euclidean forms use the expansion ``|a|^2 + |b|^2 - 2 a.b`` (torchreid's
    ``euclidean_squared_distance``), clamped at 0 before the square root, in the input's
    floating dtype (float32 for non-float input). Accepts tensors or arrays; returns a tensor.
    """
    a = _to_tensor(a)
    b = _to_tensor(b)
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"expected 2-D features, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    a = a.to(dtype)
    b = b.to(dtype)
    if metric == "cosine":
        return 1.0 - F.normalize(a, p=2, dim=1) @ F.normalize(b, p=2, dim=1).t()
    if metric in ("euclidean", "sqeuclidean"):
        sq = (a * a).sum(dim=1, keepdim=True) + (b * b).sum(dim=1)[None, :] - 2.0 * (a @ b.t())
        sq = sq.clamp_min(0.0)
        return sq.sqrt() if metric == "euclidean" else sq
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
