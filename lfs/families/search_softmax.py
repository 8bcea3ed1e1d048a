"""Search-Softmax's loss family (Wang et al., "Loss Function Search for Face Recognition", ICML 2020).

Every margin-based softmax loss lowers the target's softmax probability. With
``p = e^{s cos_y} / (e^{s cos_y} + sum_{k != y} e^{s cos_k})`` (their Eq. 5) and the margin
loss's probability ``p_m`` (Eq. 6), they show (Eq. 7-8)::

    p_m = h(a, p) p,    h(a, p) = 1 / (a p + (1 - a)),    a = 1 - e^{s (cos_y - f(m, cos_y))} <= 0

so ``L = -log(h(a, p) p)`` with one *modulating factor* a spans the margin losses (a = 0 is
softmax cross entropy; a < 0 lowers p). The search spaces:

* ``global``: one a for every example (``bins=1``);
* ``local``: ``bins`` (10) factors a_i, one per equal interval of p over [0, 1]; an example uses
  the a_i of the interval its p falls in (the interval on the right at an inner end point, as in
  :mod:`lfs.search_space`; the bin is a function of p and carries no gradient).

Parameterization (our choice). A candidate is a vector ``v`` (``bins`` entries) in units of an
additive cosine margin: ``a = 1 - e^{s v}``, with s the head's scale of the same batch. For the
global space this is *exactly* CosFace with ``m = v`` (``cos_y - f = m`` makes Eq. 8's a constant),
so v = 0 is cross entropy, v = 0.35 is CosFace's default, and a Gaussian over v has the units of
AM-LFS's bias on the target cosine (``b^t``), which makes the two families' sigma comparable.
``in_space(..., "positive")`` is the paper's space a <= 0 (v >= 0), a box that a Gaussian searcher
samples exactly by the truncated normal's inverse CDF (:meth:`box`; rejection would need
2^bins draws per accepted one at mu = 0 in the local space, and fail once mu drifts below 0);
``"none"`` also admits v < 0 (0 < a < 1), where the loss stays defined (h p <= 1) but raises p.

Computed from Eq. 7 rearranged: with logits ``z = s cos`` and ``1 - a = e^{s_y v}``,
``-log(h p) = log(e^{z_y} + (1 - a) sum_{k != y} e^{z_k}) - z_y``, which is cross entropy with the
target logit lowered by ``s_y v``: the fused core of the margin losses
(:func:`lfs.loss.margin_cross_entropy`). It stays exact where p_y is within 1e-12 of 1 (a form in
``-log p + log1p(-a (1 - p))`` loses 5 digits there), v = 0 is exactly cross entropy, and it is
vmappable over a batch of v (the vectorized executor).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..family import ParametricFamily, register_family
from ..loss import as_scale, gather_target, margin_cross_entropy, split_output

SPACES = {"global": 1, "local": 10}


def modulating_factor(v: Tensor, scale) -> Tensor:
    """Eq. 8's ``a = 1 - e^{s v}`` for a margin-unit candidate ``v`` and head scale ``s``."""
    return -torch.expm1(v * scale)


def search_softmax_loss(cos: Tensor, target: Tensor, v: Tensor, scale=1.0, reduction: str = "mean") -> Tensor:
    """``-log(h(a, p_y) p_y)`` (Eq. 7) with ``a = 1 - e^{s v}`` (Eq. 8 in margin units).

    Args:
        cos: N x C cosines (or logits, with ``scale=1``).
        target: N class indices.
        v: one entry (global space) or one per equal bin of p_y over [0, 1] (local space).
        scale: s (normalized head), or an N x 1 / N x C tensor (see :func:`lfs.loss.as_scale`).
    """
    scale = as_scale(scale, cos)
    v = v.to(device=cos.device, dtype=cos.dtype)
    bins = v.shape[-1]
    if bins == 1:
        v_y = v.expand(cos.shape[:-1])
    else:  # the bin of the (unmodulated) p_y; a function of p, no gradient through the choice
        with torch.no_grad():
            p = gather_target(F.softmax(scale * cos, dim=-1), target)
        v_y = v.gather(-1, (p * bins).floor().clamp(0, bins - 1).long())
    return margin_cross_entropy(cos, target, scale, lambda cos_y: cos_y - v_y, reduction)


@register_family("search_softmax")
class SearchSoftmax(ParametricFamily):
    """Search-Softmax's space: ``space="global"`` (one factor) or ``"local"`` (``bins`` factors over p_y).

    The model's output is a head's ``(cos, scale)`` or plain logits (scale 1)."""

    stackable = True

    def __init__(self, space: str = "global", bins: int | None = None):
        if space not in SPACES:
            raise ValueError(f"search_softmax space must be one of {tuple(SPACES)}, got {space!r}")
        bins = SPACES[space] if bins is None else bins
        if not (isinstance(bins, int) and bins >= 1) or (space == "global" and bins != 1):
            raise ValueError(f"search_softmax bins must be an integer >= 1 (1 for the global space), got {bins!r}")
        self.space, self.bins = space, bins
        self.dim = bins

    def loss(self, output, target: Tensor, candidate: Tensor) -> Tensor:
        cos, scale = split_output(output)
        return search_softmax_loss(cos, target, candidate, scale)

    def identity(self) -> Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    def box(self):
        """The paper's space a <= 0 is the box v >= 0 (sampled exactly, see the Gaussian policy)."""
        return torch.zeros(self.dim, dtype=torch.float64), torch.full((self.dim,), math.inf, dtype=torch.float64)

    def describe(self, candidate) -> str:
        v = torch.as_tensor(candidate, dtype=torch.float64).tolist()
        if self.space == "global":
            return f"-log(p_y / (a p_y + 1 - a)), a = 1 - exp(s * {v[0]:.4g})"
        return ("-log(p_y / (a_i p_y + 1 - a_i)), a_i = 1 - exp(s * v_i), v over p_y bins = ["
                + ", ".join(f"{x:.3g}" for x in v) + "]")

    def config(self) -> dict:
        return {"space": self.space, "bins": self.bins}
