"""A grid searcher: B fixed candidates, each copy trained with its own for the whole schedule, the
copy with the best validation reward at the end wins (no broadcast). The simplest loss search
there is: with Poly-1's epsilon over a small grid it is a control for the searched families
(``benchmarks/methods/poly1_grid.yaml``)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..family import ParametricFamily
from ..searcher import Searcher, register_searcher


@register_searcher("grid")
class GridSearcher(Searcher):
    """Args: ``values``: the grid, one candidate per copy (numbers for a one-entry family, or
    lists of ``dim`` numbers). B must equal the number of grid points."""

    def __init__(self, values: list = (0.0,)):
        if not values:
            raise ValueError("search.values: the grid needs at least one point")
        self.values = [list(v) if isinstance(v, (list, tuple)) else [float(v)] for v in values]

    def setup(self, family: ParametricFamily) -> None:
        if not isinstance(family, ParametricFamily):
            raise TypeError(f"the grid searcher needs a family of real vectors; got {type(family).__name__}")
        bad = [v for v in self.values if len(v) != family.dim]
        if bad:
            raise ValueError(f"search.values: every grid point needs {family.dim} entries for {family!r}, got {bad[0]}")
        super().setup(family)

    @property
    def broadcast(self) -> bool:
        return False

    def propose(self, B: int, generator: torch.Generator) -> Tensor:
        if B != len(self.values):
            raise ValueError(f"the grid has {len(self.values)} points but search.B={B}: set B to the grid's size")
        return torch.tensor(self.values, dtype=torch.float64)

    def observe(self, candidates: Tensor, rewards: Tensor, failed: Tensor) -> dict:
        return {}

    def config(self) -> dict:
        return {"values": self.values}
