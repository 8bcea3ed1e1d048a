"""Fitting theta to a known loss (Figure 1): the search space contains (approximations of) the
hand-crafted losses.

Each known loss is a pair of transforms of the unified form ``-log tau(p_y^t)`` (Eq. 4-6, 16 and
Table 1): a margin loss is a ``t`` on the target cosine, focal loss a ``tau`` on the target
probability (``tau(p) = p^((1-p)^gamma)`` turns ``-log tau`` into ``-(1-p)^gamma log p``).
:func:`fit_theta` finds, interval by interval, the least-squares line through a dense grid of
the transform (independent slopes and biases, Eq. 17), which is the best approximation of each
interval's piece in L2.

:func:`loss_curve` turns t or tau into the loss curves Figure 1 plots:

* for t: the loss as a function of the target cosine x with the other ``C - 1`` classes at
  cosine 0: ``L(x) = log(1 + (C-1) exp(-s t(x)))`` (Eq. 4),
* for tau: ``L(p) = -log tau(p)`` (Eq. 16).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .loss import log_tau
from .search_space import T_DOMAIN, TAU_DOMAIN, interval_edges, t_transform, theta_dim

Transform = Callable[[Tensor], Tensor]


def identity(x: Tensor) -> Tensor:
    return x


def cosface_t(m: float = 0.35) -> Transform:
    """CosFace / AM-softmax: t(x) = x - m."""
    return lambda x: x - m


def arcface_t(m: float = 0.5) -> Transform:
    """ArcFace: t(x) = cos(arccos(x) + m) (Table 1)."""
    return lambda x: torch.cos(torch.arccos(x.clamp(-1.0, 1.0)) + m)


def sphereface_psi(m: int = 4) -> Transform:
    """A-softmax / L-softmax: t(x) = psi(arccos x), psi(theta) = (-1)^k cos(m theta) - 2k for
    theta in [k pi/m, (k+1) pi/m] (Liu et al. 2016, 2017; lambda = 0)."""

    def psi(x: Tensor) -> Tensor:
        theta = torch.arccos(x.clamp(-1.0, 1.0))
        k = torch.floor(theta * m / math.pi).clamp(max=m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
        return sign * torch.cos(m * theta) - 2.0 * k

    return psi


def focal_tau(gamma: float = 2.0) -> Transform:
    """Focal loss: tau(p) = p^((1-p)^gamma), so that -log tau(p) = -(1-p)^gamma log p."""
    return lambda p: p.clamp_min(1e-300) ** ((1.0 - p) ** gamma)


#: The losses of Figure 1 as (t, tau) pairs, with the papers' default hyper-parameters.
KNOWN_LOSSES: dict[str, tuple[Transform, Transform]] = {
    "cross_entropy": (identity, identity),
    "sphereface": (sphereface_psi(4), identity),
    "cosface": (cosface_t(0.35), identity),
    "arcface": (arcface_t(0.5), identity),
    "focal": (identity, focal_tau(2.0)),
}


FIT_METHODS = ("lstsq", "interpolate")


def fit_piecewise_linear(fn: Transform, M: int, domain: tuple[float, float], method: str = "lstsq",
                         points_per_interval: int = 256) -> tuple[Tensor, Tensor]:
    """Slopes and biases (a_i, b_i) approximating fn on each of the M intervals of domain.

    ``"lstsq"``: the least-squares line of each interval (independent pieces, as Eq. 17 allows).
    ``"interpolate"``: the chord through the interval's end points (continuous, exact at the
    end points; a positive target gives a positive fit, which least squares does not promise).
    """
    if method not in FIT_METHODS:
        raise ValueError(f"method must be one of {FIT_METHODS}, got {method!r}")
    edges = interval_edges(M, domain)
    a, b = torch.empty(M, dtype=torch.float64), torch.empty(M, dtype=torch.float64)
    for i in range(M):
        if method == "interpolate":
            x = edges[i : i + 2].clone()
            y = fn(x)
            a[i] = (y[1] - y[0]) / (x[1] - x[0])
            b[i] = y[0] - a[i] * x[0]
            continue
        x = torch.linspace(float(edges[i]), float(edges[i + 1]), points_per_interval, dtype=torch.float64)
        design = torch.stack([x, torch.ones_like(x)], dim=1)
        coef = torch.linalg.lstsq(design, fn(x).unsqueeze(1)).solution.squeeze(1)
        a[i], b[i] = coef[0], coef[1]
    return a, b


def fit_theta(t: Transform = identity, tau: Transform = identity, M: int = 6, method: str = "lstsq",
              points_per_interval: int = 256) -> Tensor:
    """theta = [a_t, b_t, a_tau, b_tau] whose piecewise-linear t and tau approximate t and tau."""
    theta_dim(M)
    a_t, b_t = fit_piecewise_linear(t, M, T_DOMAIN, method, points_per_interval)
    a_tau, b_tau = fit_piecewise_linear(tau, M, TAU_DOMAIN, method, points_per_interval)
    return torch.cat([a_t, b_t, a_tau, b_tau])


def fit_known_loss(name: str, M: int = 6, method: str = "lstsq") -> Tensor:
    """:func:`fit_theta` for one of :data:`KNOWN_LOSSES`."""
    if name not in KNOWN_LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(KNOWN_LOSSES)}")
    t, tau = KNOWN_LOSSES[name]
    return fit_theta(t, tau, M, method)


def margin_loss_curve(t_values: Tensor, s: float = 16.0, num_classes: int = 10) -> Tensor:
    """Loss of Eq. 4 given t(x), with the C - 1 other classes at cosine 0."""
    return torch.nn.functional.softplus(math.log(num_classes - 1) - s * t_values)


def loss_curve(name: str, theta: Tensor | None = None, n: int = 1001, s: float = 16.0,
               num_classes: int = 10, p_min: float = 1e-3) -> tuple[Tensor, Tensor]:
    """(inputs, losses) of a known loss (``theta=None``) or of its search-space fit ``theta``.

    Margin losses vary the target cosine over [-1, 1]; focal loss (and CE's tau view) vary the
    target probability over [p_min, 1].
    """
    t, tau = KNOWN_LOSSES[name]
    if name == "focal":
        p = torch.linspace(p_min, 1.0, n, dtype=torch.float64)
        loss = -torch.log(tau(p)) if theta is None else -log_tau(p.log(), theta.to(torch.float64))
        return p, loss
    x = torch.linspace(T_DOMAIN[0], T_DOMAIN[1], n, dtype=torch.float64)
    tx = t(x) if theta is None else t_transform(x, theta.to(torch.float64))
    return x, margin_loss_curve(tx, s, num_classes)


def approximation_error(name: str, M: int, method: str = "lstsq", **curve_kwargs) -> float:
    """Sup distance between a known loss's curve and its fit's, relative to the curve's range:
    ``max |L_fit - L| / (max L - min L)`` (scale-free; 0 means exact)."""
    theta = fit_known_loss(name, M, method)
    _, exact = loss_curve(name, None, **curve_kwargs)
    _, fitted = loss_curve(name, theta, **curve_kwargs)
    return float((exact - fitted).abs().max() / (exact.max() - exact.min()))
