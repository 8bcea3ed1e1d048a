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
from typing import Any, Callable

import torch
import torch.nn as nn

import baselines
import lfs
from lfs.distributed import environment as distributed_environment
from lfs import checkpoint as lfs_checkpoint
from lfs.executors import load_train_state, restore_state, train_state_dict
from lfs.search import EpochRecord

from . import methods as methods_registry
from . import results


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


# ----------------------------------------------------------------------------- validation
def validate(cfg: dict, check_method: bool = True) -> None:
    """Fail fast, with one line naming the key, on values no run can use. ``check_method=False``
    before a sweep starts: the method is usually one of the swept values."""
    def need(ok: bool, key: str, what: str, value: Any):
        if not ok:
            raise ConfigError(f"{key} {what}, got {value!r}")

    s, t = cfg["search"], cfg.get("train", {})
    need(isinstance(s["B"], int) and s["B"] >= 1, "search.B", "must be an integer >= 1", s["B"])
    need(isinstance(s["M"], int) and s["M"] >= 1, "search.M", "must be an integer >= 1", s["M"])
    need(isinstance(s["sigma"], (int, float)) and s["sigma"] > 0, "search.sigma", "must be > 0", s["sigma"])
    need(isinstance(cfg["noise"], (int, float)) and 0 <= cfg["noise"] < 1, "noise", "must be in [0, 1)", cfg["noise"])
    need(isinstance(cfg["seed"], int), "seed", "must be an integer", cfg["seed"])
    if cfg.get("table") != "figure1":
        need(isinstance(t.get("epochs"), int) and t["epochs"] >= 1, "train.epochs", "must be an integer >= 1",
             t.get("epochs"))
        need(t.get("batch_size", 0) >= 1, "train.batch_size", "must be >= 1", t.get("batch_size"))
        need(t.get("schedule") in ("cosine", "step", "constant"), "train.schedule",
             "must be one of cosine, step, constant", t.get("schedule"))
    if check_method:
        validate_method(cfg)
    try:
        lfs.SearchConfig(epochs=1, B=s["B"], M=s["M"], sigma=float(s["sigma"]), sigma_is=s["sigma_is"],
                         lr=float(s["lr"]), policy_optimizer=s["policy_optimizer"],
                         failed_reward=s["failed_reward"], executor=s["executor"], constraint=s["constraint"])
    except ValueError as e:
        raise ConfigError(str(e)) from None


def validate_method(cfg: dict) -> None:
    """The method exists (figure1's "methods" are the known losses of lfs.fit)."""
    if cfg.get("table") == "figure1":
        from lfs.fit import KNOWN_LOSSES

        if cfg["method"] not in KNOWN_LOSSES:
            raise ConfigError(f"method must be one of {', '.join(KNOWN_LOSSES)} for figure1, got {cfg['method']!r}")
        return
    try:
        methods_registry.get(cfg["method"])
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None


def set_threads(cfg: dict) -> int:
    """torch threads: ``threads`` if set, else the CPUs SLURM allocated, else torch's default."""
    n = cfg.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK")
    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


# ----------------------------------------------------------------------------------- data
def _take(split, n):
    return split if n is None else tuple(t[:n] for t in split)


GENERATED = ("mnist1d", "digits", "synthetic_reid_market", "synthetic_reid_duke", "synthetic_face")


