"""Poly-1's one-parameter family (Leng et al., "PolyLoss", ICLR 2022, Eq. 3):
``L = -log p_t + epsilon (1 - p_t)``; epsilon = 0 is cross entropy.

The candidate is ``[epsilon]``. The space (``constraint="positive"``) is epsilon >= -1, where the
loss still decreases in p_t (d L / d p_t = -1/p_t - epsilon < 0); ``"none"``: any epsilon.
:func:`poly1_loss` is the one definition of the loss; ``baselines.poly1`` is it with a fixed epsilon.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..family import ParametricFamily, register_family
from ..loss import as_scale, gather_target, reduce_loss, split_output, validated



@validated("poly1")
def poly1_loss(cos: Tensor, target: Tensor, epsilon, scale=1.0, reduction: str = "mean") -> Tensor:
    """``-log p_t + epsilon (1 - p_t)``, ``p_t`` the softmax probability of the target under
    ``scale * cos`` (pass logits with ``scale=1``); ``1 - p_t = -expm1(log p_t)``. ``epsilon``: a
    number or a 0-d / (1,) tensor (vmappable)."""
    log_p = gather_target(F.log_softmax(as_scale(scale, cos) * cos, dim=-1), target)
    if isinstance(epsilon, Tensor):
        epsilon = epsilon.to(device=log_p.device, dtype=log_p.dtype).reshape(())
    return reduce_loss(-log_p + epsilon * -torch.expm1(log_p), reduction)


@register_family("poly1")
class Poly1(ParametricFamily):
    """Poly-1 with epsilon as the candidate (one entry). Output: a head's ``(cos, scale)`` or logits."""

    stackable = True
    dim = 1

    def loss(self, output, target: Tensor, candidate: Tensor) -> Tensor:
        cos, scale = split_output(output)
        return poly1_loss(cos, target, candidate, scale)

    def identity(self) -> Tensor:
        return torch.zeros(1, dtype=torch.float64)

    def box(self):
        """epsilon >= -1."""
        return torch.full((1,), -1.0, dtype=torch.float64), torch.full((1,), math.inf, dtype=torch.float64)

    def describe(self, candidate) -> str:
        return f"-log p_t + {float(torch.as_tensor(candidate).reshape(-1)[0]):.4g} (1 - p_t)"
