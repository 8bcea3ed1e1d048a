"""L-Softmax (Liu, Wen, Yu and Yang, "Large-Margin Softmax Loss for Convolutional Neural Networks",
ICML 2016, arXiv:1612.02295), and the angular margin function psi it shares with SphereFace.

psi (Sec. 3.1 of the paper)::

    psi(theta) = (-1)^k cos(m theta) - 2k,   theta in [k pi/m, (k+1) pi/m],  k = 0..m-1

is continuous and monotonically decreasing on [0, pi], with psi(0) = 1 and psi(pi) = -(2m - 1),
and equals cos(theta) for m = 1.

Numerics: ``cos(m theta)`` is the Chebyshev polynomial ``T_m(cos theta)`` (the paper writes it as a
binomial expansion in cos theta; same polynomial), evaluated by the recurrence ``T_0 = 1, T_1 = c,
T_{n+1} = 2c T_n - T_{n-1}``: a polynomial in c, so smooth at c = +-1 where an ``arccos``
would have an infinite derivative. ``k`` is piecewise constant, so it is computed from a
detached, clamped cosine and carries no gradient. Nothing depends on tensor values through
Python control flow, so all of it runs under ``torch.func.vmap``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from lfs.heads import HeadLoss

from lfs.loss import margin_cross_entropy, validated
from .registry import register

__all__ = ["chebyshev_cos_multiple", "psi", "psi_margin_loss", "l_softmax", "LSoftmaxLoss"]


def _check_m(m) -> int:
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"the angular margin m must be an integer >= 1, got {m!r}")
    return int(m)


def chebyshev_cos_multiple(cos: Tensor, m: int) -> Tensor:
    """``cos(m theta)`` from ``cos = cos(theta)``: the Chebyshev polynomial ``T_m(cos)``."""
    m = int(m)
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    t_prev, t = torch.ones_like(cos), cos
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t = t, 2 * cos * t - t_prev
    return t


def psi(cos: Tensor, m: int = 4) -> Tensor:
    """The L-Softmax / A-Softmax margin function ``psi(theta) = (-1)^k cos(m theta) - 2k`` of
    ``cos = cos(theta)``, with ``k = floor(m theta / pi)`` clamped to ``[0, m-1]`` (no gradient).

    Differentiable w.r.t. ``cos`` everywhere (including cos = +-1); at a branch boundary
    ``theta = k pi / m`` the value is continuous and the branch on the right (larger theta) is used.
    """
    m = _check_m(m)
    with torch.no_grad():
        theta = torch.arccos(cos.detach().clamp(-1.0, 1.0))
        k = torch.floor(theta * (m / math.pi)).clamp(0, m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    return sign * chebyshev_cos_multiple(cos, m) - 2.0 * k


def psi_margin_loss(cos: Tensor, target: Tensor, scale=1.0, m: int = 4, lambda_=0.0,
                    reduction: str = "mean") -> Tensor:
    """Cross entropy with the target logit ``scale_y (lambda cos_y + psi(theta_y)) / (1 + lambda)``.

    The common body of :func:`l_softmax` and :func:`baselines.sphereface.sphereface`; they differ
    only in the head (unnormalized vs. normalized weights) and hence in ``scale``.
    """
    m = _check_m(m)

    def target_cosine(cos_y: Tensor) -> Tensor:
        return (lambda_ * cos_y + psi(cos_y, m)) / (1.0 + lambda_)

    return margin_cross_entropy(cos, target, scale, target_cosine, reduction)


@validated("l_softmax")
def l_softmax(cos: Tensor, target: Tensor, scale=1.0, m: int = 4, lambda_=0.0,
              reduction: str = "mean") -> Tensor:
    """L-Softmax (Liu et al., ICML 2016, Sec. 3.1): the target logit ``||W_y|| ||x|| cos(theta_y)``
    becomes ``||W_y|| ||x|| psi(theta_y)``, other logits unchanged.

    Args:
        cos: N x C cosines.
        target: N int64 class indices.
        scale: ``||W_j|| ||x_i||`` as an N x C tensor (what a ``normalize="none"`` head returns),
            an N x 1 tensor or a number.
        m: integer angular margin >= 1 (m = 1 is cross entropy).
        lambda_: optional blending, target logit ``scale_y (lambda cos + psi) / (1 + lambda)``
            (the annealing trick of the paper's released code and SphereFace); 0 = pure psi.
        reduction: "mean", "sum" or "none".
    """
    return psi_margin_loss(cos, target, scale, m, lambda_, reduction)


def _l_softmax_t(m: int = 4, lambda_: float = 0.0):
    """t(x) = (lambda x + psi(x)) / (1 + lambda)."""
    return (lambda x: (lambda_ * x + psi(x, m)) / (1.0 + lambda_)), None


@register("l_softmax", fn=l_softmax, transform=_l_softmax_t,
          reference="Liu, Wen, Yu, Yang. Large-Margin Softmax Loss for Convolutional Neural Networks. "
                    "ICML 2016, arXiv:1612.02295")
class LSoftmaxLoss(HeadLoss):
    """L-Softmax with its own class weights (default ``normalize="none"``: ``scale = ||W_j|| ||x_i||``)."""

    default_normalize = "none"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 30.0,
                 m: int = 4, lambda_: float = 0.0, reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        self.m, self.lambda_ = _check_m(m), float(lambda_)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return l_softmax(cos, target, scale, self.m, self.lambda_, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"m={self.m}, lambda_={self.lambda_}"
