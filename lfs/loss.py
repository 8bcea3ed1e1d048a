"""The unified AM-LFS loss (Eq. 4, 10 and 16) and the shared "replace the target logit" core.

Every loss of this project, AM-LFS and the margin baselines alike, is

    L_i = -log tau( p_y^t ),   p_y^t = softmax of the logits where the target logit
                               scale_y * cos(theta_y) is replaced by scale_y * t(cos(theta_y))

with ``scale_ij = ||W_j|| ||x_i||`` (unnormalized head, Eq. 2) or a fixed ``s`` (normalized head).
``-log p_y^t`` is computed by :func:`torch.nn.functional.cross_entropy` on the modified logits
(fused log-softmax, stable at any number of classes), and ``log tau(p)`` is then evaluated in
log space from ``log p`` (see :func:`log_tau`), so that ``tau = identity`` is *exactly* cross
entropy even when ``p`` underflows float32 (``p ~ 1e-50`` is common with s = 64 and 10,575
classes; a naive ``-log(clamp(tau(exp(log p))))`` saturates there).

Everything here avoids data-dependent Python control flow and ``F.one_hot`` so that it runs
under ``torch.func.vmap`` with one theta per vmapped model copy.

Speed. :func:`am_lfs_loss` runs the closed-form-gradient kernel of :mod:`lfs.loss_kernel`
(measured in ``benchmarks/perf``: forward + backward under one cross entropy at (256, 10575));
the composition of autograd ops it replaces is :func:`am_lfs_loss_autograd`, the tests'
reference and what runs when theta requires a gradient or second derivatives are needed.

tau(p) <= 0 (decided here; the paper assumes tau > 0 without enforcing it)
--------------------------------------------------------------------------
A sampled theta can make ``tau(p) = a_i p + b_i`` zero or negative for some p (any negative
b_0^tau does, near p = 0), where ``-log tau`` is undefined. ``invalid_tau`` chooses:

* ``"ignore"`` (default): an example whose tau(p) <= 0 gets the constant loss
  ``-log(tau_floor)`` and **zero gradient**: the sampled loss simply does not train on it.
  Examples with tau(p) > 0 keep their exact loss, however small tau is.
* ``"nan"``: such an example's loss is NaN. The search loop treats a non-finite training loss as
  a failed sample: it stops training it, gives it the lowest reward, and never selects it.

Either way a sample whose training diverges (non-finite loss) fails and cannot win
(see :mod:`lfs.search`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from .loss_kernel import _AMLFSLoss, _AMLFSLossT
from .search_space import TAU_DOMAIN, interval_index, split_theta, t_transform

_REDUCTIONS = ("mean", "sum", "none")
INVALID_TAU = ("ignore", "nan")


def check_inputs(cos: Tensor, target: Tensor, fn: str = "loss") -> None:
    """One-line errors for inputs every loss of this project refuses (shared by
    :func:`am_lfs_loss` and the baselines):

    * ``cos`` must be a floating-point N x C tensor (an integer tensor: convert with ``.float()``);
      float16 and bfloat16 are computed in that precision, like ``F.cross_entropy``;
    * ``target`` must be an int64 tensor of N class indices (one per row of ``cos``), N >= 1.

    Target indices outside [0, C) are not checked here (it would cost a reduction, and a host sync
    on a GPU, on every call): the losses let torch's gather fail and name the index then
    (:func:`validated`). Values of ``cos`` outside [-1, 1] are not refused: the transforms extend
    their end pieces. Costs a few attribute reads."""
    if not isinstance(cos, Tensor) or not cos.is_floating_point():
        what = cos.dtype if isinstance(cos, Tensor) else type(cos).__name__
        raise TypeError(f"{fn}: cos must be a floating-point tensor, got {what}; convert it with cos.float()")
    if cos.ndim != 2:
        raise ValueError(f"{fn}: cos must have shape (N, C), one row of class cosines per example; "
                         f"got {tuple(cos.shape)}")
    if not isinstance(target, Tensor) or target.dtype != torch.int64:
        what = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"{fn}: target must be an int64 tensor of class indices, got {what}; use target.long()")
    if target.shape != cos.shape[:1]:
        raise ValueError(f"{fn}: target has shape {tuple(target.shape)} but cos has {cos.shape[0]} rows; "
                         "pass one class index per row")
    if cos.shape[0] == 0:
        raise ValueError(f"{fn}: the batch is empty (cos has 0 rows)")


def validated(fn: str):
    """Decorator of a loss ``f(cos, target, ...)``: :func:`check_inputs` before the call, and a
    target index outside [0, C), which makes torch's gather or cross entropy fail, named in one
    line after it (nothing is checked on the values of good input)."""
    import functools

    def wrap(f):
        @functools.wraps(f)
        def loss(cos, target, *args, **kwargs):
            check_inputs(cos, target, fn)
            try:
                return f(cos, target, *args, **kwargs)
            except (RuntimeError, IndexError) as e:
                if "out of bounds" in str(e) and ((target < 0) | (target >= cos.shape[1])).any():
                    target_range_error(fn, target, cos.shape[1])
                raise

        return loss

    return wrap


def target_range_error(fn: str, target: Tensor, num_classes: int):
    bad = target[(target < 0) | (target >= num_classes)]
    raise ValueError(f"{fn}: target holds class index {int(bad[0])}, outside [0, {num_classes}) "
                     f"for cos with {num_classes} columns")


def check_theta(theta: Tensor, fn: str = "am_lfs_loss") -> None:
    """theta must be one vector ``[a_t, b_t, a_tau, b_tau]`` of 4M numbers (shape (4M,)); a
    leading batch dimension such as (1, 4M) is refused rather than guessed."""
    if not isinstance(theta, Tensor):
        raise TypeError(f"{fn}: theta must be a tensor of 4M numbers, got {type(theta).__name__}")
    if theta.ndim != 1 or theta.numel() == 0 or theta.numel() % 4:
        raise ValueError(f"{fn}: theta must have shape (4M,) = [a_t, b_t, a_tau, b_tau], got {tuple(theta.shape)}"
                         + ("; pass theta[0] or theta.reshape(-1)" if theta.ndim == 2 and theta.shape[0] == 1 else ""))


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` ("mean", "sum" or "none") to per-sample losses."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def as_scale(scale, cos: Tensor) -> Tensor:
    """The scale as a tensor broadcastable to ``cos`` (N x C): a number s (normalized head), an
    N x 1 tensor ||x_i|| (weights normalized only) or an N x C tensor ||W_j|| ||x_i||."""
    if isinstance(scale, Tensor):
        return scale.to(dtype=cos.dtype)
    return torch.as_tensor(float(scale), dtype=cos.dtype, device=cos.device)


def split_output(output) -> tuple[Tensor, object]:
    """A model's output as ``(cos, scale)``: a head's pair as it is, plain logits as ``(logits, 1)``."""
    return (output, 1.0) if isinstance(output, Tensor) else output


def gather_target(x: Tensor, target: Tensor) -> Tensor:
    """``x[i, target[i]]`` for an N x C tensor x (vmap-safe)."""
    return x.gather(-1, target.unsqueeze(-1)).squeeze(-1)


def target_logit_cross_entropy(
    logits: Tensor, target: Tensor, target_logit: Tensor, reduction: str = "none"
) -> Tensor:
    """``-log p_y^t``: cross entropy of ``logits`` with each row's target entry replaced by
    ``target_logit`` (Eq. 4 / Eq. 10). The common core of every margin-based loss."""
    modified = logits.scatter(-1, target.unsqueeze(-1), target_logit.unsqueeze(-1).to(logits.dtype))
    return F.cross_entropy(modified, target, reduction=reduction)


def margin_cross_entropy(cos: Tensor, target: Tensor, scale, target_cosine, reduction: str = "mean") -> Tensor:
    """``-log p_y^t`` after the target logit ``scale_y cos_y`` becomes ``scale_y target_cosine(cos_y)``
    (Eq. 4): the margin losses' ``t`` (CosFace ``x - m``, ArcFace ``cos(arccos x + m)``, ...) and
    AM-LFS's piecewise-linear ``t`` all go through here.

    ``scale`` is a number, an N x 1 or an N x C tensor (see :func:`as_scale`).
    """
    check_inputs(cos, target, "loss")
    scale = as_scale(scale, cos)
    cos_y = gather_target(cos, target)
    scale_y = gather_target(scale.expand_as(cos), target)
    loss = target_logit_cross_entropy(scale * cos, target, scale_y * target_cosine(cos_y))
    return reduce_loss(loss, reduction)


def log_tau(log_p: Tensor, theta: Tensor, invalid_tau: str = "ignore", tau_floor: float = 1e-12) -> Tensor:
    """``log tau(p)`` from ``log p``, in log space.

    With ``i`` the interval of ``p``, ``tau(p) = a p + b`` is a signed sum of two terms whose
    log-magnitudes are ``u = log|a| + log p`` and ``v = log|b|``; with ``hi = max(u, v)`` and
    ``d = min(u, v) - hi <= 0``::

        log tau = hi + log1p(exp(d))      if both terms are >= 0
        log tau = hi + log(-expm1(d))     if their signs differ and the larger one is positive
        tau <= 0                          otherwise (handled by ``invalid_tau``)

    For tau = identity (a = 1, b = 0) this returns ``log p`` exactly.
    """
    if invalid_tau not in INVALID_TAU:
        raise ValueError(f"invalid_tau must be one of {INVALID_TAU}, got {invalid_tau!r}")
    _, _, a_tau, b_tau = split_theta(theta)
    M = a_tau.shape[-1]
    idx = interval_index(log_p.exp(), M, TAU_DOMAIN)
    a, b = a_tau[idx], b_tau[idx]

    u = a.abs().log() + log_p  # log |a p|
    v = b.abs().log()  # log |b|
    a_pos, b_pos = a >= 0, b >= 0
    u_wins = u >= v
    hi = torch.maximum(u, v)
    lo = torch.minimum(u, v)
    hi_pos = torch.where(u_wins, a_pos, b_pos)
    same_sign = a_pos == b_pos
    # d = lo - hi is -inf when the smaller term vanishes and NaN when both do (hi = -inf).
    valid = hi_pos & (hi > -math.inf) & (same_sign | (lo < hi))
    d = torch.where(valid, lo - hi, torch.full_like(hi, -1.0))  # safe where invalid: no NaN grads
    hi = torch.where(valid, hi, torch.zeros_like(hi))
    # Each branch sees only inputs it is finite on, so the unused one cannot leak NaN gradients.
    d_diff = torch.where(same_sign, torch.full_like(d, -1.0), d)
    log_mix = torch.where(same_sign, torch.log1p(d.exp()), torch.log(-torch.expm1(d_diff)))
    out = hi + log_mix
    fill = math.log(tau_floor) if invalid_tau == "ignore" else math.nan
    return torch.where(valid, out, torch.full_like(out, fill))


def am_lfs_loss_autograd(cos, target, theta, scale=1.0, reduction="mean", invalid_tau="ignore", tau_floor=1e-12):
    """:func:`am_lfs_loss` composed of differentiable torch ops (the first implementation; log tau
    in log space by :func:`log_tau`). Slower (3-7x cross entropy, see ``benchmarks/perf``) but
    differentiable any number of times and in theta: :func:`am_lfs_loss` uses it when theta
    requires a gradient; use it directly for second derivatives. The tests' reference."""
    theta = theta.to(device=cos.device, dtype=cos.dtype)  # a float64 policy sample acts in the model's precision
    nll = margin_cross_entropy(cos, target, scale, lambda cos_y: t_transform(cos_y, theta), reduction="none")
    loss = -log_tau(-nll, theta, invalid_tau=invalid_tau, tau_floor=tau_floor)
    return reduce_loss(loss, reduction)


