"""In-memory dataset containers shared by the mini tier and the harness.

Two shapes cover every table of the paper (ARCHITECTURE.md, "Evaluation protocols", "Tiers"):

* :class:`ClassificationData` for the CIFAR-10 tables and their mini analogues (digits, mnist1d):
  a training split (label noise, if any, is applied to it only), a CLEAN validation split held
  out from the training set (the AM-LFS reward ``r(M; D_v)``; never the test set) and the test
  split (top-1 error).
* :class:`RetrievalData` for the re-ID (Market-1501, DukeMTMC-reID) and face (MegaFace) tables
  and their synthetic analogues: training images with identity labels relabelled ``0..K-1``;
  ``val_query``/``val_gallery`` built from identities held out of training (the reward);
  ``query``/``gallery`` from the test identities, disjoint from training. As in the Market-1501
  protocol, pid ``0`` in a gallery marks a distractor (a gallery-only identity) and camera ids are
  ints; the evaluation removes gallery entries with the same pid AND camera as the query.

Tensors: ``x`` is float32, labels/pids/camids are int64. The containers check this on creation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["ClassificationData", "RetrievalData"]


def _check_xy(name: str, part: str, pair, n_extra: int = 0) -> tuple:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 + n_extra:
        raise ValueError(f"{name}.{part} must be a tuple of {2 + n_extra} tensors")
    pair = tuple(pair)
    x = pair[0]
    if not isinstance(x, Tensor) or x.dtype != torch.float32:
        raise ValueError(f"{name}.{part}: x must be a float32 tensor, got {getattr(x, 'dtype', type(x))}")
    for t in pair[1:]:
        if not isinstance(t, Tensor) or t.dtype != torch.int64 or t.dim() != 1:
            raise ValueError(f"{name}.{part}: labels/pids/camids must be 1-D int64 tensors")
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"{name}.{part}: {x.shape[0]} inputs but {t.shape[0]} labels")
    return pair


@dataclass
class ClassificationData:
    """A classification dataset held in memory.

    Attributes:
        name: dataset name (registry key or a descriptive name).
        train: ``(x, y)``; ``y`` carries the label noise, if any (clean labels in
            ``info["train_clean_labels"]`` when noise was applied).
        val: ``(x, y)`` clean validation split held out from the training set (AM-LFS reward).
        test: ``(x, y)`` test split.
        num_classes: number of classes.
        info: provenance (seed, sizes, noise ratio, flipped count, source, ...).
    """

    name: str
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for part in ("train", "val", "test"):
            pair = _check_xy(self.name, part, getattr(self, part))
            y = pair[1]
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"{self.name}.{part}: labels outside [0, {self.num_classes})")
            setattr(self, part, pair)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


@dataclass
class RetrievalData:
    """An open-set identity-retrieval dataset held in memory (re-ID / face analogues).

    Attributes:
        name: dataset name.
        train: ``(x, pid)`` with pids relabelled ``0..num_classes-1``.
        num_classes: number of training identities.
        val_query, val_gallery: ``(x, pid, camid)`` from identities held out of training, for the
            AM-LFS reward.
        query, gallery: ``(x, pid, camid)`` from the test identities (disjoint from training and
            validation). Gallery pid ``0`` = distractor (gallery-only identity).
        info: provenance and the generator's parameters.
    """

    name: str
    train: tuple[Tensor, Tensor]
    num_classes: int
    val_query: tuple[Tensor, Tensor, Tensor]
    val_gallery: tuple[Tensor, Tensor, Tensor]
    query: tuple[Tensor, Tensor, Tensor]
    gallery: tuple[Tensor, Tensor, Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.train = _check_xy(self.name, "train", self.train)
        y = self.train[1]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"{self.name}.train: pids outside [0, {self.num_classes})")
        for part in ("val_query", "val_gallery", "query", "gallery"):
            setattr(self, part, _check_xy(self.name, part, getattr(self, part), n_extra=1))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])
