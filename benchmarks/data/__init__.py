"""Datasets of the benchmark suite, by tier (ARCHITECTURE.md, "Tiers", "Evaluation protocols").

``load(name, **kwargs)`` dispatches to the loader of ``name``; ``available()`` lists the names.

==========================  =====  =========================================================
name                        tier   loader (returns)
==========================  =====  =========================================================
``mnist1d``                 mini   :func:`.mnist1d.load_mnist1d` (ClassificationData)
``digits``                  mini   :func:`.digits.load_digits` (ClassificationData)
``synthetic_reid_market``   mini   :func:`.synthetic_identity.market_like` (RetrievalData)
``synthetic_reid_duke``     mini   :func:`.synthetic_identity.duke_like` (RetrievalData)
``synthetic_face``          mini   :func:`.synthetic_identity.face_like` (RetrievalData)
``cifar10``                 full   :func:`.cifar10.load_cifar10` (CIFAR10Data; needs ``root``)
``market1501``              full   :func:`.reid.load_market1501` (ReIDImageData; ``root``)
``dukemtmc``                full   :func:`.reid.load_dukemtmc` (ReIDImageData; ``root``)
``casia_webface``           full   :func:`.faces.load_casia_webface` (FaceImageData; ``root``)
==========================  =====  =========================================================

Missing or malformed data on disk raises :class:`DatasetError` (one line: dataset, path, layout).
MegaFace is an evaluation set, read with the helpers of :mod:`.faces` (feature ``.bin`` files and
the devkit's JSON template lists), not through ``load``.
"""
from __future__ import annotations

import importlib
from typing import Any

from .containers import ClassificationData, RetrievalData
from .errors import DatasetError
from .noise import holdout_split, symmetric_label_noise

__all__ = ["load", "available", "DatasetError", "ClassificationData", "RetrievalData",
           "symmetric_label_noise", "holdout_split", "REGISTRY"]

# name -> (module, function, tier); imported lazily so `import benchmarks.data` stays cheap
REGISTRY: dict[str, tuple[str, str, str]] = {
    "mnist1d": ("mnist1d", "load_mnist1d", "mini"),
    "digits": ("digits", "load_digits", "mini"),
    "synthetic_reid_market": ("synthetic_identity", "market_like", "mini"),
    "synthetic_reid_duke": ("synthetic_identity", "duke_like", "mini"),
    "synthetic_face": ("synthetic_identity", "face_like", "mini"),
    "cifar10": ("cifar10", "load_cifar10", "full"),
    "market1501": ("reid", "load_market1501", "full"),
    "dukemtmc": ("reid", "load_dukemtmc", "full"),
    "casia_webface": ("faces", "load_casia_webface", "full"),
}


def available() -> list[str]:
    """Names accepted by :func:`load`, in registry order (mini tier first)."""
    return list(REGISTRY)


def load(name: str, **kwargs: Any):
    """Load dataset ``name`` with the loader's keyword arguments (e.g. ``seed=``, ``root=``)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    module, fn, _ = REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), fn)(**kwargs)
