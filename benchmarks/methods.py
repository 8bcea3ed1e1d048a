"""The methods a table compares, declared once (benchopt style), looked up by name.

A method says which loss trains the model and how the model is chosen:

* a **search** method runs :class:`lfs.LossSearch` with B samples per epoch in one of the modes
  ``learn`` (AM-LFS), ``fixed`` (fixed distribution), ``random`` (random search), ``select``
  (best-of-B with cross entropy only);
* a **single-model** method trains one model with a fixed loss (cross entropy or a baseline from
  :mod:`baselines`), keeping the last epoch, or the epoch with the best validation reward when
  ``early_stopping`` is set (the honest CE control: same clean validation split as AM-LFS);
* ``l2t_dlf`` trains one model whose loss coefficients come from an L2T-DLF-style teacher.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    search_mode: str | None = None  # lfs search mode, or None for one model
    loss: str = "am_lfs"  # "am_lfs" or a baselines registry name
    early_stopping: bool = False
    teacher: bool = False

    @property
    def is_search(self) -> bool:
        return self.search_mode is not None


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    return sorted(_METHODS)


for _m in (
    Method("learn", "AM-LFS: sample B losses per epoch, keep the best model, learn mu (Algorithm 1)", "learn"),
    Method("fixed", "fixed distribution: as AM-LFS but mu is never updated (section 4.6)", "fixed"),
    Method("random", "random search: B static losses from the search space, best at the end", "random"),
    Method("select", "control: B copies trained with cross entropy, best kept each epoch", "select"),
    Method("ce", "cross entropy, one model, last epoch", loss="cross_entropy"),
    Method("ce_es", "cross entropy, one model, early stopping on the clean validation split",
           loss="cross_entropy", early_stopping=True),
    Method("sphere_reid", "SphereReID baseline: softmax cross entropy on the normalized head, one model",
           loss="cross_entropy"),
    Method("sphereface", "SphereFace (A-softmax, m=4, lambda annealing)", loss="sphereface"),
    Method("cosface", "CosFace (s(cos - m), m=0.35)", loss="cosface"),
    Method("arcface", "ArcFace (s cos(theta + m), m=0.5)", loss="arcface"),
    Method("focal", "focal loss (gamma=2)", loss="focal"),
    Method("l2t_dlf", "L2T-DLF-style teacher outputting the loss coefficients", loss="l2t_dlf", teacher=True),
):
    register(_m)