def _load_cached(name: str, kwargs: dict, cache_dir: str | None):
    """Generated datasets are cached on disk (mnist1d takes seconds to generate): the key is the
    loader name, its arguments and a hash of the data package's source, so changing the
    generator invalidates the cache."""
    import hashlib
    import json
    from pathlib import Path

    from benchmarks import data as data_registry

    if not cache_dir or name not in GENERATED:
        return data_registry.load(name, **kwargs)
    src = hashlib.sha1()
    for f in sorted(Path(data_registry.__file__).parent.glob("*.py")):
        src.update(f.read_bytes())
    key = hashlib.sha1(json.dumps([name, kwargs, src.hexdigest()], sort_keys=True, default=str).encode()).hexdigest()
    path = Path(os.path.expanduser(cache_dir)) / f"{name}-{key[:16]}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt
            pass
    data = data_registry.load(name, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return data


def reid_transforms(cfg: dict) -> dict:
    """SphereReID-style input pipeline: resize to the model's input size, flip + pad-crop for
    training, ImageNet normalization."""
    from torchvision import transforms as T

    h, w = cfg["model"].get("kwargs", {}).get("input_size", (256, 128))
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train = T.Compose([T.Resize((h, w)), T.RandomHorizontalFlip(), T.Pad(10), T.RandomCrop((h, w)), T.ToTensor(), norm])
    test = T.Compose([T.Resize((h, w)), T.ToTensor(), norm])
    return {"train_transform": train, "test_transform": test}


def load_data(cfg: dict):
    ds = cfg["dataset"]
    kwargs = dict(ds.get("loader") or {})
    if ds["kind"] == "classification":
        kwargs["noise"] = cfg["noise"]
    if ds.get("root"):
        kwargs["root"] = ds["root"]
    if ds["name"] in ("market1501", "dukemtmc"):
        kwargs.update(reid_transforms(cfg))
    if ds["kind"] == "face" and ds["name"] not in GENERATED:
        # Table 3, full tier: CASIA-WebFace training + the MegaFace devkit's lists, all checked now
        from benchmarks.data import DatasetError
        from benchmarks.data.faces import load_megaface, megaface_options

        try:
            data = load_megaface(megaface=megaface_options(ds.get("megaface") or {}), seed=cfg["data_seed"],
                                 input_size=(cfg["model"].get("kwargs") or {}).get("input_size", (112, 96)),
                                 fit=ds.get("fit", "resize"), **kwargs)
        except DatasetError:
            raise
        except ValueError as e:  # a bad dataset.* value: one line naming the key
            raise ConfigError(str(e)) from None
    else:
        data = _load_cached(ds["name"], {"seed": cfg["data_seed"], **kwargs}, cfg.get("cache_dir"))
    n = cfg.get("subsample")
    if n:
        from torch.utils.data import Subset

        for field in ("train", "val", "test", "val_query", "val_gallery", "query", "gallery"):
            part = getattr(data, field, None)
            if isinstance(part, tuple):
                setattr(data, field, _take(part, n))
            elif part is not None:
                setattr(data, field, Subset(part, range(min(n, len(part)))))
    return data


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
class AnnealedSphereFace:
    """SphereFace's functional form with its lambda annealed per training step (one model only)."""

    def __init__(self):
        self.iteration = 0

    def __call__(self, output, target, theta):
        cos, scale = output
        lam = baselines.sphereface_lambda(self.iteration)
        self.iteration += 1
        return baselines.sphereface(cos, target, scale, lambda_=lam)


def loss_factory(method, cfg: dict) -> Callable:
    """``(model output (cos, scale), target, theta) -> loss`` for the method's loss."""
    if method.loss == "am_lfs":
        invalid_tau = cfg["search"]["invalid_tau"]

        def am_lfs(output, target, theta):
            cos, scale = output
            return lfs.am_lfs_loss(cos, target, theta, scale, invalid_tau=invalid_tau)

        return am_lfs
    if method.loss == "sphereface":
        return AnnealedSphereFace()
    fn = baselines.get(method.loss).fn

    def baseline(output, target, theta):
        cos, scale = output
        return fn(cos, target, scale=scale)

    return baseline


# ------------------------------------------------------------------------------- rewards
def reid_reward(nq: int, pids: torch.Tensor, camids: torch.Tensor) -> Callable:
    """mAP (the paper's re-ID reward) of query embeddings [:nq] against gallery [nq:]."""
    from benchmarks.evaluation import evaluate_reid

    def reward(emb, _targets):
        r = evaluate_reid(emb[:nq], emb[nq:], pids[:nq], pids[nq:], camids[:nq], camids[nq:])
        return r["mAP"] / 100.0

    return reward


def is_streaming(data) -> bool:
    """Full-tier data are torch Datasets (images on disk), mini-tier data in-memory tensors."""
    return not isinstance(data.train, tuple)


def device_of(cfg: dict) -> torch.device:
    d = cfg.get("device") or "auto"
    return torch.device("cuda" if d == "auto" and torch.cuda.is_available() else ("cpu" if d == "auto" else d))


def make_streaming_task(cfg: dict, data, model_fn, loss_fn) -> lfs.SupervisedTask:
    from benchmarks.streaming import Concat, DatasetTask, Indexed, labels_of

    device = device_of(cfg)
    common = dict(batch_size=int(cfg["train"]["batch_size"]), scheduler_fn=scheduler_factory(cfg),
                  num_workers=int(cfg.get("workers", 4)), device=device, pin_memory=device.type == "cuda")
    if cfg["dataset"]["kind"] == "classification":
        return DatasetTask(model_fn, optimizer_factory(cfg), loss_fn, data.train, data.val, **common)
    vq, vg = data.val_query, data.val_gallery
    pids = torch.cat([labels_of(vq, 1), labels_of(vg, 1)])
    camids = torch.cat([labels_of(vq, 2), labels_of(vg, 2)])
    return DatasetTask(model_fn, optimizer_factory(cfg), loss_fn, data.train, Indexed(Concat(vq, vg)),
                       predict_fn=lambda emb: emb, reward_fn=reid_reward(len(vq), pids, camids),
                       eval_kwargs={"embed": True}, eval_batch_size=256, **common)


def make_task(cfg: dict, data, model_fn, loss_fn) -> lfs.SupervisedTask:
    if is_streaming(data):
        return make_streaming_task(cfg, data, model_fn, loss_fn)
    common = dict(batch_size=int(cfg["train"]["batch_size"]), scheduler_fn=scheduler_factory(cfg))
    kind = cfg["dataset"]["kind"]
    if kind == "classification":
        return lfs.SupervisedTask(model_fn, optimizer_factory(cfg), loss_fn, data.train, data.val, **common)
    # retrieval / face: the reward is computed on embeddings of held-out identities
    (qx, qp, qc), (gx, gp, gc) = data.val_query, data.val_gallery
    val = (torch.cat([qx, gx]), torch.cat([qp, gp]))
    reward_fn = reid_reward(len(qx), torch.cat([qp, gp]), torch.cat([qc, gc]))
    return lfs.SupervisedTask(model_fn, optimizer_factory(cfg), loss_fn, data.train, val,
                              predict_fn=lambda emb: emb, reward_fn=reward_fn, eval_kwargs={"embed": True},
                              eval_batch_size=100000, **common)


# ------------------------------------------------------------------------------- evaluate
def outputs(model: nn.Module, batches, device: torch.device | None = None, logits: bool = False) -> torch.Tensor:
    """The model's embeddings (or, with ``logits``, its prediction scores) over ``batches`` of
    tensors or DataLoader items, in eval mode, gathered on the CPU (no flip, no normalization)."""
    from benchmarks.evaluation import extract_features

    model.eval()
    fn = (lambda x: lfs.task.default_predict(model(x))) if logits else (lambda x: model(x, embed=True))
    return extract_features(fn, batches, flip=False, normalize=False, device=device)


def loader(dataset, cfg: dict):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=256, shuffle=False, num_workers=int(cfg.get("workers", 4)))


