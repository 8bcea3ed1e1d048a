"""What the user supplies to the search loop: how to train a state for one epoch with a given
theta, and how to score a state (the reward ``r(M_omega; D_v)`` of Eq. 18).

Two ways to supply it:

* :class:`CallbackTask`: three plain callables (``make_state``, ``train_epoch``, ``reward``)
  around any training loop. Runs with the ``sequential`` executor.
* :class:`SupervisedTask`: a model factory, an optimizer factory, in-memory (or user-iterated)
  data and a vmappable ``loss_fn(output, target, theta)``. Runs with every executor, including
  ``vectorized`` (all B copies trained at once with ``torch.func``).

Every copy ``i`` of epoch ``e`` gets its own data-order seed (see :func:`sample_seed`), so the B
copies see different minibatch orders, as B separately trained models would; this is what makes
the ``select`` control (B copies trained with cross entropy, best kept) a real best-of-B.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor


@dataclass
class TrainState:
    """One copy's training state: model, optimizer and (optional, epoch-stepped) scheduler."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None


@dataclass
class EpochStats:
    """What training one copy for one epoch reports. ``finite=False`` marks a failed sample."""

    loss: float
    finite: bool
    steps: int


def sample_seed(seed: int, epoch: int, sample: int) -> int:
    """The data-order seed of copy ``sample`` at ``epoch`` (independent streams via SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(sample)]).generate_state(1, np.uint64)[0] >> 1)


def parameters_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Task:
    """Interface of the search loop's inner level (override the three methods)."""

    def make_state(self) -> TrainState:
        raise NotImplementedError

    def train_epoch(self, state: TrainState, theta: Tensor, epoch: int, seed: int) -> EpochStats:
        raise NotImplementedError

    def reward(self, state: TrainState) -> float:
        raise NotImplementedError


class CallbackTask(Task):
    """A :class:`Task` from three callables.

    ``train_epoch(state, theta, epoch, seed)`` may return an :class:`EpochStats`, a float (the mean
    loss) or None; a non-finite loss or non-finite parameters after the epoch mark the sample as
    failed.
    """

    def __init__(self, make_state: Callable[[], TrainState], train_epoch: Callable, reward: Callable[[TrainState], float]):
        self._make_state, self._train_epoch, self._reward = make_state, train_epoch, reward

    def make_state(self) -> TrainState:
        return self._make_state()

    def train_epoch(self, state, theta, epoch, seed) -> EpochStats:
        out = self._train_epoch(state, theta, epoch, seed)
        if isinstance(out, EpochStats):
            return out
        loss = math.nan if out is None else float(out)
        finite = (out is None or math.isfinite(loss)) and parameters_finite(state.model)
        return EpochStats(loss=loss, finite=finite, steps=-1)

    def reward(self, state) -> float:
        return float(self._reward(state))


def default_predict(output) -> Tensor:
    """Scores from a model output: the tensor itself, or ``cos * scale`` for a head's (cos, scale)."""
    if isinstance(output, Tensor):
        return output
    cos, scale = output
    return cos * scale


def accuracy_reward(scores: Tensor, target: Tensor) -> float:
    """Top-1 accuracy, the paper's reward for classification (Section 4.1)."""
    return float((scores.argmax(-1) == target).double().mean())


