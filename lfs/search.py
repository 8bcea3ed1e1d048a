"""The bilevel search loop of AM-LFS (Algorithm 1), task-independent.

Each epoch t:

1. sample B thetas from ``N(mu_t, sigma I)`` (Eq. 19),
2. train B copies of the current state for one epoch, copy i with the loss ``L^{theta_i}``,
3. score every copy on the validation split: ``R(theta_i)`` (Eq. 18),
4. take the best copy ``i* = argmax_i R(theta_i)``,
5. update mu with REINFORCE on the normalized rewards (Eq. 20),
6. broadcast the best copy's state to all copies (``M_{omega_{t+1}} = M_{omega_t^{i*}}``).

The final model is the best copy of the last epoch, without retraining.

Modes (``SearchConfig.mode``):

* ``learn``: AM-LFS as above.
* ``fixed``: the paper's fixed-distribution ablation (§4.6): thetas sampled from the initial
  distribution every epoch, best broadcast, mu never updated.
* ``random``: classic random search: B static losses sampled once from the initial distribution,
  each copy trained with its own theta for the whole schedule (no broadcast); the copy with the
  best validation reward at the end wins.
* ``select``: the control: B copies all trained with cross entropy (identity theta), best
  broadcast each epoch: best-of-B selection without loss diversity.

Failed samples. A copy whose training loss or parameters become non-finite, or whose reward is
not finite, is *failed*: its reward is recorded as NaN, it is never selected, and for the mu
update it gets the lowest finite reward of the epoch (``failed_reward="min"``) or is left out of
the update (``failed_reward="drop"``). If every copy fails the search stops with
:class:`SearchFailed` (nothing could be selected).

Determinism: the same ``seed`` gives the same thetas, data orders, model initialization and
hence the same result (on the same hardware and executor).

Checkpoint and resume. With ``checkpoint=<path>``, the whole search state is saved atomically
after every epoch (:mod:`lfs.checkpoint`): the epoch, the copies' states (model, optimizer,
scheduler; only the broadcast best when every copy equals it), the policy (mu and its Adam
state), the theta sampler's generator, every process-wide RNG state, the per-epoch records and
the caller's ``user_state``. :meth:`LossSearch.run` resumes from it when the file exists, and
ends with the same result as an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from . import checkpoint as ckpt
from .executors import EXECUTORS, Executor, make_executor
from .policy import OPTIMIZERS, SIGMA_IS, GaussianPolicy, normalize_rewards
from .search_space import CONSTRAINTS, identity_theta
from .task import Task, TrainState, sample_seed

log = logging.getLogger(__name__)

MODES = ("learn", "fixed", "random", "select")
FAILED_REWARD = ("min", "drop")


class SearchFailed(RuntimeError):
    """Every one of the B samples failed in an epoch."""


@dataclass
class SearchConfig:
    """Hyper-parameters of the outer level. Defaults are the paper's (§4.1)."""

    epochs: int
    B: int = 32
    M: int = 6
    mode: str = "learn"
    sigma: float = 0.2
    sigma_is: str = "variance"
    lr: float = 0.05
    policy_optimizer: str = "adam"
    constraint: str = "positive"
    broadcast_optimizer: bool = True
    failed_reward: str = "min"
    executor: str = "sequential"
    seed: int = 0

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ValueError(f"search.{key} {what}, got {getattr(self, key)!r}")

        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "must be an integer >= 1")
        need(isinstance(self.B, int) and self.B >= 1, "B", "must be an integer >= 1")
        need(isinstance(self.M, int) and self.M >= 1, "M", "must be an integer >= 1")
        need(self.mode in MODES, "mode", f"must be one of {MODES}")
        need(isinstance(self.sigma, (int, float)) and self.sigma > 0 and math.isfinite(self.sigma), "sigma", "must be > 0")
        need(self.sigma_is in SIGMA_IS, "sigma_is", f"must be one of {SIGMA_IS}")
        need(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "must be > 0")
        need(self.policy_optimizer in OPTIMIZERS, "policy_optimizer", f"must be one of {OPTIMIZERS}")
        need(self.failed_reward in FAILED_REWARD, "failed_reward", f"must be one of {FAILED_REWARD}")
        need(self.constraint in CONSTRAINTS, "constraint", f"must be one of {CONSTRAINTS}")
        need(self.executor in EXECUTORS, "executor", f"must be one of {EXECUTORS}")


