"""Executors: how the B copies of Algorithm 1 are trained and scored, and how the best one is
broadcast ("we broadcast the model parameters with the highest reward to each sample", §4.1).

One interface (:class:`Executor`), several implementations:

* ``sequential``: B persistent :class:`~lfs.task.TrainState` copies trained one after another.
  The reference; runs any :class:`~lfs.task.Task`.
* ``vectorized``: the B copies' parameters, buffers and optimizer state stacked along a leading
  dimension and trained at once with ``torch.func.functional_call`` + ``vmap`` (each copy with
  its own theta and its own minibatches). Needs a :class:`~lfs.task.SupervisedTask`. BatchNorm
  running statistics are stacked buffers, updated per copy. The stacked parameters are plain
  leaf tensors handed to the task's own optimizer: SGD/momentum/weight decay/Adam act
  elementwise, so one optimizer over the stack is exactly B independent optimizers.
* ``distributed`` (:mod:`lfs.distributed`, torch.distributed): each rank trains its share of the
  B copies, ``train`` all-gathers rewards, ``broadcast`` sends the best state from the rank that
  owns it.
* ``auto`` (:mod:`lfs.auto`): times sequential and vectorized on the task and becomes the faster.

:func:`lfs.executor_registry.make_executor` builds any of them by name.

Broadcast policy. ``broadcast_optimizer=True`` (default) copies the best copy's optimizer
(momentum / Adam moments) and scheduler state along with its weights, so that the next epoch
continues the winning trajectory exactly. ``False`` copies the weights only and each copy keeps
its own optimizer state, as the known public re-implementation does. A copy whose training failed
(non-finite loss or parameters) always receives the full state, since its own is garbage.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from .family import LossFamily
from .task import EpochStats, SupervisedTask, Task, TrainState

class Executor:
    """Trains and scores B copies of a task's state; keeps them between epochs."""

    def setup(self, task: Task, B: int, state: TrainState, family: LossFamily | None = None) -> None:
        """Make B copies of ``state`` (a freshly built state of ``task``). ``family``: the loss
        family whose candidates :meth:`train` will receive (None: AM-LFS's thetas)."""
        raise NotImplementedError

    def train(self, thetas, epoch: int, seeds: Sequence[int]) -> tuple[Tensor, Tensor, list[EpochStats]]:
        """Train copy i for one epoch with candidate ``thetas[i]`` (a stacked tensor or a list, see
        :meth:`lfs.family.LossFamily.batch`) and data seed ``seeds[i]``; score it.

        Returns ``(rewards, failed, stats)``: float64 rewards (NaN for failed copies), a bool mask
        of failed copies, and per-copy :class:`EpochStats`.
        """
        raise NotImplementedError

    def broadcast(self, best: int, failed: Tensor, with_optimizer: bool) -> None:
        """Copy the best copy's state to every other copy (see module docstring)."""
        raise NotImplementedError

    def export(self, index: int) -> TrainState:
        """An independent :class:`TrainState` (model, optimizer, scheduler) of copy ``index``."""
        raise NotImplementedError

    # -- state of copies (broadcast across processes, checkpoints) ---------------------------
    def copy_state(self, index: int) -> dict:
        """Copy ``index``'s state as independent state dicts ``{"model", "optimizer", "scheduler"}``."""
        return train_state_dict(self.export(index))

    def load_copy_state(self, state: dict, indices: Sequence[int] | None = None, with_optimizer: bool = True) -> None:
        """Load a :meth:`copy_state` dict into the copies ``indices`` (default: all)."""
        raise NotImplementedError

    def state_dict(self, shared: int | None = None) -> dict:
        """Every copy's state, for a checkpoint. ``shared=i`` promises that all copies equal copy
        ``i`` (true right after a full broadcast), so only that one is saved."""
        if shared is not None:
            return {"shared": self.copy_state(shared)}
        return {"copies": [self.copy_state(i) for i in range(self.B)]}

    def synchronize(self, tensors: Sequence[Tensor]) -> None:
        """Make ``tensors`` (mu and its optimizer state) identical across processes (no-op here)."""

    def load_state_dict(self, state: dict) -> None:
        if "shared" in state:
            self.load_copy_state(state["shared"])
            return
        if len(state["copies"]) != self.B:
            raise ValueError(f"checkpoint holds {len(state['copies'])} copies, this search has B={self.B}")
        for i, st in enumerate(state["copies"]):
            self.load_copy_state(st, [i])


def train_state_dict(state: TrainState) -> dict:
    """Independent (deep-copied) state dicts of a :class:`TrainState`."""
    return copy.deepcopy(_state_dicts(state))


