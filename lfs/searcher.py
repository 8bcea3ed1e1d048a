"""Searchers: how candidates are proposed and what is learned from their rewards (ask / tell).

The loop of :mod:`lfs.search` asks the searcher for B candidates every epoch, trains one copy of
the model with each, scores them, and tells the searcher the rewards:

    candidates = searcher.propose(B, generator)        # ask
    ... train and score copy i with candidates[i] ...
    record = searcher.observe(candidates, rewards, failed)  # tell; what the epoch record keeps

:attr:`Searcher.broadcast` says what happens between epochs: ``True``, the best copy's state is
broadcast to every copy (AM-LFS's Algorithm 1); ``False``, every copy goes on training its own
model (a search over static losses, trained for the whole schedule). A searcher may return the
same candidates every epoch (random search over static losses does).

:meth:`state_dict` / :meth:`load_state_dict` make a search resumable; :meth:`tensors` lists the
tensors that must agree bitwise across the processes of a distributed search. Searchers are
registered by name (``@register_searcher``) in the files of :mod:`lfs.searchers`.

A minimal searcher, which proposes the family's cross-entropy candidate and learns nothing::

    from lfs.searcher import Searcher, register_searcher

    @register_searcher("constant")
    class Constant(Searcher):
        def propose(self, B, generator):
            return self.family.batch([self.family.identity()] * B)
        def observe(self, candidates, rewards, failed):
            return {}
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .family import LossFamily
from .registry import Registry


class Searcher:
    """The outer level of a loss search. Override :meth:`propose` and :meth:`observe`."""

    #: registry name (set by :func:`register_searcher`)
    name: str = ""

    def setup(self, family: LossFamily) -> None:
        """Bind the family whose candidates this searcher proposes (called once by the loop)."""
        self.family = family

    @property
    def broadcast(self) -> bool:
        """True: the best copy is broadcast after each epoch; False: each copy keeps its own."""
        return True

    def propose(self, B: int, generator: torch.Generator) -> Any:
        """B candidates, batched for the executors (``family.batch``); ``generator`` is the
        search's own random stream (the only randomness a searcher may use)."""
        raise NotImplementedError

    def observe(self, candidates: Any, rewards: Tensor, failed: Tensor) -> dict:
        """Learn from the epoch's rewards (float64, NaN where ``failed``); returns what the epoch
        record keeps of this step (JSON-able)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def tensors(self) -> list[Tensor]:
        """Tensors that must be identical across the processes of a distributed search."""
        return []

    def summary(self) -> dict:
        """What a result row keeps of the searcher at the end (JSON-able; default nothing)."""
        return {}

    def config(self) -> dict:
        """The searcher's hyper-parameters (a checkpoint resumes only under the same ones)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


# ------------------------------------------------------------------------------- registry
def _load_builtin() -> None:
    from . import searchers  # noqa: F401  (its files register themselves)


SEARCHERS = Registry("searcher", _load_builtin)
#: class decorator: ``@register_searcher("name")``
register_searcher = SEARCHERS.register
#: the registered searcher names
list_searchers = SEARCHERS.names
#: the class registered under a name
searcher_class = SEARCHERS.get
#: ``make_searcher(name, **options)``: an instance
make_searcher = SEARCHERS.make


def take(candidates: Any, indices: Sequence[int]) -> Any:
    """The candidates at ``indices`` of a batch (a stacked tensor or a list)."""
    if isinstance(candidates, Tensor):
        return candidates[list(indices)]
    return [candidates[i] for i in indices]