@torch.no_grad()
def evaluate(cfg: dict, data, model: nn.Module) -> dict:
    from benchmarks.evaluation import evaluate_reid, megaface_rank1, top1_error

    kind = cfg["dataset"]["kind"]
    model.eval()
    if is_streaming(data):
        return evaluate_streaming(cfg, data, model)
    if kind == "classification":
        x, y = data.test
        return {"top1_error": float(top1_error(outputs(model, x.split(4096), logits=True), y))}
    (qx, qp, qc), (gx, gp, gc) = data.query, data.gallery
    qf, gf = outputs(model, qx.split(4096)), outputs(model, gx.split(4096))
    metrics = {k: float(v) for k, v in evaluate_reid(qf, gf, qp, gp, qc, gc).items()}
    if kind == "face":
        # MegaFace-style identification: every non-distractor image is a probe of its identity,
        # the distractors (pid 0) stand between each probe pair.
        feats, pids = torch.cat([qf, gf]), torch.cat([qp, gp])
        probes = pids > 0
        metrics = {"rank1": float(megaface_rank1(feats[probes], pids[probes], feats[~probes])),
                   "reid_mAP": metrics["mAP"]}
    return metrics


@torch.no_grad()
def evaluate_streaming(cfg: dict, data, model: nn.Module) -> dict:
    from benchmarks.evaluation import evaluate_reid, top1_error
    from benchmarks.streaming import labels_of

    dev = device_of(cfg)
    if cfg["dataset"]["kind"] == "classification":
        logits = outputs(model, loader(data.test, cfg), dev, logits=True)
        return {"top1_error": float(top1_error(logits, torch.tensor(data.test.targets)))}
    if cfg["dataset"]["kind"] == "face":  # Table 3, full tier: MegaFace Challenge 1 rank-1 (devkit lists)
        from benchmarks.evaluation.megaface import evaluate_megaface

        mf = cfg["dataset"].get("megaface") or {}
        out = mf.get("features_out")
        metrics, info = evaluate_megaface(
            lambda x: model(x, embed=True), data.megaface, batch_size=int(mf.get("batch_size", 256)),
            workers=int(cfg.get("workers", 4)), device=dev, metric=mf.get("metric", "cosine"),
            ties=mf.get("ties", "miss"), score_batch=int(mf.get("score_batch", 4096)),
            features_out=os.path.join(out, cfg["method"], f"seed={cfg['seed']}") if out else None,
            file_ending=mf.get("file_ending", "_lfs.bin"), seed=cfg["seed"])
        data.info.update(info)  # run() puts data.info in the row's extra["data"]
        return metrics
    qf = outputs(model, loader(data.query, cfg), dev)
    gf = outputs(model, loader(data.gallery, cfg), dev)
    q = [labels_of(data.query, k) for k in (1, 2)]
    g = [labels_of(data.gallery, k) for k in (1, 2)]
    metrics = {k: float(v) for k, v in evaluate_reid(qf, gf, q[0], g[0], q[1], g[1]).items()}
    if cfg.get("rerank"):  # the "(RK)" rows: k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)
        rk = evaluate_reid(qf, gf, q[0], g[0], q[1], g[1], rerank=True)
        metrics.update({f"{k}_rk": float(v) for k, v in rk.items()})
    return metrics


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
        # always said, progress or not: the user must know the run did not start over
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
    validate(cfg)
    threads = set_threads(cfg)
    if cfg["table"] == "figure1":
        return run_figure1(cfg), {"threads": threads}, []
    method = methods_registry.get(cfg["method"])
    torch.manual_seed(cfg["seed"])
    data = load_data(cfg)
    model_fn = model_factory(cfg, data)
    loss_fn = loss_factory(method, cfg)
    task = make_task(cfg, data, model_fn, loss_fn)
    label = f"{cfg['dataset']['name']}/{method.name}/seed={cfg['seed']}"
    progress = Progress(label, cfg["train"]["epochs"], cfg.get("progress", True))
    start = time.perf_counter()
    if method.teacher:
        model, history = train_l2t_dlf(cfg, data, task, progress, checkpoint)
        extra: dict = {}
    else:
        model, history, extra = train_with_search(cfg, method, task, progress, checkpoint)
    progress.close()
    train_seconds = time.perf_counter() - start
    metrics = evaluate(cfg, data, model)
    extra.update({"train_seconds": train_seconds, "threads": threads, "num_classes": int(data.num_classes),
                  "data": results.compact(dict(data.info))})
    return metrics, extra, history