@validated("am_lfs_loss")
def am_lfs_loss(
    cos: Tensor,
    target: Tensor,
    theta: Tensor,
    scale=1.0,
    reduction: str = "mean",
    invalid_tau: str = "ignore",
    tau_floor: float = 1e-12,
) -> Tensor:
    """The unified AM-LFS loss ``-log tau(p_y^t)`` (Eq. 16).

    Args:
        cos: N x C cosines ``cos(theta_j)`` between features and class weights.
        target: N class indices.
        theta: ``[a_t, b_t, a_tau, b_tau]`` (4M,), see :mod:`lfs.search_space`.
        scale: ``s`` (normalized head), or an N x 1 / N x C tensor of ``||W_j|| ||x_i||``.
        reduction: "mean", "sum" or "none".
        invalid_tau: what tau(p) <= 0 does ("ignore" or "nan"); see the module docstring.
        tau_floor: the tau whose ``-log`` ignored examples report as their (constant) loss.

    With ``theta = identity_theta(M)`` this equals ``F.cross_entropy(scale * cos, target)``.

    Inputs (checked, one-line errors; :func:`validated`, :func:`check_theta`): ``cos`` a float
    tensor (N, C) (float16 / bfloat16 are computed in that precision; values outside [-1, 1] are
    accepted, the end pieces of t extend linearly), ``target`` int64 (N,) with indices in [0, C),
    ``theta`` of shape (4M,) (a (1, 4M) theta is refused, not guessed).

    Speed: the gradient is computed in closed form by a custom autograd Function (vmappable, see
    the module docstring): forward + backward costs less than one cross entropy at (256, 10575) and
    less than three at (128, 10), where per-op overhead is all there is (measured:
    ``results/perf/cpu.csv``). First derivatives with respect to ``cos`` and ``scale``; a ``theta`` that
    requires a gradient takes :func:`am_lfs_loss_autograd` instead; second derivatives
    (``create_graph=True``) raise, and forward-mode AD is not supported.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if invalid_tau not in INVALID_TAU:
        raise ValueError(f"invalid_tau must be one of {INVALID_TAU}, got {invalid_tau!r}")
    check_theta(theta)
    if theta.requires_grad:
        return am_lfs_loss_autograd(cos, target, theta, scale, reduction, invalid_tau, tau_floor)
    if isinstance(scale, Tensor):
        if scale.dtype != cos.dtype:
            scale = scale.to(dtype=cos.dtype)
    else:
        scale = float(scale)
    if torch._C._are_functorch_transforms_active():
        return _AMLFSLossT.apply(cos, scale, target, theta, reduction, invalid_tau, float(tau_floor))[0]
    if isinstance(scale, Tensor) and scale.ndim == 0 and not scale.requires_grad and scale.device.type == "cpu":
        scale = float(scale)  # exactly its value; fewer ops as a (cached) constant
    return _AMLFSLoss.apply(cos, scale, target, theta, reduction, invalid_tau, float(tau_floor))
