"""Fitting theta to a known loss (Figure 1): the search space contains (approximations of) the
hand-crafted losses.

A known loss is a pair of transforms of the unified form ``-log tau(p_y^t)`` (Eq. 4-6, 16 and
Table 1): a margin loss is a ``t`` on the target cosine, focal loss a ``tau`` on the target
probability (``tau(p) = p^((1-p)^gamma)`` turns ``-log tau`` into ``-(1-p)^gamma log p``). The
transforms are the losses' own (:meth:`baselines.BaselineLoss.transforms`: the very functions
training uses, ArcFace's fallback included); this module takes them as arguments.
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


def margin_loss_curve(t_values: Tensor, s: float = 16.0, num_classes: int = 10) -> Tensor:
    """Loss of Eq. 4 given t(x), with the C - 1 other classes at cosine 0."""
    return torch.nn.functional.softplus(math.log(num_classes - 1) - s * t_values)


def curve_kind(t: Transform, tau: Transform) -> str:
    """``"tau"`` for a loss that acts on the target probability (its tau is not the identity),
    else ``"t"``: what :func:`loss_curve` varies."""
    return "t" if tau is identity else "tau"


def loss_curve(t: Transform = identity, tau: Transform = identity, theta: Tensor | None = None, n: int = 1001,
               s: float = 16.0, num_classes: int = 10, p_min: float = 1e-3) -> tuple[Tensor, Tensor]:
    """(inputs, losses) of the loss ``-log tau(p_y^t)`` given by ``(t, tau)`` (``theta=None``) or
    of its search-space fit ``theta``.

    A loss with a non-identity tau (focal, Poly-1) is drawn against the target probability over
    [p_min, 1]; a margin loss (a t) against the target cosine over [-1, 1] (Eq. 4, the other
    C - 1 classes at cosine 0).
    """
    if curve_kind(t, tau) == "tau":
        p = torch.linspace(p_min, 1.0, n, dtype=torch.float64)
        loss = -torch.log(tau(p)) if theta is None else -log_tau(p.log(), theta.to(torch.float64))
        return p, loss
    x = torch.linspace(T_DOMAIN[0], T_DOMAIN[1], n, dtype=torch.float64)
    tx = t(x) if theta is None else t_transform(x, theta.to(torch.float64))
    return x, margin_loss_curve(tx, s, num_classes)


def approximation_error(t: Transform = identity, tau: Transform = identity, M: int = 6, method: str = "lstsq",
                        **curve_kwargs) -> float:
    """Sup distance between a loss's curve and its fit's, relative to the curve's range:
    ``max |L_fit - L| / (max L - min L)`` (scale-free; 0 means exact)."""
    theta = fit_theta(t, tau, M, method)
    _, exact = loss_curve(t, tau, None, **curve_kwargs)
    _, fitted = loss_curve(t, tau, theta, **curve_kwargs)
    return float((exact - fitted).abs().max() / (exact.max() - exact.min()))