@dataclass
class EpochRecord:
    """What one epoch of the search did (Figure 3 plots ``mu`` over epochs)."""

    epoch: int
    mu: list[float]  # the mean the thetas were sampled from (mu_t)
    mu_next: list[float]  # mu_{t+1} after the update (== mu in fixed/random/select)
    thetas: list[list[float]]
    rewards: list[float]  # raw rewards, NaN for failed samples
    normalized_rewards: list[float]  # what entered Eq. 20 (empty when mu is not updated)
    failed: list[bool]
    chosen: int
    best_reward: float
    train_loss: list[float]
    seconds: float


@dataclass
class SearchResult:
    state: TrainState  # the final model (best copy of the last epoch), optimizer, scheduler
    reward: float
    chosen: int
    history: list[EpochRecord] = field(default_factory=list)
    policy: dict | None = None

    @property
    def mu_trajectory(self) -> list[list[float]]:
        """mu_0, mu_1, ..., mu_T."""
        if not self.history:
            return []
        return [r.mu for r in self.history] + [self.history[-1].mu_next]


class LossSearch:
    """Runs Algorithm 1 on a :class:`~lfs.task.Task`.

    Example::

        search = LossSearch(task, SearchConfig(epochs=20, B=8))
        result = search.run()
        result.state.model  # the selected model
    """

    def __init__(self, task: Task, config: SearchConfig, executor: Executor | None = None,
                 on_epoch: Callable[[EpochRecord], None] | None = None, checkpoint: str | Path | None = None):
        self.task, self.config = task, config
        self.executor = executor if executor is not None else make_executor(config.executor)
        self.on_epoch = on_epoch
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.user_state: dict[str, Any] = {}  # the caller's own resumable state (saved with each checkpoint)
        self.resumed_from: int | None = None  # the epoch a run resumed at (None: started fresh)
        self.policy = GaussianPolicy(config.M, config.sigma, config.sigma_is, config.lr, config.policy_optimizer)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history: list[EpochRecord] = []
        self.epoch = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            state = task.make_state()
        self.executor.setup(task, config.B, state)
        self.static_thetas = self.sample_policy() if config.mode == "random" else None

    def sample_policy(self) -> Tensor:
        return self.policy.sample(self.config.B, self.generator, constraint=self.config.constraint)

    def sample_thetas(self) -> Tensor:
        cfg = self.config
        if cfg.mode == "select":
            return identity_theta(cfg.M, dtype=torch.float64).expand(cfg.B, -1).clone()
        if cfg.mode == "random":
            return self.static_thetas
        return self.sample_policy()

    def step(self) -> EpochRecord:
        """One epoch of Algorithm 1."""
        cfg, epoch = self.config, self.epoch
        start = time.perf_counter()
        mu = self.policy.mu.detach().tolist()
        thetas = self.sample_thetas()
        seeds = [sample_seed(cfg.seed, epoch, i) for i in range(cfg.B)]
        rewards, failed, stats = self.executor.train(thetas, epoch, seeds)
        if bool(failed.all()):
            raise SearchFailed(f"all B={cfg.B} samples failed (non-finite loss, parameters or reward) at epoch {epoch}; "
                               "try a smaller learning rate or sigma")
        finite_rewards = torch.where(failed, torch.full_like(rewards, -math.inf), rewards)
        chosen = int(torch.argmax(finite_rewards))  # first index among ties
        normalized: list[float] = []
        if cfg.mode == "learn":
            if cfg.failed_reward == "min":
                r = torch.where(failed, rewards[~failed].min().expand_as(rewards), rewards)
                update_thetas = thetas
            else:
                r, update_thetas = rewards[~failed], thetas[~failed]
            normalized = normalize_rewards(r).tolist()
            self.policy.update(update_thetas, r)
            self.executor.synchronize(self.policy.tensors())
        if cfg.mode != "random":
            self.executor.broadcast(chosen, failed, cfg.broadcast_optimizer)
        record = EpochRecord(
            epoch=epoch, mu=mu, mu_next=self.policy.mu.detach().tolist(), thetas=thetas.tolist(),
            rewards=rewards.tolist(), normalized_rewards=normalized, failed=failed.tolist(), chosen=chosen,
            best_reward=float(rewards[chosen]), train_loss=[s.loss for s in stats],
            seconds=time.perf_counter() - start)
        self.history.append(record)
        self.epoch += 1
        log.debug("epoch %d: best reward %.4f (sample %d), %d failed, %.1fs", epoch, record.best_reward, chosen,
                 int(failed.sum()), record.seconds)
        if self.on_epoch is not None:
            self.on_epoch(record)
        return record

    # -- checkpoint / resume ---------------------------------------------------------------
    def state_dict(self) -> dict:
        cfg = self.config
        # After a full broadcast every copy equals the chosen one: save that one only.
        full_broadcast = cfg.mode != "random" and cfg.broadcast_optimizer and self.history
        shared = self.history[-1].chosen if full_broadcast else None
        return {"version": 1, "config": asdict(cfg), "epoch": self.epoch,
                "executor": self.executor.state_dict(shared=shared), "policy": self.policy.state_dict(),
                "generator": self.generator.get_state(), "static_thetas": self.static_thetas,
                "history": [asdict(r) for r in self.history], "rng": ckpt.rng_state(), "user": self.user_state}

    def load_state_dict(self, state: dict) -> None:
        mine, theirs = asdict(self.config), dict(state["config"])
        # epochs may grow; the executor may change (states are saved per copy, in any executor's format)
        diff = [k for k in mine if k not in ("epochs", "executor") and mine[k] != theirs.get(k)]
        if diff:
            k = diff[0]
            raise ValueError(f"the checkpoint was written by a search with search.{k}={theirs.get(k)!r}, this one has "
                             f"search.{k}={mine[k]!r}; delete the checkpoint to start over")
        if state["epoch"] > self.config.epochs:
            raise ValueError(f"the checkpoint is at epoch {state['epoch']}, past this search's epochs={self.config.epochs}")
        self.executor.load_state_dict(state["executor"])
        self.policy.load_state_dict(state["policy"])
        self.generator.set_state(state["generator"])
        self.static_thetas = state["static_thetas"]
        self.history = [EpochRecord(**r) for r in state["history"]]
        self.user_state = state["user"]
        self.epoch = state["epoch"]
        ckpt.set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        state = self.state_dict()  # collective for a distributed executor: every process builds it
        if getattr(self.executor, "is_writer", True):
            ckpt.save(self.checkpoint, state)

    def resume(self) -> bool:
        """Load the checkpoint if there is one; True if the search resumed."""
        if self.checkpoint is None:
            return False
        state = ckpt.load(self.checkpoint)
        if state is None:
            return False
        self.load_state_dict(state)
        self.resumed_from = self.epoch
        log.info("resumed from %s at epoch %d", self.checkpoint, self.epoch)
        return True

    def run(self) -> SearchResult:
        """Run (or, with a checkpoint on disk, resume) the search to ``config.epochs``."""
        if self.resumed_from is None and not self.history:
            self.resume()
        while self.epoch < self.config.epochs:
            self.step()
            self.save_checkpoint()
        last = self.history[-1]
        return SearchResult(state=self.executor.export(last.chosen), reward=last.best_reward, chosen=last.chosen,
                            history=list(self.history), policy=self.policy.state_dict())


def search(task: Task, config: SearchConfig | None = None, **overrides) -> SearchResult:
    """Convenience wrapper: ``search(task, epochs=10, B=8)``."""
    if config is None:
        config = SearchConfig(**overrides)
    elif overrides:
        config = SearchConfig(**{**asdict(config), **overrides})
    return LossSearch(task, config).run()
