"""The AM-LFS search space: piecewise-linear t and tau (Section 3.3, Eq. 17).

A loss in the search space is fixed by ``theta = [a_t, b_t, a_tau, b_tau]`` (4M numbers):

* ``t``   acts on the target cosine ``x = cos(theta_y)`` over the domain ``[-1, 1]``,
* ``tau`` acts on the target probability ``p = p_y^t`` over the domain ``[0, 1]``,

each domain split into ``M`` equal intervals ``[zeta_i, zeta_{i+1}]`` with its own slope
``a_i`` and bias ``b_i``:  ``t(x) = a_i^t x + b_i^t`` for ``x`` in interval ``i`` (Eq. 17).

The interval index is computed arithmetically (``floor((x - zeta_0) / width)``, clamped to
``[0, M-1]``) rather than with ``torch.bucketize``, so every function here works under
``torch.func.vmap`` with a batched ``theta``. Points outside the domain (rounding of a cosine
to 1.0000001, say) use the first/last interval's line. At an inner end point ``zeta_i`` the
interval on the right is used.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Domain of t: the target cosine.
T_DOMAIN: tuple[float, float] = (-1.0, 1.0)
#: Domain of tau: the target probability.
TAU_DOMAIN: tuple[float, float] = (0.0, 1.0)


def theta_dim(M: int) -> int:
    """Number of entries of theta for M intervals: ``4 * M``."""
    if int(M) != M or M < 1:
        raise ValueError(f"M (number of intervals) must be a positive integer, got {M!r}")
    return 4 * int(M)


def num_intervals(theta: Tensor) -> int:
    """M, read off the last dimension of theta (which must be a multiple of 4)."""
    n = theta.shape[-1]
    if n == 0 or n % 4:
        raise ValueError(f"theta must have 4*M entries [a_t, b_t, a_tau, b_tau], got {n}")
    return n // 4


def identity_theta(M: int = 6, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The theta of cross entropy: every slope 1, every bias 0 (t(x) = x, tau(p) = p)."""
    m = theta_dim(M) // 4
    one = torch.ones(m, dtype=dtype, device=device)
    zero = torch.zeros(m, dtype=dtype, device=device)
    return torch.cat([one, zero, one, zero])


def split_theta(theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``theta -> (a_t, b_t, a_tau, b_tau)``, each of length M (views, no copy)."""
    M = num_intervals(theta)
    return theta[..., :M], theta[..., M : 2 * M], theta[..., 2 * M : 3 * M], theta[..., 3 * M :]


def interval_index(x: Tensor, M: int, domain: tuple[float, float]) -> Tensor:
    """Index i of the interval [zeta_i, zeta_{i+1}) holding x (Eq. 17), clamped to [0, M-1]."""
    lo, hi = domain
    idx = torch.floor((x.detach() - lo) * (M / (hi - lo)))
    return idx.clamp(0, M - 1).long()


def piecewise_linear(x: Tensor, a: Tensor, b: Tensor, domain: tuple[float, float]) -> Tensor:
    """``a_i * x + b_i`` with i the interval of x; a and b are 1-D of length M."""
    idx = interval_index(x, a.shape[-1], domain)
    return a[idx] * x + b[idx]


def piecewise_slope(x: Tensor, a: Tensor, domain: tuple[float, float]) -> Tensor:
    """The derivative of :func:`piecewise_linear` at x: the slope ``a_i`` of x's interval."""
    return a[interval_index(x, a.shape[-1], domain)]


def t_transform(x: Tensor, theta: Tensor) -> Tensor:
    """t(x) on the target cosine, x in [-1, 1] (Eq. 4 and 17)."""
    a_t, b_t, _, _ = split_theta(theta)
    return piecewise_linear(x, a_t, b_t, T_DOMAIN)


def t_derivative(x: Tensor, theta: Tensor) -> Tensor:
    """t'(x): by Eq. 14, the factor by which t rescales the relative significance of the
    intra-class term (gradient w.r.t. f_y) to the inter-class term (w.r.t. f_j)."""
    a_t, _, _, _ = split_theta(theta)
    return piecewise_slope(x, a_t, T_DOMAIN)


def tau_transform(p: Tensor, theta: Tensor) -> Tensor:
    """tau(p) on the target probability, p in [0, 1] (Eq. 16 and 17)."""
    _, _, a_tau, b_tau = split_theta(theta)
    return piecewise_linear(p, a_tau, b_tau, TAU_DOMAIN)


def tau_derivative(p: Tensor, theta: Tensor) -> Tensor:
    """tau'(p): the slope of the interval holding p."""
    _, _, a_tau, _ = split_theta(theta)
    return piecewise_slope(p, a_tau, TAU_DOMAIN)


def interval_edges(M: int, domain: tuple[float, float]) -> Tensor:
    """The end points zeta_0..zeta_M of the M equal intervals of ``domain``."""
    return torch.linspace(domain[0], domain[1], theta_dim(M) // 4 + 1, dtype=torch.float64)


#: Which sampled thetas belong to the search space (see :func:`in_search_space`).
CONSTRAINTS = ("positive", "none")


def in_search_space(theta: Tensor, constraint: str = "positive") -> Tensor:
    """Whether theta (..., 4M) defines a loss of the search space of Section 3.3.

    ``"positive"``: "tau and t are any function with positive gradient" (Section 3.3), and
    ``-log tau`` must be defined: every slope ``a^t_i, a^tau_i > 0`` and ``tau > 0`` on (0, 1].
    A line is positive on an interval iff it is at both ends, so the check is exact: the line of
    interval i must be > 0 at ``zeta_{i+1}`` and at ``zeta_i`` (>= 0 allowed at p = 0 only).
    ``"none"``: every theta (the raw Gaussian of Eq. 19; tau <= 0 is then handled by the loss's
    ``invalid_tau``).
    """
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")
    if constraint == "none":
        return torch.ones(theta.shape[:-1], dtype=torch.bool, device=theta.device)
    a_t, _, a_tau, b_tau = split_theta(theta)
    edges = interval_edges(a_tau.shape[-1], TAU_DOMAIN).to(theta.dtype).to(theta.device)
    left = a_tau * edges[:-1] + b_tau
    right = a_tau * edges[1:] + b_tau
    left_ok = torch.cat([left[..., :1] >= 0, left[..., 1:] > 0], dim=-1)
    return (a_t > 0).all(-1) & (a_tau > 0).all(-1) & left_ok.all(-1) & (right > 0).all(-1)
