"""An evolutionary loss search as one run of a table (AutoLoss-Zero, CVPR 2022; CSE-Autoloss,
ICLR 2021): the method's :class:`~lfs.evolve.evolution.EvolutionSearch` over loss expressions,
each candidate that survives the screening trained from scratch on the run's data for
``evolve.proxy_epochs`` epochs (the proxy task) and scored on the validation split; then the
best formula is retrained from scratch with the table's full schedule and evaluated on the test
split, like every other method's model.

Budget and proxy come from the ``evolve`` config group (the tier sets them); the method file
says which techniques are on (``screening``: LRP, convergence verification, the model
optimization simulation on one training example per class; ``evolution.gec``;
``proxy.stop_invalid``: stop a candidate's training at its first non-finite loss, else train it
to the end whatever happens, the naive evolution of AutoLoss-Zero's ablation).
"""
from __future__ import annotations

import json
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
    if method.transfer is not None:  # no search: the formula comes from the source row
        return {"family": family, "transfer": dict(method.transfer), "evolution": None, "screening": None,
                "stop_invalid": True}
    budget = cfg.get("evolve") or {}
    fields = {**method.evolution, "operators": family.operators, "seed": int(cfg["seed"]),
              "max_evaluations": budget.get("max_evaluations"), "max_seconds": budget.get("max_seconds"),
              "max_explored": budget.get("max_explored")}
    try:
        evolution = EvolutionConfig(**fields)
        screening = ScreeningConfig(**method.screening) if method.screening else None
    except TypeError as e:
        raise ValueError(f"{e} (fields of lfs.evolve.evolution.EvolutionConfig / screening.ScreeningConfig)") from None
    stop_invalid = bool((method.proxy or {}).get("stop_invalid", True))
    if (budget.get("array") or {}).get("enabled"):
        check_array(budget["array"])
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


def proxy_reward(proxy, expression, epochs: int, seed: int, stop_invalid: bool) -> float:
    """A candidate's fitness: a fresh model trained ``epochs`` epochs on the proxy task with it,
    scored by the task's validation reward; ``-inf`` when training or the reward is not finite
    (a failed simulation). The in-process search and each job-array task both call this."""
    state, finite = train_with(proxy, expression, epochs, seed, stop_invalid)
    if not finite:
        return -math.inf
    reward = proxy.reward(state)
    return reward if math.isfinite(reward) else -math.inf


def _tasks(cfg: dict, family, proxy_epochs: int | None = None) -> tuple:
    """``(data, task, proxy)``: the run's data, its task with ``family``'s loss and, with
    ``proxy_epochs``, the proxy task (the same with that many epochs; else None). A value the data
    cannot serve is a setup error, as for every run (:func:`benchmarks.runner.train`)."""
    from benchmarks import runner
    from benchmarks.methods import with_values

    try:
        data = runner.load_data(cfg)
        model_fn = runner.model_factory(cfg, data)
        proxy = (None if proxy_epochs is None else
                 runner.make_task(with_values(cfg, {"train.epochs": proxy_epochs}), data, model_fn, family.loss))
        task = runner.make_task(cfg, data, model_fn, family.loss)
    except DatasetError:
        raise
    except (ValueError, TypeError) as e:
        raise runner.setup_error(e) from None
    return data, task, proxy


def proxy_fitness(cfg: dict, formula: str) -> float:
    """One candidate's fitness on its own (a task of a SLURM job array): the run's data and proxy
    task built afresh, the formula trained as :func:`run_evolution`'s in-process ``evaluate``
    trains it (same seed; ``cfg["threads"]`` is the launching process's thread count), so the value
    is the one the search would compute itself on the same kind of machine."""
    from benchmarks import methods, runner

    runner.set_threads(cfg)
    torch.manual_seed(int(cfg["seed"]))  # as runner.run before the data (a loader may draw from torch's generator)
    built = build_evolution(cfg, methods.get(cfg["method"]))
    family, epochs = built["family"], int(cfg["evolve"]["proxy_epochs"])
    _, _, proxy = _tasks(cfg, family, epochs)
    return proxy_reward(proxy, family.expression(formula), epochs, int(cfg["seed"]), built["stop_invalid"])


