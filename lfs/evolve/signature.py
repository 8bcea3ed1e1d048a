"""AutoLoss-Zero's Gradient-Equivalence-Check (GEC): a loss's signature is the gradient norms
``{||dL/dy_hat_b||_2}_{b=1..B}`` on one fixed random batch, each rounded to two significant
digits; two losses with the same signature are taken as equivalent, and the second reuses the
first one's fitness without training.

The fixed batch (our choice, REPRODUCE.md): B = 32 samples of C = 10 classes, logits ~ N(0, 1)
and uniform random targets from a generator seeded 0, in float64, so that every process and
machine computes the same signature. The gradient of sample b is that of its own loss
(``L.sum()`` over the batch), so scaling a loss scales every norm and changes the signature,
while ``neg(neg(L))``, ``mul(1, L)`` and ``L`` share one.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

SIGNATURE_BATCH = 32
SIGNATURE_CLASSES = 10
SIGNATURE_DIGITS = 2


@lru_cache(maxsize=4)
def signature_batch(batch: int = SIGNATURE_BATCH, classes: int = SIGNATURE_CLASSES,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch: (logits, one-hot targets), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, classes, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (batch,), generator=g), classes).to(torch.float64)
    return x, y


def _round(v: float, digits: int) -> str:
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.{digits - 1}e}"


def signature(loss, batch: tuple[torch.Tensor, torch.Tensor] | None = None,
              digits: int = SIGNATURE_DIGITS) -> tuple[str, ...]:
    """The GEC signature of ``loss`` (a callable ``loss(x, y) -> (N,)``, e.g. a
    :class:`~lfs.evolve.LossExpression`): B gradient norms as strings with ``digits`` significant
    digits. A loss without a gradient with respect to x gives norms of 0 (``"0.0e+00"``); a
    non-finite value gives ``"nan"``/``"inf"`` entries."""
    x, y = signature_batch() if batch is None else batch
    x = x.detach().clone().requires_grad_(True)
    value = loss(x, y)
    if value.requires_grad:
        (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    else:
        grad = None
    norms = torch.zeros(x.shape[0], dtype=x.dtype) if grad is None else grad.norm(dim=-1)
    return tuple(_round(float(v), digits) for v in norms)
