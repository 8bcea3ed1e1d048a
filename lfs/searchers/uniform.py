"""A uniform random searcher: a fresh draw from a box every epoch, nothing learned.

With B = 1 this is Random-Softmax (Wang et al., ICML 2020): one model whose loss is drawn at
random again every epoch, no reward, no selection. With B > 1 the best copy is broadcast (a
best-of-B over random losses). The box is ``[low, high]`` per entry of the family's vector.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..family import ParametricFamily
from ..searcher import Searcher, register_searcher


@register_searcher("uniform")
class UniformSearcher(Searcher):
    """Candidates ``U(low, high)`` per entry, independently, each epoch.

    Args:
        low, high: the box (numbers, the same for every entry).
        broadcast_best: broadcast the best copy after each epoch (True) or let each copy keep
            training its own model (False).
    """

    def __init__(self, low: float = 0.0, high: float = 1.0, broadcast_best: bool = True):
        for key, v in (("low", low), ("high", high)):
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"search.{key} must be a finite number, got {v!r}")
        if not low < high:
            raise ValueError(f"search.low must be < search.high, got low={low!r}, high={high!r}")
        self.low, self.high, self.broadcast_best = float(low), float(high), bool(broadcast_best)

    def setup(self, family: ParametricFamily) -> None:
        if not isinstance(family, ParametricFamily):
            raise TypeError(f"the uniform searcher needs a family of real vectors; got {type(family).__name__}")
        super().setup(family)

    @property
    def broadcast(self) -> bool:
        return self.broadcast_best

    def propose(self, B: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(B, self.family.dim, generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u

    def observe(self, candidates: Tensor, rewards: Tensor, failed: Tensor) -> dict:
        return {}

    def config(self) -> dict:
        return {"low": self.low, "high": self.high, "broadcast_best": self.broadcast_best}