ARRAY_KEYS = {"cpus_per_task": int, "timeout_min": int, "parallelism": int, "mem_gb": (int, float)}


def check_array(array: dict) -> None:
    """``evolve.array``'s values (when enabled), each bad one as one line."""
    for key, kind in ARRAY_KEYS.items():
        value = array.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
            raise ValueError(f"evolve.array.{key} must be a positive number, got {value!r}")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ValueError("evolve.array.enabled=true needs submitit: pip install submitit") from None


def _task_error(job) -> str:
    """The exception a failed submitit task raised, in one line: the last line of the task's
    traceback (between submitit's two dashed lines), else the error's own first line."""
    try:
        job.result()
    except Exception as e:
        text = str(e)
        parts = [p for p in text.split("----------------------") if p.strip()]
        trace = parts[1] if len(parts) >= 3 else ""  # header, trace, footer
        lines = [ln.strip() for ln in (trace or text).splitlines() if ln.strip()]
        return (lines[-1] if trace else lines[0]) if lines else type(e).__name__
    return "no error"


def array_evaluator(cfg: dict, folder: Path):
    """``evaluate_batch(expressions) -> fitnesses``: one SLURM job array per batch through
    submitit (``evolve.array``: partition, cpus_per_task, mem_gb, timeout_min, parallelism), one
    task of :func:`proxy_fitness` per candidate; the launching job waits for the array. The tasks
    use the launching process's torch thread count and device, so that they compute what it would."""
    import submitit

    a = cfg["evolve"]["array"]
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm")
    params = {"cpus_per_task": int(a["cpus_per_task"]), "mem_gb": a["mem_gb"], "timeout_min": int(a["timeout_min"]),
              "slurm_array_parallelism": int(a["parallelism"]), "name": f"lfs-evolve-{cfg['method']}"}
    if a.get("partition"):
        params["slurm_partition"] = a["partition"]
    executor.update_parameters(**params)
    task_cfg = {**cfg, "threads": torch.get_num_threads()}

    def evaluate_batch(expressions) -> list[float]:
        formulas = [str(e) for e in expressions]
        jobs = executor.map_array(proxy_fitness, [task_cfg] * len(formulas), formulas)
        out = []
        for job, formula in zip(jobs, formulas):
            try:
                out.append(float(job.result()))
            except Exception:  # a task that died: stop the rest; the search resumes from its checkpoint
                for other in jobs:
                    if not other.done():
                        other.cancel(check=False)
                raise RuntimeError(f"evolve.array: the task for {formula} (SLURM job {job.job_id}) failed: "
                                   f"{_task_error(job)}; its log: {job.paths.stderr}; rerun to resume") from None
        return out

    return evaluate_batch


def source_row(cfg: dict, transfer: dict) -> tuple[Path, dict]:
    """The row whose found loss a transfer retrains: ``transfer``'s table, dataset and method, this
    run's tier and seed, under ``evolve.source_results`` (default: the run's ``results_dir``).
    A missing or ambiguous source is one line saying what to run or to set."""
    from benchmarks.config import ConfigError

    root = Path(str((cfg.get("evolve") or {}).get("source_results") or cfg["results_dir"])).expanduser()
    tier, seed = cfg["tier"]["name"], int(cfg["seed"])
    where = root / tier / transfer["table"] / transfer["dataset"] / transfer["method"]
    found = sorted(where.glob(f"*/seed={seed}.json"))
    if not found:
        raise ConfigError(f"method {cfg['method']!r} retrains the loss found by {transfer['method']} on "
                          f"{transfer['dataset']} (table {transfer['table']}), but {where}/*/seed={seed}.json does not "
                          f"exist: run `python benchmarks/run.py +table={transfer['table']} tier={tier} "
                          f"dataset={transfer['dataset']} method={transfer['method']} seed={seed}` first, or set "
                          "evolve.source_results to the folder that holds it (e.g. results)")
    if len(found) > 1:
        raise ConfigError(f"method {cfg['method']!r}: {len(found)} source rows under {where} for seed {seed} "
                          f"({', '.join(p.parent.name for p in found)}); keep one setting there")
    try:
        row = json.loads(found[0].read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"method {cfg['method']!r}: the source row {found[0]} cannot be read ({e}); "
                          "rerun its table with force=true") from None
    if not (row.get("extra") or {}).get("loss"):
        raise ConfigError(f"method {cfg['method']!r}: the source row {found[0]} records no found loss (extra.loss)")
    return found[0], row


