"""One run of a table: data -> model -> method (a loss search or one model) -> metrics.

Kept free of Hydra: :func:`run` takes the composed config as a plain nested dict (``cfg``), so
it can be called from tests and from other launchers. ``benchmarks/run.py`` is the Hydra entry.
"""
from __future__ import annotations

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
from .config import ConfigError, build_method, resumable, search_config, validate, validate_method  # noqa: F401  (ConfigError: re-exported)


def set_threads(cfg: dict) -> int:
    """torch threads: ``threads`` if set, else the CPUs SLURM allocated, else torch's default."""
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
    """One line per epoch on stderr (a progress bar when stderr is a terminal)."""

    def __init__(self, label: str, epochs: int, enabled: bool):
        self.label, self.epochs, self.enabled = label, epochs, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=epochs, desc=label, leave=False, file=sys.stderr)
            except ImportError:
                pass

    def __call__(self, r: EpochRecord):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(best=f"{r.best_reward:.3f}", failed=sum(r.failed))
            self.bar.update(1)
        else:
            print(f"  {self.label} epoch {r.epoch + 1}/{self.epochs} best reward {r.best_reward:.4f} "
                  f"failed {sum(r.failed)}/{len(r.failed)} ({r.seconds:.1f}s)", file=sys.stderr, flush=True)

    def resumed(self, epoch: int, path) -> None:
        """``epoch``: the epochs done; said as the 1-based epoch the run continues with, as lfs's
        log says it. Always said, progress or not: the user must know the run did not start over."""
        print(f"  {self.label} resumed at epoch {epoch + 1}/{self.epochs} from {path}", file=sys.stderr, flush=True)
        if self.bar is not None:
            self.bar.update(epoch)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------ run
def run(cfg: dict, checkpoint: str | Path | None = None) -> tuple[dict, dict, list[dict]]:
    """Run one job. Returns ``(metrics, extra, history)``; history is the per-epoch records.

    With ``checkpoint``, a search saves its state there after every epoch and a rerun resumes
    from it (see :mod:`lfs.checkpoint`)."""
    validate(cfg, check_method=False)
    threads = set_threads(cfg)
    if cfg.get("job", "train") == "fit":
        validate_method(cfg)
        metrics, extra = run_fit(cfg)
        return metrics, {**extra, "threads": threads}, []
    built = build_method(cfg)  # checks the method (its family, searcher or loss) as it builds it
    method = built["method"]
    torch.manual_seed(cfg["seed"])
    data = load_data(cfg)
    model_fn = model_factory(cfg, data)
    loss_fn = built["family"].loss if method.is_search else fixed_loss(*built["loss"])
    task = make_task(cfg, data, model_fn, loss_fn)
    label = f"{cfg['dataset']['name']}/{method.name}/seed={cfg['seed']}"
    progress = Progress(label, cfg["train"]["epochs"], cfg.get("progress", True))
    start = time.perf_counter()
    if method.teacher:
        model, history = train_l2t_dlf(cfg, data, task, progress, checkpoint)
        extra: dict = {}
    else:
        model, history, extra = train_with_search(cfg, built, task, progress, checkpoint)
    progress.close()
    train_seconds = time.perf_counter() - start
    metrics = evaluate(cfg, data, model)
    extra.update({"train_seconds": train_seconds, "threads": threads, "num_classes": int(data.num_classes),
                  "data": results.compact(dict(data.info))})
    return metrics, extra, history


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