# Keys that do not change what a run computes: a checkpoint may be resumed under other values.
RUN_ONLY_KEYS = ("progress", "workers", "threads", "results_dir", "force", "cache_dir", "checkpoint", "device")


def resumable_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in RUN_ONLY_KEYS and k != "search"} | {
        "search": {k: v for k, v in cfg["search"].items() if k != "executor"}}


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


def train_with_search(cfg: dict, method, task, progress, checkpoint=None) -> tuple[nn.Module, list[dict], dict]:
    s = cfg["search"]
    if method.is_search:
        B, mode, executor = s["B"], method.search_mode, s["executor"]
        if executor != "distributed" and distributed_environment() is not None:
            executor = "distributed"  # launched as one of several processes (torchrun, SLURM tasks)
    else:  # one model trained with a fixed loss: a "search" of one copy with the identity theta
        B, mode, executor = 1, "select", "sequential"
    config = lfs.SearchConfig(epochs=cfg["train"]["epochs"], B=B, M=s["M"], mode=mode, sigma=float(s["sigma"]),
                              sigma_is=s["sigma_is"], lr=float(s["lr"]), policy_optimizer=s["policy_optimizer"],
                              broadcast_optimizer=bool(s["broadcast_optimizer"]), failed_reward=s["failed_reward"],
                              constraint=s["constraint"], executor=executor, seed=cfg["seed"])
    search: lfs.LossSearch

    def on_epoch(r: EpochRecord):
        progress(r)
        best = search.user_state["best"]
        if method.early_stopping and r.best_reward > best["reward"]:
            best.update(reward=r.best_reward, epoch=r.epoch, state=search.executor.copy_state(r.chosen))

    if executor == "distributed":  # torchrun, or a SLURM job step with several tasks (lfs.distributed)
        from lfs.distributed import init_process_group

        init_process_group()
    search = lfs.LossSearch(task, config, on_epoch=on_epoch, checkpoint=checkpoint)
    search.user_state["best"] = {"reward": -math.inf, "epoch": None, "state": None}  # early stopping's best copy
    search.user_state["config"] = run_config = resumable_config(cfg)
    if search.resume():
        check_resumed_config(search.user_state.get("config"), run_config, checkpoint)
        progress.resumed(search.epoch, checkpoint)
    result = search.run()
    best = search.user_state["best"]
    history = [asdict(r) for r in result.history]
    extra = {"val_reward": result.reward, "failed_samples": sum(sum(r.failed) for r in result.history),
             "resumed_at_epoch": search.resumed_from, "executor": executor,
             "final_mu": result.policy["mu"].tolist() if method.search_mode == "learn" else None}
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
    saved = lfs_checkpoint.load(checkpoint) if checkpoint is not None else None
    if saved is not None:  # resume after the last completed epoch
        check_resumed_config(saved["config"], resumable_config(cfg), checkpoint)
        load_train_state(state, saved["student"])
        driver.load_state_dict(saved["driver"])
        g.set_state(saved["generator"])
        history, step, start_epoch = saved["history"], saved["step"], saved["epoch"]
        lfs_checkpoint.set_rng_state(saved["rng"])
        progress.resumed(start_epoch, checkpoint)
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
        progress(EpochRecord(epoch=epoch, mu=[], mu_next=[], thetas=[], rewards=[val_acc], normalized_rewards=[],
                             failed=[False], chosen=0, best_reward=val_acc, train_loss=[record["train_loss"]],
                             seconds=record["seconds"]))
        if checkpoint is not None:
            lfs_checkpoint.save(checkpoint, {
                "epoch": epoch + 1, "step": step, "history": history, "student": train_state_dict(state),
                "driver": driver.state_dict(), "generator": g.get_state(), "rng": lfs_checkpoint.rng_state(),
                "config": resumable_config(cfg)})
    return state.model, history


def run_figure1(cfg: dict) -> dict:
    """Figure 1's numbers: how well the search space (M intervals) approximates a known loss."""
    from lfs.fit import approximation_error

    name, M = cfg["method"], cfg["search"]["M"]
    method = "interpolate" if name == "focal" else "lstsq"
    return {"approx_error": approximation_error(name, M, method), "fit_method_interpolate": float(method == "interpolate")}
