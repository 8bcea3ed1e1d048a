"""One run of a table: data -> model -> method (a loss search or one model) -> metrics.

Kept free of Hydra: :func:`run` takes the composed config as a plain nested dict (``cfg``), so
it can be called from tests and from other launchers. ``benchmarks/run.py`` is the Hydra entry.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

import baselines
import lfs
from lfs import checkpoint as lfs_checkpoint
from lfs.distributed import environment as distributed_environment
from lfs.executors import load_train_state, restore_state, train_state_dict
from lfs.search import EpochRecord

from . import protocols, results
from .data import DatasetError
from .config import ConfigError, build_method, check_device, resumable, search_config, validate, validate_method  # noqa: F401  (ConfigError: re-exported)


def set_threads(cfg: dict) -> int:
    """This process's CPU arithmetic for a run; returns its torch thread count.

    * torch threads: ``threads`` if set, else the CPUs SLURM allocated, else torch's default;
    * ``flush_denormal`` (default true): float32 results below 1.2e-38 are flushed to zero on CPU
      (``torch.set_flush_denormal``). Operations on such denormal numbers are about 12x slower on
      x86 (benchmarks/perf), and some rows meet many (the face analogue's ``learn`` seed 0: 103.5 s
      without, 57.6 s with, in exploratory runs). It is a per-thread mode of the calling thread: torch's other worker
      threads keep theirs (measured: no gain at 2 threads, whether it is set before or after
      torch's pool starts), so it pays where a run computes on one thread, as the mini tier's
      jobs do (``threads: 1``). Run-only
      (``config.RUN_ONLY``): it does not enter a row's setting, like ``device``; every committed
      mini row was reproduced bit for bit with it (REPRODUCE.md "Speed").
    """
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))  # (both ways: a joblib worker runs many jobs)
    n = cfg.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK")
    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def protocol_of(cfg: dict) -> protocols.Protocol:
    return protocols.get(cfg["dataset"]["protocol"])


def load_data(cfg: dict):
    """The dataset of ``cfg`` through its protocol (in memory, or streamed from disk)."""
    return protocol_of(cfg).load(cfg)


# ----------------------------------------------------------------------------------- model
def model_factory(cfg: dict, data) -> Callable[[], nn.Module]:
    from benchmarks.models import build_model

    m = cfg["model"]
    kwargs = dict(m.get("kwargs") or {})
    if "in_features" in kwargs and kwargs["in_features"] is None:
        kwargs["in_features"] = int(data.train[0].shape[-1])
    return lambda: build_model(m["name"], data.num_classes, normalize=m["normalize"], s=float(m["s"]), **kwargs)


def optimizer_factory(cfg: dict):
    t = cfg["train"]

    if t.get("optimizer", "sgd") == "adam":
        return lambda params: torch.optim.Adam(params, lr=t["lr"], weight_decay=t["weight_decay"])

    def make(params):
        return torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"],
                               nesterov=bool(t.get("nesterov", False)))

    return make


def scheduler_factory(cfg: dict):
    t = cfg["train"]
    if t["schedule"] == "cosine":
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t["epochs"])
    if t["schedule"] == "step":
        return lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(t["milestones"]),
                                                                gamma=t["gamma"])
    return None


# ------------------------------------------------------------------------------------ loss
def fixed_loss(name: str, kwargs: dict) -> Callable:
    """``(model output (cos, scale), target, candidate) -> loss`` of one baseline (the candidate,
    AM-LFS's identity theta, is ignored): one model trained with a hand-crafted loss."""
    train_loss = baselines.get(name).training_loss(**kwargs)

    def loss(output, target, candidate):
        cos, scale = output
        return train_loss(cos, target, scale)

    return loss


def make_task(cfg: dict, data, model_fn, loss_fn) -> lfs.SupervisedTask:
    """The lfs task of ``cfg``'s protocol."""
    return protocol_of(cfg).make_task(cfg, data, model_fn, loss_fn, optimizer_factory(cfg), scheduler_factory(cfg))


def evaluate(cfg: dict, data, model: nn.Module) -> dict:
    """The table's metrics of ``model`` on the test split, by ``cfg``'s protocol."""
    return protocol_of(cfg).evaluate(cfg, data, model)


# ------------------------------------------------------------------------------- progress
class Progress:
    """A job's epoch lines: always in the job's log (Hydra's per-job ``run.log``, through the
    ``benchmarks.progress`` logger), on stderr too with ``verbose=true``. The sweep's own progress
    (a line or a bar per finished job) is the launching process's (:mod:`benchmarks.progress`)."""

    def __init__(self, label: str, epochs: int, verbose: bool):
        self.label, self.epochs, self.verbose = label, epochs, verbose
        self.log = logging.getLogger("benchmarks.progress")

    def say(self, line: str, always: bool = False) -> None:
        self.log.info(line)
        if self.verbose or always:
            print(line, file=sys.stderr, flush=True)

    def __call__(self, r: EpochRecord):
        self.say(f"  {self.label} epoch {r.epoch + 1}/{self.epochs} best reward {r.best_reward:.4f} "
                 f"failed {sum(r.failed)}/{len(r.failed)} ({r.seconds:.1f}s)")

    def resumed(self, epoch: int, path) -> None:
        """``epoch``: the epochs done; said as the 1-based epoch the run continues with, as lfs's
        log says it. Always said: the user must know the run did not start over."""
        self.say(f"  {self.label} resumed at epoch {epoch + 1}/{self.epochs} from {path}", always=True)


# ------------------------------------------------------------------------------------ run
def run(cfg: dict, checkpoint: str | Path | None = None) -> tuple[dict, dict, list[dict]]:
    """Run one job. Returns ``(metrics, extra, history)``; history is the per-epoch records.

    With ``checkpoint``, a search saves its state there after every epoch and a rerun resumes
    from it (see :mod:`lfs.checkpoint`)."""
    validate(cfg, check_method=False)
    check_device(cfg)
    threads = set_threads(cfg)
    if cfg.get("job", "train") == "fit":
        validate_method(cfg)
        metrics, extra = run_fit(cfg)
        return metrics, {**extra, "threads": threads}, []
    from benchmarks import methods

    try:
        tuned = methods.get(cfg["method"]).tune
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None
    if tuned:
        return run_tuned(cfg, checkpoint, threads)
    model, history, extra, data = train(cfg, checkpoint)
    metrics = evaluate(cfg, data, model)
    extra.update(run_facts(model, data, threads))
    return metrics, extra, history


def run_facts(model: nn.Module, data, threads: int) -> dict:
    """What a row says about how its model was run: the device it ended on, torch threads, the
    number of classes and the data's description."""
    return {"device": str(next(model.parameters()).device), "threads": threads,
            "num_classes": int(data.num_classes), "data": results.compact(dict(data.info))}


def train(cfg: dict, checkpoint: str | Path | None = None):
    """Build the method, load the data, train: ``(model, history, extra, data)`` (no test metrics)."""
    built = build_method(cfg)  # checks the method (its family, searcher or loss) as it builds it
    method = built["method"]
    torch.manual_seed(cfg["seed"])
    label = f"{cfg['dataset']['name']}/{method.name}/seed={cfg['seed']}"
    if method.is_evolution:  # its data and tasks are its own (benchmarks.evolution)
        from benchmarks.evolution import run_evolution

        return run_evolution(cfg, built, checkpoint, Progress(label, 0, bool(cfg.get("verbose", False))))
    try:  # a value the data cannot serve (a split smaller than the batch, too few identities to hold out)
        data = load_data(cfg)
        model_fn = model_factory(cfg, data)
        loss_fn = built["family"].loss if method.is_search else fixed_loss(*built["loss"])
        task = make_task(cfg, data, model_fn, loss_fn)
    except DatasetError:
        raise
    except (ValueError, TypeError) as e:
        raise setup_error(e) from None
    progress = Progress(label, cfg["train"]["epochs"], bool(cfg.get("verbose", False)))
    start = time.perf_counter()
    if method.teacher:
        model, history = train_l2t_dlf(cfg, data, task, progress, checkpoint)
        extra: dict = {}
    else:
        model, history, extra = train_with_search(cfg, built, task, progress, checkpoint)
    extra["train_seconds"] = time.perf_counter() - start
    extra["model_epochs"] = model_epochs(cfg, built)
    return model, history, extra, data


def setup_error(e: Exception) -> Exception:
    """A value the data or the model cannot take, met while setting a run up, as one line
    (:class:`ConfigError`); any other error is returned as it is (a bug: its traceback is kept)."""
    text = str(e)
    if isinstance(e, TypeError):
        if "unexpected keyword argument" not in text:
            return e
        return ConfigError(f"{text}: a key under dataset.loader.* or model.kwargs.* that this dataset's loader "
                           "or model does not take")
    if "batch_size" in text or "split" in text:
        return ConfigError(f"{text} (check train.batch_size, subsample and dataset.loader.*)")
    return ConfigError(text)


def model_epochs(cfg: dict, built: dict) -> int:
    """What a run's training cost, in model-epochs: copies trained per epoch x epochs."""
    method = built["method"]
    copies = (method.B or cfg["search"]["B"]) if method.is_search else 1
    return int(copies) * int(cfg["train"]["epochs"])


def run_tuned(cfg: dict, checkpoint: str | Path | None, threads: int) -> tuple[dict, dict, list[dict]]:
    """A tuned arm (a method with ``tune``): train every point of its grid, keep the one with the
    best validation reward (ties: the first), evaluate only that model on the test split. The row
    records the grid, each point's validation reward and cost, the choice, and the total cost in
    model-epochs. Each point checkpoints as a run does (``<checkpoint>.tune<i>``) and the finished
    points are kept in ``<checkpoint>.tune`` (the best model's weights with them), so a rerun
    after a kill loses nothing already trained."""
    from benchmarks import methods

    method = methods.get(cfg["method"])
    points = methods.tune_points(method, cfg)
    state_path = None if checkpoint is None else Path(str(checkpoint) + ".tune")
    found = lfs_checkpoint.load_with_source(state_path) if state_path is not None else None
    state = found[0] if found is not None else {"points": [], "best": None, "grid": points}
    if state["grid"] != points:
        raise ConfigError(f"checkpoint {state_path} was written for another tuning grid; rerun with force=true")
    data = None
    for i, point in enumerate(points):
        if i < len(state["points"]):
            continue
        point_cfg = methods.with_values(cfg, point)
        point_ckpt = None if checkpoint is None else Path(f"{checkpoint}.tune{i}")
        model, history, extra, data = train(point_cfg, point_ckpt)
        reward = float(extra["val_reward"])
        state["points"].append({"point": point, "val_reward": reward, "model_epochs": extra["model_epochs"],
                                "train_seconds": extra["train_seconds"]})
        best = state["best"]
        if best is None or reward > best["val_reward"]:
            state["best"] = {"index": i, "val_reward": reward, "model": model.state_dict(), "history": history,
                             "extra": extra}
        if state_path is not None:
            lfs_checkpoint.save(state_path, state)
            lfs_checkpoint.remove(point_ckpt)
    best = state["best"]
    chosen_cfg = methods.with_values(cfg, points[best["index"]])
    if data is None:  # every point was trained before a restart: the data again, for the test split
        torch.manual_seed(cfg["seed"])
        data = load_data(chosen_cfg)
    model = model_factory(chosen_cfg, data)()
    model.load_state_dict(best["model"])
    metrics = evaluate(chosen_cfg, data, model)
    extra = dict(best["extra"])
    total = sum(p["model_epochs"] for p in state["points"])
    extra.update(run_facts(model, data, threads))
    extra.update({"model_epochs": total, "train_seconds": sum(p["train_seconds"] for p in state["points"]),
                  "tune": {"chosen": points[best["index"]], "points": state["points"], "model_epochs": total,
                           "selected_on": "validation split (the reward's)"}})
    if state_path is not None:
        lfs_checkpoint.remove(state_path)
    return metrics, extra, best["history"]


def check_resumed_config(saved: dict | None, current: dict, path) -> None:
    """A checkpoint resumes only the run that wrote it: name the first differing key otherwise."""
    def diff(a, b, prefix=""):
        for k in sorted(set(a) | set(b)):
            x, y = a.get(k), b.get(k)
            if isinstance(x, dict) and isinstance(y, dict):
                found = diff(x, y, f"{prefix}{k}.")
                if found:
                    return found
            elif x != y:
                return f"{prefix}{k}", x, y
        return None

    found = diff(saved or {}, current)
    if found:
        key, old, new = found
        raise ConfigError(f"checkpoint {path} was written with {key}={old!r}, this run has {key}={new!r}; "
                          "rerun with force=true to start over")


def train_with_search(cfg: dict, built: dict, task, progress, checkpoint=None) -> tuple[nn.Module, list[dict], dict]:
    """A search method's loop (its family and searcher), or one model with a fixed loss (a loop of
    one copy with AM-LFS's identity theta, which the fixed loss ignores)."""
    s, method = cfg["search"], built["method"]
    family = searcher = None
    if method.is_search:
        family, searcher = built["family"], built["searcher"]
        B, mode, executor = method.B or s["B"], "learn", s["executor"]
        if executor != "distributed" and distributed_environment() is not None:
            executor = "distributed"  # launched as one of several processes (torchrun, SLURM tasks)
    else:
        B, mode, executor = 1, "select", "sequential"
    config = search_config(cfg, epochs=cfg["train"]["epochs"], B=B, mode=mode, executor=executor)
    search: lfs.LossSearch

    def on_epoch(r: EpochRecord):
        progress(r)
        best = search.user_state["best"]
        if method.early_stopping and r.best_reward > best["reward"]:
            best.update(reward=r.best_reward, epoch=r.epoch, state=search.executor.copy_state(r.chosen))

    if executor == "distributed":  # torchrun, or a SLURM job step with several tasks (lfs.distributed)
        from lfs.distributed import init_process_group

        init_process_group()
    try:
        search = lfs.LossSearch(task, config, on_epoch=on_epoch, checkpoint=checkpoint, family=family,
                                searcher=searcher)
    except ValueError as e:  # e.g. a family that cannot stack under executor=vectorized
        raise ConfigError(str(e)) from None
    search.user_state["best"] = {"reward": -math.inf, "epoch": None, "state": None}  # early stopping's best copy
    search.user_state["config"] = run_config = resumable(cfg)
    try:
        resumed = search.resume()
    except ValueError as e:  # a checkpoint of another search (or an older lfs): one line, rerun with force=true
        raise ConfigError(f"{e} (or rerun with force=true)") from None
    if resumed:
        check_resumed_config(search.user_state.get("config"), run_config, search.resumed_path)
        progress.resumed(search.epoch, search.resumed_path)
    result = search.run()
    best = search.user_state["best"]
    history = [asdict(r) for r in result.history]
    last = result.history[-1]
    extra = {"val_reward": result.reward, "failed_samples": sum(sum(r.failed) for r in result.history),
             "resumed_at_epoch": search.resumed_from, "executor": executor, **search.searcher.summary()}
    if method.is_search:
        extra.update(family=search.family.name, searcher=search.searcher.name,
                     loss=search.family.describe(search.family.from_json(last.candidates[last.chosen])))
    if method.early_stopping:
        extra.update(val_reward=best["reward"], stopped_epoch=best["epoch"])
        return restore_state(task, best["state"]).model, history, extra
    return result.state.model, history, extra


def train_l2t_dlf(cfg: dict, data, task, progress, checkpoint=None) -> tuple[nn.Module, list[dict]]:
    """One model trained with the L2T-DLF-style loss; a teacher step every ``l2t.every`` steps on
    a training batch and a batch of the clean validation split."""
    from baselines.l2t_dlf import L2TDLF

    l2t_cfg, epochs = cfg["l2t"], cfg["train"]["epochs"]
    torch.manual_seed(cfg["seed"])
    state = task.make_state()
    driver = L2TDLF(data.num_classes, lr=float(l2t_cfg["lr"]), measure=l2t_cfg["measure"])
    g = torch.Generator().manual_seed(cfg["seed"])
    vx, vy = data.val
    history, step, start_epoch = [], 0, 0
    found = lfs_checkpoint.load_with_source(checkpoint) if checkpoint is not None else None
    if found is not None:  # resume after the last completed epoch
        saved, used = found
        check_resumed_config(saved["config"], resumable(cfg), used)
        load_train_state(state, saved["student"])
        driver.load_state_dict(saved["driver"])
        g.set_state(saved["generator"])
        history, step, start_epoch = saved["history"], saved["step"], saved["epoch"]
        lfs_checkpoint.set_rng_state(saved["rng"])
        progress.resumed(start_epoch, used)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        state.model.train()
        total, correct, n = 0.0, 0, 0
        for x, y in task.train_batches(lfs.task.sample_seed(cfg["seed"], epoch, 0)):
            driver.update_state(progress=epoch / epochs)
            cos, scale = state.model(x)
            loss = driver.student_loss(cos, y, scale)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            total += float(loss.detach()) * len(y)
            correct += int(((cos * scale).argmax(1) == y).sum())
            n += len(y)
            step += 1
            if step % int(l2t_cfg["every"]) == 0:
                idx = torch.randint(0, len(vx), (len(y),), generator=g)
                driver.teacher_step(state.model, None, (x, y), (vx[idx], vy[idx]),
                                    student_lr=state.optimizer.param_groups[0]["lr"])
        if state.scheduler is not None:
            state.scheduler.step()
        val_acc = task.reward(state)
        driver.update_state(progress=(epoch + 1) / epochs, train_loss=total / max(n, 1),
                            train_error=1 - correct / max(n, 1), val_error=1 - val_acc)
        record = {"epoch": epoch, "val_reward": val_acc, "train_loss": total / max(n, 1),
                  "seconds": time.perf_counter() - t0}
        history.append(record)
        progress(EpochRecord(epoch=epoch, candidates=[], rewards=[val_acc], failed=[False], chosen=0,
                             best_reward=val_acc, train_loss=[record["train_loss"]], seconds=record["seconds"]))
        if checkpoint is not None:
            lfs_checkpoint.save(checkpoint, {
                "epoch": epoch + 1, "step": step, "history": history, "student": train_state_dict(state),
                "driver": driver.state_dict(), "generator": g.get_state(), "rng": lfs_checkpoint.rng_state(),
                "config": resumable(cfg)})
    return state.model, history


def fit_spec(name: str) -> tuple[Callable, Callable, str]:
    """Figure 1's fit of the baseline ``name``: its ``(t, tau)`` (the very transforms its training
    uses) and the fit method: least squares for a t, the interpolating chord for a tau (a positive
    tau stays positive, see REPRODUCE.md)."""
    from lfs.fit import curve_kind

    t, tau = baselines.get(name).transforms()
    return t, tau, ("interpolate" if curve_kind(t, tau) == "tau" else "lstsq")


def run_fit(cfg: dict) -> tuple[dict, dict]:
    """A ``job: fit`` run (Figure 1): how well the search space (M intervals) approximates a known
    loss; no data, no training. ``(metrics, extra)``: the error, and the fit method used."""
    from lfs.fit import approximation_error

    t, tau, method = fit_spec(cfg["method"])
    return {"approx_error": approximation_error(t, tau, cfg["search"]["M"], method)}, {"fit_method": method}
