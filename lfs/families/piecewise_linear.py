"""AM-LFS's loss family: ``L = -log tau(p_y^t)`` with piecewise-linear t and tau (Eq. 16-17).

A candidate is ``theta = [a_t, b_t, a_tau, b_tau]`` (4M float64 numbers, :mod:`lfs.search_space`);
the loss is :func:`lfs.am_lfs_loss` on a head's ``(cos, scale)`` output. The identity theta is
cross entropy. ``in_space(constraint="positive")`` is Section 3.3's space (positive slopes,
tau > 0), which the Gaussian searcher samples by rejection.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..family import ParametricFamily, register_family
from ..loss import INVALID_TAU, am_lfs_loss
from ..search_space import identity_theta, in_search_space, split_theta, theta_dim


@register_family("piecewise_linear")
class PiecewiseLinear(ParametricFamily):
    """AM-LFS: M intervals per transform; ``invalid_tau`` is what tau(p) <= 0 does (see
    :mod:`lfs.loss`)."""

    stackable = True

    def __init__(self, M: int = 6, invalid_tau: str = "ignore"):
        if not (isinstance(M, int) and M >= 1):
            raise ValueError(f"M must be an integer >= 1, got {M!r}")
        if invalid_tau not in INVALID_TAU:
            raise ValueError(f"invalid_tau must be one of {INVALID_TAU}, got {invalid_tau!r}")
        self.M, self.invalid_tau = M, invalid_tau
        self.dim = theta_dim(M)

    def loss(self, output, target: Tensor, candidate: Tensor) -> Tensor:
        cos, scale = output
        return am_lfs_loss(cos, target, candidate, scale, invalid_tau=self.invalid_tau)

    def identity(self) -> Tensor:
        return identity_theta(self.M, dtype=torch.float64)

    def in_space(self, vectors: Tensor, constraint: str) -> Tensor:
        return in_search_space(vectors, constraint)  # raises on an unknown constraint

    def describe(self, candidate) -> str:
        a_t, b_t, a_tau, b_tau = (v.tolist() for v in split_theta(torch.as_tensor(candidate)))

        def lines(a, b):
            return "[" + ", ".join(f"{x:.3g}x{y:+.3g}" for x, y in zip(a, b)) + "]"

        return f"-log tau(p_y^t), t = {lines(a_t, b_t)} on [-1, 1], tau = {lines(a_tau, b_tau)} on [0, 1]"

    def config(self) -> dict:
        return {"M": self.M, "invalid_tau": self.invalid_tau}
