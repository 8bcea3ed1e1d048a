"""The executors by name: ``make_executor("sequential" | "vectorized" | "distributed" | "auto")``.

Kept apart from :mod:`lfs.executors` (the interface and the two single-process executors) so that
:mod:`lfs.auto` and :mod:`lfs.distributed`, which build on that module, are not imported by it.
"""
from __future__ import annotations

from .auto import AutoExecutor
from .distributed import DistributedExecutor
from .executors import Executor, SequentialExecutor, VectorizedExecutor

EXECUTORS = ("sequential", "vectorized", "distributed", "auto")


def make_executor(name: str) -> Executor:
    """``"sequential"``, ``"vectorized"``, ``"distributed"`` (each rank sequential) or ``"auto"``
    (times both at setup, keeps the faster)."""
    if name == "sequential":
        return SequentialExecutor()
    if name == "vectorized":
        return VectorizedExecutor()
    if name == "distributed":
        return DistributedExecutor("sequential")
    if name == "auto":
        return AutoExecutor()
    raise ValueError(f"executor must be one of {EXECUTORS}, got {name!r}")
