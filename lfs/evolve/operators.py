"""The primitive operators of evolved losses (CSE-Autoloss, Liu et al., ICLR 2021, Table 1 and
its released operator set; AutoLoss-Zero, Li et al., CVPR 2022, Section 3.1).

An operator is a name, an arity, a torch function and a kind: ``elementwise`` (broadcasting over
N x C tensors, N x 1 per-sample values and numbers) or ``reduce`` (over the class axis, keeping it
as a column: N x C -> N x 1, so that a per-sample value broadcasts against N x C again).

Safe semantics (our choices, named here and in REPRODUCE.md; the papers only say the operators
must stay finite):

* ``log(a) = log(|a| + EPS)`` and ``div(a, b) = a / (b + EPS)`` with ``b``'s sign kept away from 0
  (``b + EPS`` where ``b >= 0``, ``b - EPS`` where ``b < 0``), ``EPS = 1e-20`` (CSE-Autoloss's
  released set uses ``log(a + 1e-20)`` and ``a / (b + 1e-20)``, which give NaN for a negative
  ``a`` and blow up at ``b = -1e-20``). ``log(softmax(a))`` is computed as
  ``logaddexp(log_softmax(a), log EPS)``: the same function, without the underflow of
  ``softmax`` (:func:`log_softmax_eps`; the compiler fuses the pair).
* ``sqrt(a) = sqrt(|a| + EPS) - sqrt(EPS)``: defined (and 0 at 0) for every ``a``, with a finite
  gradient at 0. ``inv(a) = div(1, a)``.
* ``exp(a) = exp(min(a, EXP_MAX))`` with ``EXP_MAX = 50`` (their set clamps at 88, the float32
  limit; 50 keeps a product of two such values finite in float32 too).
* ``gd``, ``alf`` and ``erf`` are rescaled to (0, 1) as in CSE-Autoloss's code:
  ``gd(a) = (2/pi * gd(pi a / 4) + 1) / 2`` with the Gudermannian ``gd(z) = 2 atan(tanh(z / 2))``,
  ``alf(a) = (a/2 / sqrt(1 + (a/2)^2) + 1) / 2``, ``erf(a) = (erf(sqrt(pi)/2 * a/2) + 1) / 2``.
* ``softmax`` is over the class axis; ``dot(a, b)`` sums ``a * b`` over it, ``mean(a)`` averages
  it (both keep it as a column).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

EPS = 1e-20
EXP_MAX = 50.0


@dataclass(frozen=True)
class Operator:
    name: str
    arity: int
    fn: Callable
    kind: str = "elementwise"  # or "reduce" (over the class axis, kept as a column)
    doc: str = ""


def _t(a):
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(float(a), dtype=torch.get_default_dtype())


def _log(a):
    return torch.log(torch.abs(_t(a)) + EPS)


def log_softmax_eps(a):
    """``log(softmax(a) + EPS)``, computed stably (``log`` of a softmax, fused)."""
    a = _t(a)
    if not a.ndim:
        return torch.full_like(a, math.log(1 + EPS))
    return torch.logaddexp(torch.log_softmax(a, dim=-1), torch.tensor(math.log(EPS), dtype=a.dtype, device=a.device))


def _div(a, b):
    b = _t(b)
    return _t(a) / torch.where(b >= 0, b + EPS, b - EPS)


def _sqrt(a):
    return torch.sqrt(torch.abs(_t(a)) + EPS) - math.sqrt(EPS)


def _exp(a):
    return torch.exp(torch.clamp(_t(a), max=EXP_MAX))


def _gd(a):
    z = _t(a) * (math.pi / 4)
    return (2 * torch.atan(torch.tanh(z / 2)) * (2 / math.pi) + 1) / 2


def _alf(a):
    z = _t(a) / 2
    return (z / torch.sqrt(1 + z * z) + 1) / 2


def _erf(a):
    return (torch.erf(_t(a) * (math.sqrt(math.pi) / 4)) + 1) / 2


def _softmax(a):
    a = _t(a)
    return torch.softmax(a, dim=-1) if a.ndim else torch.ones_like(a)


def _dot(a, b):
    p = _t(a) * _t(b)
    return p.sum(dim=-1, keepdim=True) if p.ndim else p


def _mean(a):
    a = _t(a)
    return a.mean(dim=-1, keepdim=True) if a.ndim else a


OPERATORS: dict[str, Operator] = {op.name: op for op in [
    Operator("neg", 1, lambda a: -_t(a), doc="-a"),
    Operator("exp", 1, _exp, doc="exp(min(a, 50))"),
    Operator("log", 1, _log, doc="log(|a| + 1e-20)"),
    Operator("abs", 1, lambda a: torch.abs(_t(a)), doc="|a|"),
    Operator("sqrt", 1, _sqrt, doc="sqrt(|a| + 1e-20) - sqrt(1e-20)"),
    Operator("softmax", 1, _softmax, doc="softmax over the class axis"),
    Operator("softplus", 1, lambda a: F.softplus(_t(a)), doc="log(1 + e^a)"),
    Operator("sigmoid", 1, lambda a: torch.sigmoid(_t(a)), doc="1 / (1 + e^-a)"),
    Operator("gd", 1, _gd, doc="the Gudermannian, rescaled to (0, 1)"),
    Operator("alf", 1, _alf, doc="the algebraic function a / sqrt(1 + a^2), rescaled to (0, 1)"),
    Operator("erf", 1, _erf, doc="the error function, rescaled to (0, 1)"),
    Operator("tanh", 1, lambda a: torch.tanh(_t(a)), doc="tanh(a)"),
    Operator("sin", 1, lambda a: torch.sin(_t(a)), doc="sin(a)"),
    Operator("cos", 1, lambda a: torch.cos(_t(a)), doc="cos(a)"),
    Operator("relu", 1, lambda a: torch.relu(_t(a)), doc="max(a, 0)"),
    Operator("add", 2, lambda a, b: _t(a) + _t(b), doc="a + b"),
    Operator("sub", 2, lambda a, b: _t(a) - _t(b), doc="a - b"),
    Operator("mul", 2, lambda a, b: _t(a) * _t(b), doc="a * b"),
    Operator("div", 2, _div, doc="a / (b +- 1e-20)"),
    Operator("dot", 2, _dot, kind="reduce", doc="sum over the class axis of a * b (one value per sample)"),
    # AutoLoss-Zero's additions
    Operator("inv", 1, lambda a: _div(1.0, a), doc="1 / (a +- 1e-20)"),
    Operator("square", 1, lambda a: _t(a) * _t(a), doc="a^2"),
    Operator("mean", 1, _mean, kind="reduce", doc="the mean over the class axis (one value per sample)"),
]}

#: CSE-Autoloss's multi-class classification set (20 operators)
CSE_AUTOLOSS = ("neg", "exp", "log", "abs", "sqrt", "softmax", "softplus", "sigmoid", "gd", "alf", "erf", "tanh",
                "sin", "cos", "relu", "add", "sub", "mul", "div", "dot")
#: the set used for AutoLoss-Zero: CSE-Autoloss's plus ``inv``, ``square`` and ``mean`` over the
#: class axis (our reading; the paper's own operator table could not be consulted here, REPRODUCE.md)
AUTOLOSS_ZERO = CSE_AUTOLOSS + ("inv", "square", "mean")
OPERATOR_SETS = {"cse_autoloss": CSE_AUTOLOSS, "autoloss_zero": AUTOLOSS_ZERO}
CONSTANTS = (1, 2, 3)