def load_train_state(dst: TrainState, state: dict, with_optimizer: bool = True) -> None:
    """Load :func:`train_state_dict` output into ``dst`` without sharing tensors."""
    dst.model.load_state_dict(state["model"])
    if with_optimizer and dst.optimizer is not None and state.get("optimizer") is not None:
        # load_state_dict keeps the very tensors it is given when dtype and device match:
        # without a deep copy the copies would share (and jointly update) one momentum buffer.
        dst.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    if dst.scheduler is not None and state.get("scheduler") is not None:
        dst.scheduler.load_state_dict(state["scheduler"])


def _state_dicts(state: TrainState) -> dict:
    """The live (not copied) state dicts of a :class:`TrainState`."""
    return {"model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None}


def load_state(dst: TrainState, src: TrainState, with_optimizer: bool = True) -> None:
    """Copy ``src``'s model (and optimizer, scheduler) state into ``dst`` without sharing tensors."""
    load_train_state(dst, _state_dicts(src), with_optimizer)


def restore_state(task: Task, state: dict) -> TrainState:
    """A fresh ``task.make_state()`` loaded with a :func:`train_state_dict` (the global RNG is
    untouched).

    Built rather than ``copy.deepcopy``-ed: a deep copy loses the hook an LR scheduler installs on
    its optimizer's ``step`` and may not handle arbitrary user objects.
    """
    with torch.random.fork_rng(devices=[]):
        dst = task.make_state()
    load_train_state(dst, state)
    return dst


def clone_state(task: Task, src: TrainState) -> TrainState:
    """A fresh ``task.make_state()`` loaded with ``src``'s state (see :func:`restore_state`)."""
    return restore_state(task, _state_dicts(src))


class SequentialExecutor(Executor):
    """The reference: a Python loop over B persistent states."""

    def setup(self, task, B, state, family=None):
        self.task, self.B = task, B
        self.states = [state] + [clone_state(task, state) for _ in range(B - 1)]

    def train(self, thetas, epoch, seeds):
        B = len(self.states)
        rewards = torch.full((B,), math.nan, dtype=torch.float64)
        failed = torch.zeros(B, dtype=torch.bool)
        stats = []
        for i, st in enumerate(self.states):
            s = self.task.train_epoch(st, thetas[i], epoch, int(seeds[i]))
            stats.append(s)
            r = self.task.reward(st) if s.finite else math.nan
            if not math.isfinite(r):
                failed[i] = True
            else:
                rewards[i] = r
        return rewards, failed, stats

    def broadcast(self, best, failed, with_optimizer):
        src = self.states[best]
        for i, st in enumerate(self.states):
            if i != best:
                load_state(st, src, with_optimizer or bool(failed[i]))

    def export(self, index):
        return clone_state(self.task, self.states[index])

    def copy_state(self, index):
        return train_state_dict(self.states[index])

    def load_copy_state(self, state, indices=None, with_optimizer=True):
        for i in range(self.B) if indices is None else indices:
            load_train_state(self.states[i], state, with_optimizer)


class VectorizedExecutor(Executor):
    """All B copies in one stacked, vmapped forward/backward per step."""

    def setup(self, task, B, state, family=None):
        if family is not None and not family.stackable:
            raise ValueError(f"the vectorized executor needs a loss family that stacks its candidates; "
                             f"{family.name or type(family).__name__!r} does not: use executor='sequential' or 'auto'")
        if not isinstance(task, SupervisedTask):
            raise TypeError("the vectorized executor needs a SupervisedTask (model_fn, optimizer_fn, loss_fn, data); "
                            f"got {type(task).__name__}: use executor='sequential'")
        self.task, self.B = task, B
        self.template = copy.deepcopy(state.model)
        self.param_names = [n for n, _ in self.template.named_parameters()]
        self.buffer_names = [n for n, _ in self.template.named_buffers()]
        # Stack fresh copies (detached: stack_module_state's outputs cannot be updated in place).
        self.params = {n: torch.stack([p.detach()] * B).clone().requires_grad_(p.requires_grad)
                       for n, p in self.template.named_parameters()}
        self.buffers = {n: torch.stack([b.detach()] * B).clone() for n, b in self.template.named_buffers()}
        self.optimizer = task.optimizer_fn([self.params[n] for n in self.param_names])
        self.scheduler = task.scheduler_fn(self.optimizer) if task.scheduler_fn is not None else None
        if state.optimizer is not None and len(state.optimizer.state) > 0:
            raise ValueError("the vectorized executor starts from a fresh optimizer; got one with state")

        template, loss_fn, predict_fn = self.template, task.loss_fn, task.predict_fn

        def train_loss(params, buffers, x, y, theta):
            return loss_fn(functional_call(template, (params, buffers), (x,)), y, theta)

        eval_kwargs = task.eval_kwargs

        def predict(params, buffers, x):
            return predict_fn(functional_call(template, (params, buffers), (x,), eval_kwargs))

        self._train_loss = vmap(train_loss)
        self._predict = vmap(predict, in_dims=(0, 0, None))

    def train(self, thetas, epoch, seeds):
        task, B = self.task, self.B
        thetas = torch.as_tensor(thetas)
        alive = torch.ones(B, dtype=torch.bool)
        total = torch.zeros(B, dtype=torch.float64)
        steps = 0
        self.template.train()
        for batches in zip(*(task.train_batches(int(s)) for s in seeds)):
            x = task.to_device(torch.stack([b[0] for b in batches]))
            y = task.to_device(torch.stack([b[1] for b in batches]))
            losses = self._train_loss(self.params, self.buffers, x, y, thetas)
            alive &= torch.isfinite(losses.detach())
            self.optimizer.zero_grad(set_to_none=True)
            # Failed copies get no further gradient (their state is replaced at the broadcast).
            torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
            self.optimizer.step()
            total += torch.where(alive, losses.detach(), torch.zeros_like(losses.detach())).double()
            steps += 1
        if self.scheduler is not None:
            self.scheduler.step()
        for n in self.param_names:
            alive &= torch.isfinite(self.params[n].detach()).flatten(1).all(1)
        rewards = torch.full((B,), math.nan, dtype=torch.float64)
        scores = self._scores()
        targets = torch.cat([y for _, y in task.val_batches()])
        for i in range(B):
            if alive[i]:
                r = float(task.reward_fn(scores[i], targets))
                rewards[i] = r if math.isfinite(r) else math.nan
        failed = ~torch.isfinite(rewards)
        stats = [EpochStats(loss=float(total[i] / max(steps, 1)) if alive[i] else math.nan,
                            finite=bool(alive[i]), steps=steps) for i in range(B)]
        return rewards, failed, stats

    @torch.no_grad()
    def _scores(self) -> Tensor:
        self.template.eval()
        return torch.cat([self._predict(self.params, self.buffers, self.task.to_device(x)).cpu()
                          for x, _ in self.task.val_batches()], dim=1)

    @torch.no_grad()
    def broadcast(self, best, failed, with_optimizer):
        for t in list(self.params.values()) + list(self.buffers.values()):
            t.copy_(t[best].clone().expand_as(t))
        copy_rows = slice(None) if with_optimizer else failed  # failed copies always get it
        for state in self.optimizer.state.values():
            for v in state.values():
                if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == self.B:
                    v[copy_rows] = v[best].clone()

    def export(self, index):
        model = copy.deepcopy(self.template)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(self.params[n][index])
            for n, b in model.named_buffers():
                b.copy_(self.buffers[n][index])
        optimizer = self.task.optimizer_fn(model.parameters())
        scheduler = self.task.scheduler_fn(optimizer) if self.task.scheduler_fn is not None else None
        # Unstack the optimizer state of this copy (state keyed by position in the param list).
        sd = self.optimizer.state_dict()
        for key, state in sd["state"].items():
            sd["state"][key] = {k: (v[index].clone() if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == self.B else v)
                                for k, v in state.items()}
        optimizer.load_state_dict(sd)
        if scheduler is not None:
            scheduler.load_state_dict(self.scheduler.state_dict())
        return TrainState(model, optimizer, scheduler)

    def load_copy_state(self, state, indices=None, with_optimizer=True):
        rows = slice(None) if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
        with torch.no_grad():
            for n in self.param_names:
                self.params[n][rows] = state["model"][n].to(self.params[n])
            for n in self.buffer_names:
                self.buffers[n][rows] = state["model"][n].to(self.buffers[n])
        if with_optimizer and state.get("optimizer") is not None:
            # Restack the one copy's optimizer state (keyed by position in the parameter list,
            # the same order as self.param_names) into the rows of the stacked state.
            new = copy.deepcopy(self.optimizer.state_dict())
            for key, st in state["optimizer"]["state"].items():
                p = self.params[self.param_names[int(key)]]
                current = new["state"].get(key, {})
                out = {}
                for name, v in st.items():
                    if isinstance(v, Tensor) and name != "step" and v.shape == p.shape[1:]:
                        stacked = current.get(name)
                        if stacked is None or indices is None:
                            stacked = v.unsqueeze(0).expand(p.shape).clone()
                        else:
                            stacked[rows] = v.to(stacked)
                        out[name] = stacked
                    else:  # per-parameter scalars shared by the stacked copies (e.g. Adam's step)
                        out[name] = copy.deepcopy(v)
                new["state"][key] = out
            new["param_groups"] = [{**g, "params": cur["params"]}
                                   for g, cur in zip(state["optimizer"]["param_groups"], new["param_groups"])]
            self.optimizer.load_state_dict(new)
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