def run_transfer(cfg: dict, built: dict, progress) -> tuple:
    """A found loss retrained from scratch on this run's data with the table's schedule, like an
    evolution's final retraining: ``(model, history, extra, data)``; the row records its source."""
    from benchmarks import runner

    family, seed = built["family"], int(cfg["seed"])
    path, source = source_row(cfg, built["transfer"])
    formula = source["extra"]["loss"]
    data, task, _ = _tasks(cfg, family)
    try:
        expression = family.expression(formula)
    except (ValueError, TypeError) as e:
        raise runner.setup_error(e) from None
    progress.say(f"  retraining {formula} (found by {source['method']} on {source['dataset']}, seed {source['seed']})")
    t0 = time.perf_counter()
    epochs = int(cfg["train"]["epochs"])
    state, finite = train_with(task, expression, epochs, seed)
    extra = {"loss": formula, "family": "expression", "val_reward": task.reward(state), "finite": finite,
             "train_seconds": time.perf_counter() - t0, "model_epochs": epochs,
             "source": {"path": str(path), "table": source["table"], "dataset": source["dataset"],
                        "method": source["method"], "seed": source["seed"],
                        "git_commit": (source.get("provenance") or {}).get("git_commit"),
                        "model_epochs": (source.get("extra") or {}).get("model_epochs")}}
    return state.model, [], extra, data


def run_evolution(cfg: dict, built: dict, checkpoint: str | Path | None, progress) -> tuple:
    """The search, then the retraining of its best formula: ``(model, history, extra, data)``
    (a transfer method: :func:`run_transfer`)."""
    from benchmarks import runner
    from lfs.evolve.evolution import EvolutionSearch

    if built.get("transfer") is not None:
        return run_transfer(cfg, built, progress)

    family, seed = built["family"], int(cfg["seed"])
    proxy_epochs = int(cfg["evolve"]["proxy_epochs"])
    data, task, proxy = _tasks(cfg, family, proxy_epochs)

    def evaluate(expression) -> float:
        return proxy_reward(proxy, expression, proxy_epochs, seed, built["stop_invalid"])

    simulation = None
    if built["screening"] is not None and built["screening"].simulate:
        from lfs.evolve.simulation import OptimizationSimulation

        sc = built["screening"]
        try:
            simulation = OptimizationSimulation(proxy, sc.simulate_steps, sc.simulate_per_class, seed)
        except ValueError as e:
            raise runner.setup_error(e) from None

    def said(item):
        what = f"fitness {item.fitness:.4f}" if item.fitness is not None else f"rejected: {item.reason}"
        progress.say(f"  {item.formula} {what}")

    start = time.perf_counter()
    evaluate_batch = None
    if (cfg["evolve"].get("array") or {}).get("enabled"):
        folder = (Path(str(cfg["results_dir"])).expanduser() / "logs" / "evolve_array"
                  / f"{cfg['tier']['name']}-{cfg.get('table')}-{cfg['dataset']['name']}-{cfg['method']}-seed{seed}")
        evaluate_batch = array_evaluator(cfg, folder)  # submitit's scripts and logs, beside Hydra's
    else:
        evaluate(family.identity())  # warm-up (first-call costs), so that the search's clock times the search
    search = EvolutionSearch(evaluate, built["evolution"], built["screening"], checkpoint=checkpoint,
                             on_evaluated=said, simulation=simulation, evaluate_batch=evaluate_batch)
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
             "evaluated_in": "slurm job arrays" if evaluate_batch is not None else "this process",
             "train_seconds": search_seconds + time.perf_counter() - t0,
             "model_epochs": result.evaluations * proxy_epochs + int(cfg["train"]["epochs"])}
    return state.model, [asdict(h) for h in result.history], extra, data


def _rejected_share(history) -> float | None:
    spent = [(h.screen_seconds + h.seconds, h.fitness is None) for h in history]
    total = sum(s for s, _ in spent)
    return None if total <= 0 else sum(s for s, rejected in spent if rejected) / total
