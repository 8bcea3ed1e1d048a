"""CSE-Autoloss's model optimization simulation (Liu et al., ICLR 2021, Section 3.2): a candidate
loss trains a fresh model for a few steps on a tiny subset of the training data, one example per
class ("#class images"); a candidate under which the model's metric on that subset does not
improve is rejected before any proxy training (reason ``failed optimization simulation``).

The paper gives the subset (one image per category) and the rule (drop poorly performing
candidates); every number here is ours and a field of :class:`~.screening.ScreeningConfig`
(REPRODUCE.md, "Evolved losses"): ``simulate_per_class`` examples per class (1), drawn by a
permutation seeded by ``seed``; ``simulate_steps`` full-batch steps (20) with the task's own
optimizer (the table's learning rate, momentum and weight decay; no schedule); the metric is the
top-1 accuracy of the model's class scores (its training head) on the same subset, also for a
task whose reward is another metric (retrieval); the score is accuracy after minus before,
and the candidate passes when the score is above ``simulate_threshold`` (0: it must improve).

It needs a task that holds its training split in memory (:class:`lfs.SupervisedTask` with
``train_data``); the model is built under its own seed inside ``torch.random.fork_rng`` (CPU and
the task's GPU), so the simulation leaves the caller's random state as it was. A fresh model that
is already right on every example of the subset makes the simulation useless; that is one line
at construction.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..task import SupervisedTask, default_predict


def one_per_class(target: Tensor, per_class: int = 1, seed: int = 0) -> Tensor:
    """Indices of ``per_class`` examples of every class present in ``target`` (a seeded draw),
    in class order."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(target), generator=g)
    picked: dict[int, list[int]] = {}
    for i in perm.tolist():
        bucket = picked.setdefault(int(target[i]), [])
        if len(bucket) < per_class:
            bucket.append(i)
    return torch.tensor([i for c in sorted(picked) for i in picked[c]], dtype=torch.long)


class OptimizationSimulation:
    """``OptimizationSimulation(task, steps, per_class, seed)(candidate) -> score``: the accuracy
    gained on the subset after ``steps`` steps of training with ``candidate`` (``-inf`` when the
    loss or the model stops being finite)."""

    def __init__(self, task: SupervisedTask, steps: int = 20, per_class: int = 1, seed: int = 0):
        if getattr(task, "train_data", None) is None:
            raise ValueError("the model optimization simulation needs a task with its training split in memory "
                             "(SupervisedTask.train_data); turn screening.simulate off for a streamed dataset")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"screening.simulate_steps must be an integer >= 1, got {steps!r}")
        x, y = task.train_data
        idx = one_per_class(y, per_class, seed)
        self.task, self.steps, self.seed = task, steps, seed
        self.x, self.y = task.to_device(x[idx]), task.to_device(y[idx])
        with self._forked():  # the fresh model's accuracy, the same for every candidate
            torch.manual_seed(self.seed)
            self.before = self.accuracy(task.make_state().model)
        if self.before >= 1.0:
            raise ValueError(f"the model optimization simulation's fresh model is already right on all {len(self.y)} "
                             "of its examples, so no candidate can improve it; raise screening.simulate_per_class "
                             "or turn screening.simulate off")

    def _forked(self):
        """The caller's random state (CPU, and the task's GPU if it has one) restored afterwards."""
        device = getattr(self.x, "device", None)
        gpus = [device.index or 0] if device is not None and device.type == "cuda" else []
        return torch.random.fork_rng(devices=gpus)

    def accuracy(self, model) -> float:
        """Top-1 accuracy of the model's class scores on the subset (its training head: logits,
        or ``cos * scale``), whatever the task's own reward is (e.g. retrieval)."""
        model.eval()
        with torch.no_grad():
            scores = default_predict(model(self.x))
        return float((scores.argmax(-1) == self.y).double().mean())

    def __call__(self, candidate) -> float:
        with self._forked():
            torch.manual_seed(self.seed)
            state = self.task.make_state()
            model, opt = state.model, state.optimizer
            for _ in range(self.steps):
                model.train()
                loss = self.task.loss_fn(model(self.x), self.y, candidate)
                if not torch.isfinite(loss):
                    return -math.inf
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                return -math.inf
            return self.accuracy(model) - self.before


__all__ = ["OptimizationSimulation", "one_per_class"]
