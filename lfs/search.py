"""The bilevel search loop (AM-LFS, Algorithm 1), family- and searcher-agnostic.

Each epoch t:

1. the searcher proposes B candidates of the loss family (AM-LFS: B thetas from ``N(mu_t, sigma I)``, Eq. 19),
2. B copies of the current state are trained for one epoch, copy i with the loss of candidate i,
3. every copy is scored on the validation split: ``R_i`` (Eq. 18),
4. the best copy ``i* = argmax_i R_i`` is taken (failed copies never win),
5. the searcher observes the rewards (AM-LFS: REINFORCE on mu with normalized rewards, Eq. 20),
6. if the searcher broadcasts, the best copy's state goes to every copy
   (``M_{omega_{t+1}} = M_{omega_t^{i*}}``); otherwise each copy keeps its own.

The final model is the best copy of the last epoch, without retraining.

What is searched is a :class:`~lfs.family.LossFamily` (what a candidate means as a loss) and a
:class:`~lfs.searcher.Searcher` (how candidates are proposed and what is learned). The defaults
are AM-LFS's: the piecewise-linear family with ``config.M`` intervals and the Gaussian REINFORCE
searcher in ``config.mode`` (``learn``, ``fixed``, ``random``, ``select``; see
:mod:`lfs.searchers.gaussian`) with ``config``'s sigma, lr, constraint and failed-reward options.
Pass ``family=`` and ``searcher=`` to :class:`LossSearch` for any other pair; those options of
``config`` then do not apply.

Failed samples. A copy whose training loss or parameters become non-finite, or whose reward is
not finite, is *failed*: its reward is recorded as NaN and it is never selected; the searcher is
told which copies failed. If every copy fails the search stops with :class:`SearchFailed`
(nothing could be selected).

Determinism: the same ``seed`` gives the same candidates, data orders, model initialization and
hence the same result (on the same hardware and executor).

Checkpoint and resume. With ``checkpoint=<path>``, the whole search state is saved atomically
after every epoch (:mod:`lfs.checkpoint`): the epoch, the copies' states (model, optimizer,
scheduler; only the broadcast best when every copy equals it), the searcher's state (AM-LFS: mu
and its Adam state), the search's generator, every process-wide RNG state, the per-epoch records
and the caller's ``user_state``. :meth:`LossSearch.run` resumes from it when the file exists, and
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

from . import checkpoint as ckpt
from .executor_registry import EXECUTORS, make_executor
from .executors import Executor
from .family import LossFamily, make_family
from .search_space import CONSTRAINTS
from .searcher import Searcher, make_searcher
from .task import Task, TrainState, sample_seed

log = logging.getLogger(__name__)



class SearchFailed(RuntimeError):
    """Every one of the B samples failed in an epoch."""


@dataclass
class SearchConfig:
    """Hyper-parameters of the outer level. Defaults are the paper's (§4.1).

    ``epochs``, ``B``, ``broadcast_optimizer``, ``executor`` and ``seed`` belong to the loop; ``M``
    is the default family's (:class:`~lfs.families.piecewise_linear.PiecewiseLinear`); ``mode``,
    ``sigma``, ``sigma_is``, ``lr``, ``policy_optimizer``, ``constraint`` and ``failed_reward``
    are the default searcher's (:class:`~lfs.searchers.gaussian.GaussianSearcher`).
    """

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
        need(self.constraint in CONSTRAINTS, "constraint", f"must be one of {CONSTRAINTS}")
        need(self.executor in EXECUTORS, "executor", f"must be one of {EXECUTORS}")
        default_searcher(self)  # the default searcher checks its own options (mode, sigma, lr, ...)


@dataclass
class EpochRecord:
    """What one epoch of the search did: the candidates (the family's JSON), rewards, the choice,
    and the searcher's own record (AM-LFS: ``mu``, ``mu_next``, ``normalized_rewards``; Figure 3
    plots mu over epochs)."""

    epoch: int
    candidates: list
    rewards: list[float]  # raw rewards, NaN for failed samples
    failed: list[bool]
    chosen: int
    best_reward: float
    train_loss: list[float]
    seconds: float
    searcher: dict = field(default_factory=dict)

    # the Gaussian searcher's record, by name (empty where a searcher keeps no such thing)
    @property
    def thetas(self) -> list:
        return self.candidates

    @property
    def mu(self) -> list[float]:
        return self.searcher.get("mu", [])

    @property
    def mu_next(self) -> list[float]:
        return self.searcher.get("mu_next", [])

    @property
    def normalized_rewards(self) -> list[float]:
        return self.searcher.get("normalized_rewards", [])


@dataclass
class SearchResult:
    state: TrainState  # the final model (best copy of the last epoch), optimizer, scheduler
    reward: float
    chosen: int
    history: list[EpochRecord] = field(default_factory=list)
    searcher_state: dict | None = None

    @property
    def policy(self) -> dict | None:
        """The Gaussian searcher's policy state (``mu``, its optimizer), where there is one."""
        return (self.searcher_state or {}).get("policy")

    @property
    def mu_trajectory(self) -> list[list[float]]:
        """mu_0, mu_1, ..., mu_T (a Gaussian searcher's)."""
        if not self.history or not self.history[0].mu:
            return []
        return [r.mu for r in self.history] + [self.history[-1].mu_next]


class LossSearch:
    """Runs the search loop on a :class:`~lfs.task.Task`.

    Example::

        search = LossSearch(task, SearchConfig(epochs=20, B=8))
        result = search.run()
        result.state.model  # the selected model

    ``family`` / ``searcher``: a :class:`~lfs.family.LossFamily` and a
    :class:`~lfs.searcher.Searcher` (default: AM-LFS's, from ``config``). The task's ``loss_fn``
    receives the candidates (usually it is ``family.loss``).
    """

    def __init__(self, task: Task, config: SearchConfig, executor: Executor | None = None,
                 on_epoch: Callable[[EpochRecord], None] | None = None, checkpoint: str | Path | None = None,
                 family: LossFamily | None = None, searcher: Searcher | None = None):
        self.task, self.config = task, config
        self.family = family if family is not None else make_family("piecewise_linear", M=config.M)
        self.searcher = searcher if searcher is not None else default_searcher(config)
        self.searcher.setup(self.family)
        if executor is None and config.executor == "vectorized" and not self.family.stackable:
            raise ValueError(f"search.executor=vectorized needs a loss family that stacks its candidates; "
                             f"{self.family.name or type(self.family).__name__!r} does not: use sequential or auto")
        self.executor = executor if executor is not None else make_executor(config.executor)
        self.on_epoch = on_epoch
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.user_state: dict[str, Any] = {}  # the caller's own resumable state (saved with each checkpoint)
        self.resumed_from: int | None = None  # the epochs done when a run resumed (None: started fresh)
        self.resumed_path: Path | None = None  # the checkpoint file read (<checkpoint>.prev if the newest was damaged)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history: list[EpochRecord] = []
        self.epoch = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            state = task.make_state()
        self.executor.setup(task, config.B, state, family=self.family)

    def step(self) -> EpochRecord:
        """One epoch of the loop."""
        cfg, epoch = self.config, self.epoch
        start = time.perf_counter()
        candidates = self.searcher.propose(cfg.B, self.generator)
        seeds = [sample_seed(cfg.seed, epoch, i) for i in range(cfg.B)]
        rewards, failed, stats = self.executor.train(candidates, epoch, seeds)
        if bool(failed.all()):
            raise SearchFailed(f"all B={cfg.B} samples failed (non-finite loss, parameters or reward) at epoch {epoch}; "
                               "try a smaller learning rate or sigma")
        finite_rewards = torch.where(failed, torch.full_like(rewards, -math.inf), rewards)
        chosen = int(torch.argmax(finite_rewards))  # first index among ties
        searcher_record = self.searcher.observe(candidates, rewards, failed)
        self.executor.synchronize(self.searcher.tensors())
        if self.searcher.broadcast:
            self.executor.broadcast(chosen, failed, cfg.broadcast_optimizer)
        record = EpochRecord(
            epoch=epoch, candidates=[self.family.to_json(c) for c in candidates], rewards=rewards.tolist(),
            failed=failed.tolist(), chosen=chosen, best_reward=float(rewards[chosen]),
            train_loss=[s.loss for s in stats], seconds=time.perf_counter() - start, searcher=searcher_record)
        self.history.append(record)
        self.epoch += 1
        log.debug("epoch %d: best reward %.4f (sample %d), %d failed, %.1fs", epoch, record.best_reward, chosen,
                  int(failed.sum()), record.seconds)
        if self.on_epoch is not None:
            self.on_epoch(record)
        return record

    # -- checkpoint / resume ---------------------------------------------------------------
    def identity(self) -> dict:
        """What a checkpoint must agree on to be resumed: the config (less epochs and executor),
        the family's and the searcher's names and hyper-parameters."""
        mine = {k: v for k, v in asdict(self.config).items() if k not in ("epochs", "executor")}
        return {**mine, "family": self.family.name, **{f"family.{k}": v for k, v in self.family.config().items()},
                "searcher": self.searcher.name, **{f"searcher.{k}": v for k, v in self.searcher.config().items()}}

    def state_dict(self) -> dict:
        cfg = self.config
        # After a full broadcast every copy equals the chosen one: save that one only.
        full_broadcast = self.searcher.broadcast and cfg.broadcast_optimizer and self.history
        shared = self.history[-1].chosen if full_broadcast else None
        return {"version": 2, "config": asdict(cfg), "identity": self.identity(), "epoch": self.epoch,
                "executor": self.executor.state_dict(shared=shared), "searcher": self.searcher.state_dict(),
                "generator": self.generator.get_state(), "history": [asdict(r) for r in self.history],
                "rng": ckpt.rng_state(), "user": self.user_state}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version", 1) < 2:
            raise ValueError("the checkpoint was written by lfs before loss families (version 1); "
                             "delete it to start over")
        mine, theirs = self.identity(), dict(state["identity"])
        # epochs may grow; the executor may change (states are saved per copy, in any executor's format)
        diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if diff:
            k = diff[0]
            key = k if "." in k or k in ("family", "searcher") else f"search.{k}"
            raise ValueError(f"the checkpoint was written by a search with {key}={theirs.get(k)!r}, this one has "
                             f"{key}={mine.get(k)!r}; delete the checkpoint to start over")
        if state["epoch"] > self.config.epochs:
            raise ValueError(f"the checkpoint is at epoch {state['epoch']}, past this search's epochs={self.config.epochs}")
        self.executor.load_state_dict(state["executor"])
        self.searcher.load_state_dict(state["searcher"])
        self.generator.set_state(state["generator"])
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
        found = ckpt.load_with_source(self.checkpoint)
        if found is None:
            return False
        state, self.resumed_path = found
        self.load_state_dict(state)
        self.resumed_from = self.epoch
        log.info("resumed at epoch %d/%d from %s", self.epoch + 1, self.config.epochs, self.resumed_path)
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
                            history=list(self.history), searcher_state=self.searcher.state_dict())


def default_searcher(config: SearchConfig) -> Searcher:
    """AM-LFS's searcher from ``config``: Gaussian REINFORCE in ``config.mode``."""
    return make_searcher("gaussian", mode=config.mode, sigma=config.sigma, sigma_is=config.sigma_is, lr=config.lr,
                         policy_optimizer=config.policy_optimizer, constraint=config.constraint,
                         failed_reward=config.failed_reward)


def search(task: Task, config: SearchConfig | None = None, *, family: LossFamily | None = None,
           searcher: Searcher | None = None, **overrides) -> SearchResult:
    """Run a loss search (AM-LFS's Algorithm 1) on ``task`` and return its :class:`SearchResult`.

    ``lfs.search(task, epochs=10)`` runs AM-LFS with the paper's settings; any option of
    :class:`SearchConfig` may be given by keyword (or pass a ``config``; keywords then override
    its fields). Options and their defaults:

    * ``epochs`` (required): outer epochs, one training epoch of every copy each.
    * ``B=32``: copies (sampled losses) trained per epoch (the paper's B).
    * ``M=6``: intervals of the piecewise-linear family (the default family).
    * ``mode="learn"``: the default searcher's mode: ``learn`` (AM-LFS), ``fixed`` (the fixed
      distribution), ``random`` (random search over static losses), ``select`` (best-of-B with
      cross entropy only).
    * ``sigma=0.2``, ``sigma_is="variance"``: the sampling Gaussian N(mu, sigma I) (Eq. 19);
      ``"std"`` reads sigma as the standard deviation.
    * ``lr=0.05``, ``policy_optimizer="adam"``: the step on mu (Eq. 20; ``"sgd"``: the plain step;
      ``"natural"``: ours, a step of lr sampling stds along the natural gradient).
    * ``constraint="positive"``: sample inside the paper's space (``"none"``: the raw Gaussian).
    * ``broadcast_optimizer=True``: the best copy's optimizer state is broadcast with its weights.
    * ``failed_reward="min"``: a failed copy's reward in the update (``"drop"``: left out).
    * ``executor="sequential"``: how the B copies are trained: ``sequential`` (any task),
      ``vectorized`` (torch.func, one batched model), ``auto``, ``distributed``.
    * ``seed=0``: the candidates, data order and initialization.

    ``family=`` and ``searcher=`` replace the default family and searcher (see :class:`LossSearch`,
    :func:`lfs.make_family`, :func:`lfs.make_searcher`); the searcher options above then do not
    apply. For a checkpoint (resume after a kill) or a per-epoch callback, use :class:`LossSearch`.

    Example: ``lfs.search(task, epochs=3, B=4, executor="vectorized", seed=0)`` (the README's).
    """
    if config is None:
        config = SearchConfig(**overrides)
    elif overrides:
        config = SearchConfig(**{**asdict(config), **overrides})
    return LossSearch(task, config, family=family, searcher=searcher).run()
