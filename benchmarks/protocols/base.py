"""The protocol interface, its registry, and what every protocol shares: loading through the
dataset registry (generated data cached on disk), the training task in memory or streamed, and
model outputs over a split."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

import lfs

_PROTOCOLS: dict[str, type["Protocol"]] = {}


def register_protocol(name: str):
    def deco(cls):
        cls.name = name
        _PROTOCOLS[name] = cls
        return cls

    return deco


def available() -> list[str]:
    return sorted(_PROTOCOLS)


def get(name: str) -> "Protocol":
    try:
        return _PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; available: {', '.join(available())}") from None


# ----------------------------------------------------------------------------------- data
def is_streaming(data) -> bool:
    """Data on disk come as torch Datasets (streamed), generated data as in-memory tensors."""
    return not isinstance(data.train, tuple)


def device_of(cfg: dict) -> torch.device:
    d = cfg.get("device") or "auto"
    return torch.device("cuda" if d == "auto" and torch.cuda.is_available() else ("cpu" if d == "auto" else d))


def load_cached(name: str, kwargs: dict, cache_dir: str | None):
    """``benchmarks.data.load(name, **kwargs)``; generated (mini-tier) datasets are cached on
    disk (mnist1d takes seconds to generate), keyed by the loader name, its arguments and a hash
    of the data package's source, so that changing a generator invalidates the cache."""
    from benchmarks import data as data_registry

    generated = data_registry.REGISTRY.get(name, ("", "", ""))[2] == "mini"
    if not cache_dir or not generated:
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


def subsample(data, n: int | None):
    """Keep the first ``n`` examples of every split (the smoke tier)."""
    if not n:
        return data
    from torch.utils.data import Subset

    for field in ("train", "val", "test", "val_query", "val_gallery", "query", "gallery"):
        part = getattr(data, field, None)
        if isinstance(part, tuple):
            setattr(data, field, tuple(t[:n] for t in part))
        elif part is not None:
            setattr(data, field, Subset(part, range(min(n, len(part)))))
    return data


def loader(dataset, cfg: dict):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=256, shuffle=False, num_workers=int(cfg.get("workers", 4)))


def batches(split, cfg: dict):
    """A split's inputs in evaluation batches: 4096-row slices of a tensor, or a DataLoader."""
    return split.split(4096) if isinstance(split, torch.Tensor) else loader(split, cfg)


def outputs(model: nn.Module, batches, device: torch.device | None = None, logits: bool = False) -> torch.Tensor:
    """The model's embeddings (or, with ``logits``, its prediction scores) over ``batches`` of
    tensors or DataLoader items, in eval mode, gathered on the CPU (no flip, no normalization)."""
    from benchmarks.evaluation import extract_features

    model.eval()
    fn = (lambda x: lfs.task.default_predict(model(x))) if logits else (lambda x: model(x, embed=True))
    return extract_features(fn, batches, flip=False, normalize=False, device=device)


class Protocol:
    """One kind of task. Subclasses override :meth:`reward_setup` and :meth:`evaluate` (and may
    extend :meth:`loader_kwargs` / :meth:`load`)."""

    name = ""

    # -- loading ----------------------------------------------------------------------
    def loader_kwargs(self, cfg: dict) -> dict:
        ds = cfg["dataset"]
        kwargs = {"seed": cfg["data_seed"], **(ds.get("loader") or {})}
        if ds.get("root"):
            kwargs["root"] = ds["root"]
        return kwargs

    def load(self, cfg: dict):
        data = load_cached(cfg["dataset"]["name"], self.loader_kwargs(cfg), cfg.get("cache_dir"))
        return subsample(data, cfg.get("subsample"))

    # -- the lfs task -----------------------------------------------------------------
    def reward_setup(self, cfg: dict, data) -> dict:
        """The validation data and reward of the task: ``{"val": ..., **SupervisedTask kwargs}``."""
        raise NotImplementedError

    def make_task(self, cfg: dict, data, model_fn: Callable, loss_fn: Callable, optimizer_fn: Callable,
                  scheduler_fn: Callable | None) -> lfs.SupervisedTask:
        common = dict(batch_size=int(cfg["train"]["batch_size"]), scheduler_fn=scheduler_fn)
        spec = self.reward_setup(cfg, data)
        val = spec.pop("val")
        if is_streaming(data):
            from benchmarks.streaming import DatasetTask

            device = device_of(cfg)
            spec.update(num_workers=int(cfg.get("workers", 4)), device=device, pin_memory=device.type == "cuda")
            return DatasetTask(model_fn, optimizer_fn, loss_fn, data.train, val, **common, **spec)
        return lfs.SupervisedTask(model_fn, optimizer_fn, loss_fn, data.train, val, **common, **spec)

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, cfg: dict, data, model: nn.Module) -> dict:
        raise NotImplementedError
