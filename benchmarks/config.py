"""A run's configuration: its validation (one function, used by every entry point) and its
identity (which keys make two runs the same run, defined once).

The identity of a run is (table, tier, dataset, method, setting, seed), where the *setting* is
the table's swept knobs plus every command-line override that changes what the run computes.
:data:`RUN_ONLY` lists the keys that do not (where output goes, how many threads, which executor:
executors give the same result); they never enter a setting, and a checkpoint may be resumed
under other values of them.
"""
from __future__ import annotations

from typing import Any

#: the parts of a run's identity that are not its setting
IDENTITY = ("table", "tier", "dataset", "method", "seed")

#: keys (dotted; a key covers everything under it) that do not change what a run computes
RUN_ONLY = ("progress", "verbose", "reuse", "after", "workers", "threads", "flush_denormal", "tier.jobs", "results_dir", "force", "history_candidates", "cache_dir", "checkpoint", "device",
            "search.executor", "evolve.array", "evolve.source_results", "dataset.root", "dataset.megaface.root", "dataset.megaface.templatelists",
            "dataset.megaface.probe_list", "dataset.megaface.distractor_list",
            "dataset.megaface.facescrub_images", "dataset.megaface.megaface_images",
            "dataset.megaface.megaface_noises", "dataset.megaface.facescrub_noises",
            "dataset.megaface.check_images", "dataset.megaface.batch_size", "dataset.megaface.score_batch",
            "dataset.megaface.features_out")

#: keys (dotted) that do not change a single job's numbers, not even in the last bit: its labels in
#: a table (``table``, ``setting``) and where and how its output is shown. Everything else, the
#: executor, device, threads and denormal flushing included, is part of :func:`computation`.
LABEL_ONLY = ("table", "setting", "after", "progress", "verbose", "tier.jobs", "results_dir", "force", "cache_dir", "checkpoint",
              "reuse")

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def _covered(key: str, keys: tuple[str, ...]) -> bool:
    """Whether dotted ``key`` is one of ``keys`` or lies under one."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def is_run_only(key: str) -> bool:
    return _covered(key, RUN_ONLY)


def _without(cfg: dict, keys: tuple[str, ...]) -> dict:
    """``cfg`` with every dotted key of ``keys`` (and everything under it) removed, at any depth."""
    def strip(d: dict, prefix: str) -> dict:
        return {k: strip(v, f"{prefix}{k}.") if isinstance(v, dict) else v
                for k, v in d.items() if not _covered(f"{prefix}{k}", keys)}

    return strip(cfg, "")


def row_setting(setting: dict, raw_setting: dict, overrides: list[str]) -> dict:
    """The table's swept knobs plus every override that changes the computation (e.g.
    ``search.sigma_is=std`` on a table that does not sweep it), so that variants of a table never
    share a result row. ``raw_setting``: the table's ``setting`` before interpolation; a knob
    written ``${search.B}`` already records the override ``search.B``."""
    captured = {v[2:-1] for v in raw_setting.values() if isinstance(v, str) and v.startswith("${") and v.endswith("}")}
    out = dict(setting)
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if (key.startswith(("hydra.", "hydra/")) or not value or key in IDENTITY or is_run_only(key)
                or key in setting or key in captured):
            continue
        out[key] = value
    return out


def resumable(cfg: dict) -> dict:
    """The part of a run's config a checkpoint must agree on (:data:`RUN_ONLY` removed)."""
    return _without(cfg, RUN_ONLY)


def computation(cfg: dict) -> dict:
    """What a job computes, bit for bit: its resolved config without :data:`LABEL_ONLY`. Two jobs
    of different tables with the same computation (and the same code, library versions and CPU,
    see :func:`benchmarks.results.same_computation`) give the same row but for its labels, e.g.
    ``market1501``'s ``learn`` and ``ablation_b``'s ``learn`` at ``B=8``."""
    return _without(cfg, LABEL_ONLY)


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
    need(isinstance(cfg["seed"], int) and cfg["seed"] >= 0, "seed", "must be an integer >= 0", cfg["seed"])
    need(isinstance(cfg.get("data_seed", 0), int) and cfg.get("data_seed", 0) >= 0, "data_seed",
         "must be an integer >= 0", cfg.get("data_seed"))
    need(isinstance(cfg.get("history_candidates", False), bool), "history_candidates", "must be true or false",
         cfg.get("history_candidates"))
    need(isinstance(cfg.get("flush_denormal", True), bool), "flush_denormal", "must be true or false",
         cfg.get("flush_denormal"))
    need(isinstance(cfg.get("reuse", True), bool), "reuse", "must be true or false", cfg.get("reuse"))
    jobs = (cfg.get("tier") or {}).get("jobs", 2)
    need(isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1, "tier.jobs",
         "must be an integer >= 1 (jobs at once with the local launcher)", jobs)
    if cfg.get("job", "train") == "train":
        need(isinstance(t.get("epochs"), int) and t["epochs"] >= 1, "train.epochs", "must be an integer >= 1",
             t.get("epochs"))
        need(t.get("batch_size", 0) >= 1, "train.batch_size", "must be >= 1", t.get("batch_size"))
        need(t.get("schedule") in SCHEDULES, "train.schedule", f"must be one of {', '.join(SCHEDULES)}",
             t.get("schedule"))
        need(t.get("optimizer", "sgd") in OPTIMIZERS, "train.optimizer", f"must be one of {', '.join(OPTIMIZERS)}",
             t.get("optimizer"))
        from benchmarks import protocols

        protocol = (cfg.get("dataset") or {}).get("protocol")
        need(protocol in protocols.available(), "dataset.protocol", f"must be one of {', '.join(protocols.available())}",
             protocol)
    if check_method:
        validate_method(cfg)
    try:
        search_config(cfg, epochs=1)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def search_config(cfg: dict, **loop):
    """The :class:`lfs.SearchConfig` of ``cfg``'s ``search`` group; ``loop`` sets or overrides
    ``epochs``, ``B``, ``mode``, ``executor``, ``seed``."""
    import lfs

    s = cfg["search"]
    kwargs = dict(B=s["B"], M=s["M"], sigma=float(s["sigma"]), sigma_is=s["sigma_is"], lr=float(s["lr"]),
                  policy_optimizer=s["policy_optimizer"], broadcast_optimizer=bool(s["broadcast_optimizer"]),
                  failed_reward=s["failed_reward"], constraint=s["constraint"], executor=s["executor"],
                  seed=cfg["seed"])
    return lfs.SearchConfig(**{**kwargs, **loop})


def validate_method(cfg: dict) -> None:
    """The method exists and its family, searcher or loss accept their arguments (a fit job's
    "methods" are baseline losses with a (t, tau) form)."""
    if cfg.get("job", "train") == "fit":
        import baselines

        known = [n for n in baselines.available() if baselines.get(n).transform is not None]
        if cfg["method"] not in known:
            raise ConfigError(f"method must be a baseline loss with a (t, tau) form for {cfg.get('table')}: "
                              f"{', '.join(known)}; got {cfg['method']!r}")
        return
    build_method(cfg)


def build_method(cfg: dict) -> dict:
    """The run's method, built: ``{"method", "family", "searcher"}`` for a search, ``{"method",
    "loss"}`` (a baselines entry and its hyper-parameters) for a fixed loss. Bad names or
    arguments raise :class:`ConfigError` naming them."""
    from lfs.family import make_family
    from lfs.searcher import make_searcher

    from benchmarks import methods

    try:
        method = methods.get(cfg["method"])
        parts = methods.resolve(method, cfg)
        if method.is_evolution:
            from benchmarks.evolution import build_evolution

            return {"method": method, **build_evolution(cfg, method)}
        if method.is_search:
            (fname, fkw), (sname, skw) = parts["family"], parts["searcher"]
            family = make_family(fname, **fkw)
            searcher = make_searcher(sname, **skw)
            searcher.setup(family)  # checks the pair (e.g. a constraint the family does not know)
            return {"method": method, "family": family, "searcher": searcher}
        import baselines

        name, kwargs = parts["loss"]
        if not method.teacher:
            baselines.get(name).training_loss(**kwargs)  # checks the hyper-parameter names
        return {"method": method, "loss": (name, kwargs)}
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise ConfigError(f"method: {msg}" if msg.startswith(("unknown method", "method ")) else
                          f"method {cfg['method']!r}: {msg}") from None


# ------------------------------------------------------------------------- before any job
def check_device(cfg: dict) -> None:
    """``device=cuda`` (or ``cuda:N``) where torch sees no such GPU is refused, not run on the CPU
    under a row that says cuda."""
    device = str(cfg.get("device") or "auto")
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ConfigError(f"device={device} but torch sees {torch.cuda.device_count()} CUDA GPU(s) here; "
                              "use device=cpu, or device=auto (a GPU when there is one)")
    elif device not in ("auto", "cpu"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def check_writable(folder, key: str = "results_dir") -> None:
    """``folder`` exists or can be made, and a file can be written in it: checked before any job
    trains for minutes and fails to write its row."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(os.path.expanduser(str(folder)))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={folder} is not writable ({e.strerror or e}); choose another {key}=...") from None


def is_slurm(launcher_target: str | None) -> bool:
    """Whether Hydra's launcher (its ``_target_``) submits to SLURM (submitit's SlurmLauncher)."""
    return bool(launcher_target) and "Slurm" in launcher_target


def check_slurm(launcher_target: str | None, what: str | None = None, undo: str | None = None) -> None:
    """A SLURM launcher (or ``what`` else submits to SLURM, e.g. ``evolve.array.enabled=true``;
    ``undo`` says how not to) needs SLURM's commands on this machine (submitit calls them) and a
    controller that answers."""
    import shutil
    import subprocess

    if what is None and not is_slurm(launcher_target):
        return
    what = what or "hydra/launcher is a SLURM launcher"
    undo = undo or "drop hydra/launcher=... to run here"
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        raise ConfigError(f"{what} but {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not on PATH: run on a SLURM login node "
                          f"(slurm/README.md), or {undo}")
    try:  # installed is not enough: the controller must answer
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
        problem = None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["no answer"])[0]
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = f"sinfo: {type(e).__name__}"
    if problem:
        raise ConfigError(f"{what} but the cluster does not answer ({problem}): start it (slurm/README.md) or {undo}")


def preflight(cfg: dict, launcher_target: str | None = None) -> None:
    """What the launching process can check before any job starts: where rows go, the device
    (locally; a cluster's nodes check their own), SLURM's presence for a SLURM launcher."""
    check_slurm(launcher_target)
    if ((cfg.get("evolve") or {}).get("array") or {}).get("enabled"):
        check_slurm(None, "evolve.array.enabled=true submits each generation's candidates as a SLURM job array",
                    "set evolve.array.enabled=false")
    if not is_slurm(launcher_target):
        check_device(cfg)
    check_writable(cfg["results_dir"])  # last: it makes the folder, which a refused run should not leave
