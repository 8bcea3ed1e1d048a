"""SphereFace / A-Softmax (Liu, Wen, Yu, Li, Raj and Song, "SphereFace: Deep Hypersphere Embedding
for Face Recognition", CVPR 2017, arXiv:1704.08063).

The A-Softmax loss normalizes the class weights (``||W_j|| = 1``) and keeps the feature norm:
logits ``||x_i|| cos(theta_j)``, with the target logit ``||x_i|| psi(theta_y)`` and the psi of
L-Softmax (:func:`baselines.l_softmax.psi`, shared, m = 4). Training uses the annealed blend of
the authors' released Caffe code (``margin_inner_product`` layer)::

    f_y = ||x|| (lambda cos(theta_y) + psi(theta_y)) / (1 + lambda),
    lambda = max(lambda_min, base (1 + gamma iteration)^(-power))

with base = 1000, gamma = 0.12, power = 1, lambda_min = 5 (their CASIA-WebFace settings).
"""
from __future__ import annotations

from lfs.loss import validated

import torch
from torch import Tensor

from lfs.heads import HeadLoss

from .l_softmax import _check_m, psi, psi_margin_loss
from .registry import register

__all__ = ["sphereface", "sphereface_lambda", "SphereFaceLoss", "AnnealedSphereFace"]


def sphereface_lambda(iteration, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0,
                      lambda_min: float = 5.0) -> float:
    """The annealing schedule ``max(lambda_min, base (1 + gamma iteration)^(-power))``."""
    return max(float(lambda_min), float(base) * (1.0 + float(gamma) * float(iteration)) ** (-float(power)))


@validated("sphereface")
def sphereface(cos: Tensor, target: Tensor, scale=1.0, m: int = 4, lambda_=0.0,
               reduction: str = "mean") -> Tensor:
    """A-Softmax (Liu et al., CVPR 2017): cross entropy on ``scale * cos`` with the target logit
    ``scale_y (lambda cos(theta_y) + psi(theta_y)) / (1 + lambda)``,
    ``psi(theta) = (-1)^k cos(m theta) - 2k`` for ``theta in [k pi/m, (k+1) pi/m]``.

    Args:
        cos: N x C cosines.
        target: N int64 class indices.
        scale: ``||x_i||`` as an N x 1 tensor (what a ``normalize="weights"`` head returns),
            a number or an N x C tensor.
        m: integer angular margin >= 1 (m = 1 is cross entropy).
        lambda_: the blending weight (0 = the pure A-Softmax loss); see :func:`sphereface_lambda`.
        reduction: "mean", "sum" or "none".
    """
    return psi_margin_loss(cos, target, scale, m, lambda_, reduction)


class AnnealedSphereFace:
    """The functional form with lambda annealed per call (one call = one training step), the way
    one model is trained with SphereFace: ``loss(cos, target, scale)``, lambda from
    :func:`sphereface_lambda` of the number of calls so far (the module form counts the same way)."""

    def __init__(self, m: int = 4, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0,
                 lambda_min: float = 5.0):
        self.m, self.schedule = _check_m(m), dict(base=base, gamma=gamma, power=power, lambda_min=lambda_min)
        self.iteration = 0

    def __call__(self, cos: Tensor, target: Tensor, scale) -> Tensor:
        lam = sphereface_lambda(self.iteration, **self.schedule)
        self.iteration += 1
        return sphereface(cos, target, scale, self.m, lambda_=lam)


def _sphereface_t(m: int = 4, lambda_: float = 0.0):
    """t(x) = (lambda x + psi(x)) / (1 + lambda), psi of :func:`baselines.l_softmax.psi`."""
    return (lambda x: (lambda_ * x + psi(x, m)) / (1.0 + lambda_)), None


@register("sphereface", fn=sphereface, training=AnnealedSphereFace, transform=_sphereface_t,
          reference="Liu, Wen, Yu, Li, Raj, Song. SphereFace: Deep Hypersphere Embedding for Face "
                    "Recognition. CVPR 2017, arXiv:1704.08063")
class SphereFaceLoss(HeadLoss):
    """A-Softmax with its own class weights (default ``normalize="weights"``: ``scale = ||x_i||``).

    ``lambda`` follows :func:`sphereface_lambda` of the ``iteration`` buffer, which counts the
    forward passes made in training mode (it is incremented after each one, so the first
    training step uses ``iteration = 0``, i.e. ``lambda = base``). In eval mode the current
    lambda is used and the counter is left alone. Pass ``lambda_=<float>`` to fix lambda instead.
    """

    default_normalize = "weights"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 30.0,
                 m: int = 4, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0,
                 lambda_min: float = 5.0, lambda_: float | None = None, reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        self.m = _check_m(m)
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        self.fixed_lambda = None if lambda_ is None else float(lambda_)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        """lambda for the next forward pass."""
        if self.fixed_lambda is not None:
            return self.fixed_lambda
        return sphereface_lambda(int(self.iteration), self.base, self.gamma, self.power, self.lambda_min)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        lam = self.current_lambda()
        if self.training:
            with torch.no_grad():
                self.iteration += 1
        return sphereface(cos, target, scale, self.m, lam, reduction=self.reduction)

    def extra_repr(self) -> str:
        lam = f"lambda_={self.fixed_lambda}" if self.fixed_lambda is not None else (
            f"base={self.base}, gamma={self.gamma}, power={self.power}, lambda_min={self.lambda_min}")
        return f"m={self.m}, {lam}"
