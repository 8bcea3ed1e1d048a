"""The B copies of Algorithm 1 spread over the processes of a ``torch.distributed`` group.

The paper trains each of its B = 32 samples on its own GPUs. :class:`DistributedExecutor` gives
every rank a contiguous block of the B copies (``np.array_split`` of ``range(B)``) and trains them
with a local executor (``sequential`` or ``vectorized``). Per epoch:

* every rank samples the same thetas (same seed, same mu) and trains its own copies with them,
  copy i with the data seed of copy i, exactly as the single-process executors do;
* the rewards and failure flags are all-gathered, so every rank picks the same best copy;
* the best copy's state (model, and optimizer/scheduler where configured) is broadcast from the
  rank that owns it and loaded into every other copy;
* after the policy update, mu and its optimizer state are broadcast from rank 0, so mu stays
  identical everywhere even across heterogeneous nodes.

For the same seeds, the chosen indices, rewards and mu equal those of the sequential executor
(``tests/test_distributed.py`` runs 2 CPU ranks under ``torchrun``).

Process groups: :func:`init_process_group` joins the group described by the environment:
``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), or a SLURM job step
with several tasks (``srun``, or submitit with ``tasks_per_node`` > 1: ``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID``, the first host of ``SLURM_JOB_NODELIST``), or else a group of
one process. The backend is ``nccl`` when CUDA is available, ``gloo`` otherwise.

Checkpoints (:mod:`lfs.checkpoint`) are written by rank 0 only (``is_writer``) and read by every
rank at resume, so the checkpoint folder must be shared by the nodes (as a SLURM cluster's home
or scratch file system is). After a full broadcast every rank's copies equal the best one and
rank 0 saves its own; otherwise (``random`` mode, ``broadcast_optimizer=False``) rank 0 gathers
every copy's state.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .executors import Executor, SequentialExecutor, VectorizedExecutor, restore_state
from .searcher import take
from .task import EpochStats


# ------------------------------------------------------------------------- process group
def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[01-04],gpu7`` -> ``node01``)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^,\[]+)(?:\[([^\],-]+))?", nodelist)
    return m.group(1) + (m.group(2) or "") if m else "127.0.0.1"


def environment() -> dict[str, str] | None:
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` from torchrun's or
    SLURM's environment; None when this process was not launched as one of several."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k in env}
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        job = int(env.get("SLURM_JOB_ID", "0"))
        return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"],
                "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
                "MASTER_ADDR": env.get("MASTER_ADDR") or _first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
                "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + job % 20000)}
    return None


def init_process_group(backend: str | None = None, timeout_s: float = 1800) -> tuple[int, int]:
    """Join (or create) the default process group; returns ``(rank, world_size)``. Idempotent."""
    from datetime import timedelta

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    env = environment()
    timeout = timedelta(seconds=timeout_s)
    if env is None:  # a group of one: the executor then behaves like its local executor
        store = dist.FileStore(tempfile.mktemp(prefix="lfs-dist-"), 1)
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
        return 0, 1
    os.environ.update(env)
    if backend == "nccl":
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend, init_method="env://", rank=int(env["RANK"]),
                            world_size=int(env["WORLD_SIZE"]), timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def is_writer() -> bool:
    """True in the process that writes results (rank 0, or any process outside a group)."""
    return not dist.is_initialized() or dist.get_rank() == 0


# ------------------------------------------------------------------------------ executor
class DistributedExecutor(Executor):
    """B copies over the ranks of the default process group (see the module docstring).

    Args:
        local: how each rank trains its own block of copies: ``"sequential"`` or ``"vectorized"``.
    """

    def __init__(self, local: str = "sequential"):
        if local not in ("sequential", "vectorized"):
            raise ValueError(f"local executor must be 'sequential' or 'vectorized', got {local!r}")
        self.local_name = local

    # -- layout -------------------------------------------------------------------------
    def setup(self, task, B, state, family=None):
        if not dist.is_initialized():
            init_process_group()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if B < self.world:
            raise ValueError(f"B={B} samples cannot be spread over {self.world} processes: use B >= world size")
        self.task, self.B = task, B
        self.blocks = [list(map(int, b)) for b in np.array_split(np.arange(B), self.world)]
        self.mine = self.blocks[self.rank]
        self.block_size = max(len(b) for b in self.blocks)
        self.local = SequentialExecutor() if self.local_name == "sequential" else VectorizedExecutor()
        self.local.setup(task, len(self.mine), state, family=family)
        self.device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def owner(self, index: int) -> tuple[int, int]:
        """(rank, local index) of global copy ``index``."""
        for r, block in enumerate(self.blocks):
            if index in block:
                return r, block.index(index)
        raise IndexError(f"copy {index} out of range for B={self.B}")

    # -- one epoch ----------------------------------------------------------------------
    def train(self, thetas, epoch, seeds):
        rewards, failed, stats = self.local.train(take(thetas, self.mine), epoch, [int(seeds[i]) for i in self.mine])
        n = len(self.mine)
        mine = torch.full((self.block_size, 2), math.nan, dtype=torch.float64)
        mine[:n, 0], mine[:n, 1] = rewards, failed.double()
        gathered = [torch.empty_like(mine, device=self.device) for _ in range(self.world)]
        dist.all_gather(gathered, mine.to(self.device))
        every_stats: list = [None] * self.world
        dist.all_gather_object(every_stats, [(s.loss, s.finite, s.steps) for s in stats])
        all_rewards = torch.full((self.B,), math.nan, dtype=torch.float64)
        all_failed = torch.zeros(self.B, dtype=torch.bool)
        all_stats: list[EpochStats] = [None] * self.B  # type: ignore[list-item]
        for r, block in enumerate(self.blocks):
            g = gathered[r].cpu()
            for j, i in enumerate(block):
                all_rewards[i], all_failed[i] = g[j, 0], bool(g[j, 1] > 0.5)
                all_stats[i] = EpochStats(*every_stats[r][j])
        return all_rewards, all_failed, all_stats

    def _from_owner(self, index: int) -> dict:
        """Copy ``index``'s state on every rank (sent by the rank that owns it)."""
        rank, j = self.owner(index)
        obj = [self.local.copy_state(j) if self.rank == rank else None]
        if self.world > 1:
            if self.rank == rank:
                obj = [_to_cpu(obj[0])]
            dist.broadcast_object_list(obj, src=rank, device=self.device if self.device.type == "cuda" else None)
        return obj[0]

    def broadcast(self, best, failed, with_optimizer):
        state = self._from_owner(best)
        for j, i in enumerate(self.mine):
            if i != best:
                self.local.load_copy_state(state, [j], with_optimizer or bool(failed[i]))

    def synchronize(self, tensors: Sequence[Tensor]) -> None:
        """Make ``tensors`` (mu, its optimizer state) bitwise equal to rank 0's."""
        if self.world == 1:
            return
        for t in tensors:
            buf = t.detach().to(self.device).contiguous()
            dist.broadcast(buf, src=0)
            with torch.no_grad():
                t.copy_(buf.to(t.device))

    # -- states (collective: every rank calls them) ---------------------------------------
    def export(self, index):
        return restore_state(self.task, self._from_owner(index))

    def copy_state(self, index):
        return self._from_owner(index)

    def load_copy_state(self, state, indices=None, with_optimizer=True):
        wanted = None if indices is None else set(indices)
        local = [j for j, i in enumerate(self.mine) if wanted is None or i in wanted]
        if local:
            self.local.load_copy_state(state, local, with_optimizer)

    def state_dict(self, shared=None):
        if shared is not None:  # every local copy equals the broadcast best: no communication
            return {"shared": _to_cpu(self.local.copy_state(0))}
        mine = {i: _to_cpu(self.local.copy_state(j)) for j, i in enumerate(self.mine)}
        if self.world == 1:
            return {"copies": [mine[i] for i in range(self.B)]}
        gathered: list | None = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if self.rank != 0:
            return {}
        copies = {i: st for part in gathered for i, st in part.items()}
        return {"copies": [copies[i] for i in range(self.B)]}

    def load_state_dict(self, state):
        if "shared" in state:
            self.local.load_copy_state(state["shared"])
            return
        if len(state["copies"]) != self.B:
            raise ValueError(f"checkpoint holds {len(state['copies'])} copies, this search has B={self.B}")
        for j, i in enumerate(self.mine):
            self.local.load_copy_state(state["copies"][i], [j])


def _to_cpu(obj):
    """Tensors of a (nested) state dict moved to the CPU, for pickling across ranks and to disk."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj

