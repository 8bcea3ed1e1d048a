"""An evolutionary loss search as one run of a table (AutoLoss-Zero, CVPR 2022; CSE-Autoloss,
ICLR 2021): the method's :class:`~lfs.evolve.evolution.EvolutionSearch` over loss expressions,
each candidate that survives the screening trained from scratch on the run's data for
``evolve.proxy_epochs`` epochs (the proxy task) and scored on the validation split; then the
best formula is retrained from scratch with the table's full schedule and evaluated on the test
split, like every other method's model.

Budget and proxy come from the ``evolve`` config group (the tier sets them); the method file
says which techniques are on (``screening``: LRP, convergence verification; ``evolution.gec``;
``proxy.stop_invalid``: stop a candidate's training at its first non-finite loss, else train it
to the end whatever happens, the naive evolution of AutoLoss-Zero's ablation).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .data import DatasetError


def build_evolution(cfg: dict, method) -> dict:
    """``{"family", "evolution", "screening", "stop_invalid"}`` of an evolution method for ``cfg``
    (bad fields raise ``ValueError`` naming them)."""
    from lfs.evolve.evolution import EvolutionConfig
    from lfs.evolve.screening import ScreeningConfig
    from lfs.family import make_family

    fam_kw = {k: v for k, v in method.family.items() if k != "name"}
    family = make_family("expression", **fam_kw)
    budget = cfg.get("evolve") or {}
    fields = {**method.evolution, "operators": family.operators, "seed": int(cfg["seed"]),
              "max_evaluations": budget.get("max_evaluations"), "max_seconds": budget.get("max_seconds")}
    try:
        evolution = EvolutionConfig(**fields)
        screening = ScreeningConfig(**method.screening) if method.screening else None
    except TypeError as e:
        raise ValueError(f"{e} (fields of lfs.evolve.evolution.EvolutionConfig / screening.ScreeningConfig)") from None
    stop_invalid = bool((method.proxy or {}).get("stop_invalid", True))
    epochs = budget.get("proxy_epochs", 1)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"evolve.proxy_epochs must be an integer >= 1, got {epochs!r}")
    return {"family": family, "evolution": evolution, "screening": screening, "stop_invalid": stop_invalid}


def train_with(task, candidate, epochs: int, seed: int, stop_invalid: bool = True):
    """A fresh model (seeded) trained ``epochs`` epochs with ``candidate``: ``(state, finite)``.
    ``stop_invalid``: stop at the first non-finite loss (AutoLoss-Zero's technique); otherwise take
    every step whatever happens (the naive proxy, :meth:`lfs.SupervisedTask.train_epoch`)."""
    from lfs.task import sample_seed

    torch.manual_seed(seed)
    state = task.make_state()
    for epoch in range(epochs):
        stats = task.train_epoch(state, candidate, epoch, sample_seed(seed, epoch, 0), stop_invalid=stop_invalid)
        if not stats.finite and stop_invalid:
            return state, False
    return state, True  # the naive proxy trains to the end and lets the validation reward judge the result


def run_evolution(cfg: dict, built: dict, checkpoint: str | Path | None, progress) -> tuple:
    """The search, then the retraining of its best formula: ``(model, history, extra, data)``."""
    from benchmarks import runner
    from benchmarks.methods import with_values
    from lfs.evolve.evolution import EvolutionSearch

    family, seed = built["family"], int(cfg["seed"])
    proxy_epochs = int(cfg["evolve"]["proxy_epochs"])
    try:  # a value the data cannot serve, as for every run (runner.train)
        data = runner.load_data(cfg)
        model_fn = runner.model_factory(cfg, data)
        proxy = runner.make_task(with_values(cfg, {"train.epochs": proxy_epochs}), data, model_fn, family.loss)
        task = runner.make_task(cfg, data, model_fn, family.loss)
    except DatasetError:
        raise
    except (ValueError, TypeError) as e:
        raise runner.setup_error(e) from None

    def evaluate(expression) -> float:
        state, finite = train_with(proxy, expression, proxy_epochs, seed, built["stop_invalid"])
        if not finite:
            return -math.inf
        reward = proxy.reward(state)
        return reward if math.isfinite(reward) else -math.inf

    def said(item):
        what = f"fitness {item.fitness:.4f}" if item.fitness is not None else f"rejected: {item.reason}"
        progress.say(f"  {item.formula} {what}")

    evaluate(family.identity())  # warm-up (first-call costs), so that the search's clock times the search
    start = time.perf_counter()
    search = EvolutionSearch(evaluate, built["evolution"], built["screening"], checkpoint=checkpoint,
                             on_evaluated=said)
    result = search.run()
    search_seconds = time.perf_counter() - start
    # the best formula, retrained from scratch with the table's schedule
    best = family.expression(result.best)
    t0 = time.perf_counter()
    state, _ = train_with(task, best, int(cfg["train"]["epochs"]), seed)
    explored = len(result.history)
    extra = {"loss": result.best, "family": "expression", "best_fitness": result.best_fitness,
             "val_reward": task.reward(state), "evaluations": result.evaluations, "explored": explored,
             "explored_per_hour": explored / max(result.seconds, 1e-9) * 3600, "rejected": result.rejected,
             "stopped_by": result.stopped_by, "search_seconds": result.seconds, "generations": result.generations,
             "rejected_share_of_search_time": _rejected_share(result.history),
             "train_seconds": search_seconds + time.perf_counter() - t0,
             "model_epochs": result.evaluations * proxy_epochs + int(cfg["train"]["epochs"])}
    return state.model, [asdict(h) for h in result.history], extra, data


def _rejected_share(history) -> float | None:
    spent = [(h.screen_seconds + h.seconds, h.fitness is None) for h in history]
    total = sum(s for s, _ in spent)
    return None if total <= 0 else sum(s for s, rejected in spent if rejected) / total