class SupervisedTask(Task):
    """A supervised task that both the sequential and the vectorized executors can run.

    Args:
        model_fn: builds the model (called once, under the search seed). Its forward returns a
            tensor or a tuple of tensors (e.g. a :class:`lfs.CosineClassifier` head's (cos, scale)).
        optimizer_fn: ``parameters -> Optimizer``. For the vectorized executor it receives the
            B-stacked parameters, so it must act elementwise (SGD, momentum, weight decay, Adam
            do; anything with per-tensor norms, such as LARS or norm clipping, does not).
        loss_fn: ``(output, target, theta) -> scalar loss``; must be vmappable.
        train_data / val_data: ``(inputs, targets)`` tensors. Override :meth:`train_batches` and
            :meth:`val_batches` to stream data instead.
        batch_size: minibatch size (the last incomplete batch is dropped so copies stay aligned).
        scheduler_fn: ``optimizer -> scheduler`` stepped once per epoch, or None.
        predict_fn: ``output -> scores`` used for the reward (default :func:`default_predict`).
        reward_fn: ``(scores of the whole validation split, targets) -> float`` (default accuracy).
        augment_fn: ``(inputs, generator) -> inputs`` applied per training batch, or None.
        eval_batch_size: batch size for the validation pass.
        eval_kwargs: keyword arguments of the model's forward in the validation pass (e.g.
            ``{"embed": True}`` for a model that returns embeddings for a retrieval reward).
        device: where the model and batches live (default: where ``model_fn`` puts the model).

    ``train_data`` / ``val_data`` may be None in a subclass that overrides :meth:`train_batches`
    and :meth:`val_batches` (e.g. to stream a torch Dataset through a DataLoader).
    """

    def __init__(self, model_fn: Callable[[], nn.Module], optimizer_fn: Callable[[Iterable[Tensor]], torch.optim.Optimizer],
                 loss_fn: Callable, train_data: tuple[Tensor, Tensor], val_data: tuple[Tensor, Tensor],
                 batch_size: int, scheduler_fn: Callable | None = None, predict_fn: Callable = default_predict,
                 reward_fn: Callable[[Tensor, Tensor], float] = accuracy_reward,
                 augment_fn: Callable | None = None, eval_batch_size: int = 1024, eval_kwargs: dict | None = None,
                 device: str | torch.device | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if train_data is not None and len(train_data[0]) < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the training split ({len(train_data[0])} examples)")
        self.model_fn, self.optimizer_fn, self.scheduler_fn = model_fn, optimizer_fn, scheduler_fn
        self.loss_fn, self.predict_fn, self.reward_fn, self.augment_fn = loss_fn, predict_fn, reward_fn, augment_fn
        self.train_data, self.val_data = train_data, val_data
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.eval_kwargs = dict(eval_kwargs or {})
        self.device = torch.device(device) if device is not None else None

    # -- data -----------------------------------------------------------------------------
    def train_batches(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's minibatches for one copy, in an order fixed by ``seed``."""
        g = torch.Generator().manual_seed(seed)
        x, y = self.train_data
        perm = torch.randperm(len(x), generator=g)
        for start in range(0, len(x) - self.batch_size + 1, self.batch_size):
            idx = perm[start : start + self.batch_size]
            xb = x[idx]
            if self.augment_fn is not None:
                xb = self.augment_fn(xb, g)
            yield xb, y[idx]

    def num_batches(self) -> int:
        """Minibatches per training epoch (the last incomplete one is dropped); counted for a
        subclass that streams its own data."""
        if self.train_data is None:
            return sum(1 for _ in self.train_batches(0))
        return len(self.train_data[0]) // self.batch_size

    def val_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.val_data
        for start in range(0, len(x), self.eval_batch_size):
            yield x[start : start + self.eval_batch_size], y[start : start + self.eval_batch_size]

    # -- Task -----------------------------------------------------------------------------
    def to_device(self, t: Tensor) -> Tensor:
        return t if self.device is None else t.to(self.device, non_blocking=True)

    def make_state(self) -> TrainState:
        model = self.model_fn()
        if self.device is not None:
            model = model.to(self.device)
        optimizer = self.optimizer_fn(model.parameters())
        scheduler = self.scheduler_fn(optimizer) if self.scheduler_fn is not None else None
        return TrainState(model, optimizer, scheduler)

    def train_epoch(self, state: TrainState, theta: Tensor, epoch: int, seed: int,
                    stop_invalid: bool = True) -> EpochStats:
        """One epoch; a non-finite loss ends it at once (``stop_invalid``), or, with
        ``stop_invalid=False``, every step is taken whatever the loss (the epoch is then not finite)."""
        model, opt = state.model, state.optimizer
        model.train()
        total, steps, finite = 0.0, 0, True
        for x, y in self.train_batches(seed):
            x, y = self.to_device(x), self.to_device(y)
            loss = self.loss_fn(model(x), y, theta)
            if not torch.isfinite(loss):
                if stop_invalid:
                    return EpochStats(loss=math.nan, finite=False, steps=steps)
                finite = False
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        if state.scheduler is not None:
            state.scheduler.step()
        return EpochStats(loss=total / max(steps, 1), finite=finite and parameters_finite(model), steps=steps)

    @torch.no_grad()
    def reward(self, state: TrainState) -> float:
        model = state.model
        model.eval()
        scores, targets = [], []
        for x, y in self.val_batches():
            scores.append(self.predict_fn(model(self.to_device(x), **self.eval_kwargs)).cpu())
            targets.append(y)
        return float(self.reward_fn(torch.cat(scores), torch.cat(targets)))
