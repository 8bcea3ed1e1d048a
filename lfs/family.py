"""Loss families: what a loss search searches over (ARCHITECTURE.md, "Loss families").

A *family* turns a *candidate* (one point of its search space) into a loss, and says what the
candidate is in words and in JSON. The search loop (:mod:`lfs.search`) never looks inside a
candidate: it hands the searcher's proposals to the executors, which train copy ``i`` with
``family.loss(output, target, candidates[i])`` (through the task's ``loss_fn``), and it stores
``family.to_json(candidate)`` in every epoch record.

A family that can *stack* B candidates into one tensor (``stackable = True``) can be trained by the
``vectorized`` executor, which vmaps the loss over the stacked candidates; ``auto`` picks
``sequential`` by itself for a family that cannot.

Families are registered by name (``@register_family``) in the files of :mod:`lfs.families`, and
built with :func:`make_family`. A minimal family, one scalar that scales cross entropy::

    import torch, torch.nn.functional as F
    from lfs.family import ParametricFamily, register_family

    @register_family("scaled_ce")
    class ScaledCE(ParametricFamily):
        stackable = True
        dim = 1
        def loss(self, output, target, candidate):        # candidate: a (1,) tensor
            return candidate[0].to(output.dtype) * F.cross_entropy(output, target)
        def identity(self):
            return torch.ones(1, dtype=torch.float64)
        def describe(self, candidate):
            return f"{float(candidate[0]):.3g} * CE"

``examples/custom_family.py`` runs a family defined outside the package on a mini table.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from .registry import Registry
from .search_space import CONSTRAINTS


class LossFamily:
    """A set of losses, indexed by candidates. Override :meth:`loss` and :meth:`describe`.

    Candidates are opaque to the loop; :meth:`to_json` / :meth:`from_json` must round-trip them
    (rows and checkpoints use these).
    """

    #: the registry name (set by :func:`register_family`)
    name: ClassVar[str] = ""
    #: True if :meth:`stack` turns B candidates into one tensor the vectorized executor can vmap
    stackable: ClassVar[bool] = False

    def loss(self, output: Any, target: Tensor, candidate: Any) -> Tensor:
        """The scalar training loss of ``candidate`` on a minibatch (the model's ``output``)."""
        raise NotImplementedError

    def describe(self, candidate: Any) -> str:
        """A human-readable formula of ``candidate`` (reports use it)."""
        raise NotImplementedError

    def to_json(self, candidate: Any) -> Any:
        """``candidate`` as JSON-able data (lists, numbers, strings)."""
        return candidate.tolist() if isinstance(candidate, Tensor) else candidate

    def from_json(self, data: Any) -> Any:
        """The inverse of :meth:`to_json`."""
        return data

    def stack(self, candidates: Sequence[Any]) -> Tensor:
        """B candidates as one tensor with a leading dimension B (stackable families only)."""
        if not self.stackable:
            raise TypeError(f"loss family {self.name or type(self).__name__!r} cannot stack candidates: "
                            "use executor='sequential' (or 'auto')")
        if isinstance(candidates, Tensor):
            return candidates
        return torch.stack([torch.as_tensor(c) for c in candidates])

    def batch(self, candidates: Sequence[Any]) -> Any:
        """What the executors receive: the stacked tensor for a stackable family, else a list."""
        return self.stack(candidates) if self.stackable else list(candidates)

    def identity(self) -> Any:
        """The candidate that is plain cross entropy, if the family has one (the ``select`` control
        trains B copies with it)."""
        raise NotImplementedError(f"loss family {self.name!r} has no cross-entropy candidate")

    def config(self) -> dict:
        """The family's hyper-parameters (a checkpoint resumes only under the same ones)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class ParametricFamily(LossFamily):
    """A family whose candidates are real vectors of length :attr:`dim` (float64 tensors), the
    form the Gaussian searcher (:mod:`lfs.searchers.gaussian`) samples. Stacking is ``torch.stack``.

    Override :meth:`loss`, :meth:`identity` (the initial mean, and the ``select`` control's
    candidate) and, if the space is restricted, :meth:`box` or :meth:`in_space`.
    """

    stackable: ClassVar[bool] = True
    dim: int = 0

    def initial_mean(self) -> Tensor:
        """mu_0 of a Gaussian search over this family (default: the cross-entropy candidate)."""
        return torch.as_tensor(self.identity(), dtype=torch.float64)

    def in_space(self, vectors: Tensor, constraint: str) -> Tensor:
        """Which rows of ``vectors`` (n x dim) are candidates of the space under ``constraint``
        (a Gaussian searcher rejects the others). Default: inside :meth:`bounds` (all rows where
        there are none); override for a space that is not a box."""
        box = self.bounds(constraint)
        if box is None:
            return torch.ones(vectors.shape[:-1], dtype=torch.bool, device=vectors.device)
        low, high = (b.to(vectors) for b in box)
        return ((vectors >= low) & (vectors <= high)).all(-1)

    def box(self) -> tuple[Tensor, Tensor] | None:
        """The family's space as a box ``(low, high)`` (per entry; ``-inf`` / ``inf`` for an open
        side), or None (default) where it is not one."""
        return None

    def bounds(self, constraint: str) -> tuple[Tensor, Tensor] | None:
        """``(low, high)`` when the space under ``constraint`` is a box: :meth:`box` for
        ``"positive"`` (the family's space), None for ``"none"`` (every vector). A Gaussian searcher
        samples a box's truncated Gaussian exactly (inverse CDF) instead of rejecting draws outside
        :meth:`in_space`. An unknown constraint raises ``ValueError``."""
        if constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {CONSTRAINTS} for {self.name or type(self).__name__}, "
                             f"got {constraint!r}")
        return None if constraint == "none" else self.box()

    def describe(self, candidate) -> str:
        return f"{type(self).__name__}({', '.join(f'{float(v):.4g}' for v in torch.as_tensor(candidate).flatten())})"

    def from_json(self, data) -> Tensor:
        return torch.as_tensor(data, dtype=torch.float64)


# ------------------------------------------------------------------------------- registry
def _load_builtin() -> None:
    from . import families  # noqa: F401  (its files register themselves)


FAMILIES = Registry("loss family", _load_builtin)
#: class decorator: ``@register_family("name")``
register_family = FAMILIES.register
#: the registered family names
list_families = FAMILIES.names
#: the class registered under a name
family_class = FAMILIES.get
#: ``make_family(name, **hyper-parameters)``: an instance
make_family = FAMILIES.make
