"""Module forms: a classifier head that owns the class weights W, and losses built on it.

``f_j = ||W_j|| ||x_i|| cos(theta_j)`` (Eq. 2). The head returns ``(cos, scale)`` so that every
loss of the project (AM-LFS and the baselines) can act on ``cos`` and keep ``scale`` apart:

* ``normalize="both"``: W and x normalized, ``scale = s`` (face, re-ID: normalized head),
* ``normalize="weights"``: W normalized, ``scale = ||x_i||`` (SphereFace / A-softmax),
* ``normalize="none"``: ``scale = ||W_j|| ||x_i||`` (plain linear layer without bias, as Eq. 4
  reads for CIFAR; L-Softmax).

Losses subclass :class:`HeadLoss` and override one hook, ``loss_from_cosine`` (the style of
pytorch-metric-learning): ``forward(embeddings, labels)`` returns the loss, ``logits(embeddings)``
the scores used for prediction.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .loss import am_lfs_loss
from .search_space import identity_theta, theta_dim

NORMALIZE = ("both", "weights", "none")
_EPS = 1e-12


class CosineClassifier(nn.Module):
    """Class weights W (C x d) mapping embeddings to ``(cos, scale)`` with ``cos * scale = f``."""

    def __init__(self, in_features: int, num_classes: int, normalize: str = "both", s: float = 30.0):
        super().__init__()
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if normalize == "both" and not s > 0:
            raise ValueError(f"scale s must be > 0 for a normalized head, got {s!r}")
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.normalize, self.s = normalize, float(s)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.normalize == "both":
            cos = F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))
            return cos, torch.full((), self.s, dtype=cos.dtype, device=cos.device)
        x_norm = x.norm(dim=-1, keepdim=True)
        if self.normalize == "weights":
            cos = F.linear(x, F.normalize(self.weight, dim=-1)) / x_norm.clamp_min(_EPS)
            return cos, x_norm
        scale = x_norm * self.weight.norm(dim=-1)
        return F.linear(x, self.weight) / scale.clamp_min(_EPS), scale

    def logits(self, x: Tensor) -> Tensor:
        cos, scale = self(x)
        return cos * scale

    def extra_repr(self) -> str:
        s = f", s={self.s}" if self.normalize == "both" else ""
        return f"in_features={self.in_features}, num_classes={self.num_classes}, normalize={self.normalize!r}{s}"


class HeadLoss(nn.Module):
    """A loss that owns its class weights: ``forward(embeddings, labels) -> loss``.

    Subclasses implement :meth:`loss_from_cosine`; the head (and hence W) is shared machinery.
    """

    #: head normalization used when a subclass is built without an explicit ``normalize``.
    default_normalize = "both"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None,
                 s: float = 30.0, reduction: str = "mean"):
        super().__init__()
        self.classifier = CosineClassifier(in_features, num_classes, normalize or self.default_normalize, s)
        self.reduction = reduction

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cos, scale = self.classifier(embeddings)
        return self.loss_from_cosine(cos, labels, scale)

    def logits(self, embeddings: Tensor) -> Tensor:
        """Scores for prediction: the unmodified ``scale * cos`` (no margin at test time)."""
        return self.classifier.logits(embeddings)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class AMLFSLoss(HeadLoss):
    """The AM-LFS loss with its own class weights; set ``loss.theta = ...`` to change the loss.

    ``theta`` is a buffer (saved in ``state_dict``), initialized at the identity (cross entropy).
    """

    def __init__(self, in_features: int, num_classes: int, M: int = 6, normalize: str | None = None,
                 s: float = 30.0, reduction: str = "mean", invalid_tau: str = "ignore"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        self.M, self.invalid_tau = int(M), invalid_tau
        self.register_buffer("theta", identity_theta(M))

    def set_theta(self, theta: Tensor) -> None:
        """Copy ``theta`` (4M values) into the buffer, checking its size."""
        theta = torch.as_tensor(theta)
        if theta.shape != (theta_dim(self.M),):
            raise ValueError(f"theta must have shape ({theta_dim(self.M)},) for M={self.M}, got {tuple(theta.shape)}")
        with torch.no_grad():
            self.theta.copy_(theta)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return am_lfs_loss(cos, target, self.theta, scale, self.reduction, invalid_tau=self.invalid_tau)
