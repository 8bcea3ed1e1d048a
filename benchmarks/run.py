"""Run a table of the AM-LFS paper:  python benchmarks/run.py +table=<name> [tier=mini|full|smoke] [key=value ...]

A table config launches its own Hydra multirun (datasets x methods x settings x seeds, see
benchmarks/conf/sweep/). Each job writes one result row (one JSON file, atomically) with
provenance; a job whose row exists is skipped unless force=true. When the sweep ends, the
table's CSV, Markdown and figures are regenerated from the rows (benchmarks/report.py).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from hydra.errors import HydraException
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmarks import arguments, methods, progress, results, runner
from benchmarks.config import ConfigError, row_setting, validate
from benchmarks.callbacks import JobError
from benchmarks.data import DatasetError
from benchmarks.data.images import unwrap_worker_error
from lfs import SearchFailed
from lfs.distributed import environment as distributed_environment
from lfs.distributed import is_writer
from lfs import checkpoint as lfs_checkpoint

CONF = Path(__file__).resolve().parent / "conf"


def tables() -> list[str]:
    return sorted(p.stem for p in (CONF / "table").glob("*.yaml"))


def check_table_argument(argv: list[str]) -> None:
    """One-line error for an unknown ``+table=`` (Hydra's own message spans many lines)."""
    for arg in argv:
        if arg.startswith("table="):  # Hydra needs the +: the table key is not in config.yaml
            print(f"error: write +{arg} (with a +), or lfs-bench run {arg.split('=', 1)[1]}", file=sys.stderr)
            sys.exit(2)
        if arg.lstrip("+").startswith("table="):
            name = arg.split("=", 1)[1]
            if name not in tables():
                print(f"error: unknown table {name!r} (+table=...); available: {', '.join(tables())}", file=sys.stderr)
                sys.exit(2)


class HydraJobErrorFilter:
    """stderr without Hydra's "Error executing job with overrides: [...]" line (written straight
    to stderr by its JobReturn): the suite's own line names the failed job and its problem."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith("Error executing job with overrides:"):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    if cfg.get("table") is None:
        sys.exit(f"error: no table given: use +table=<name>; available: {', '.join(tables())}")
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        validate(plain)
    except Exception as e:  # noqa: BLE001 - every config error ends the same way: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    dataset = plain["dataset"]["name"] if plain.get("job", "train") == "train" else "none"
    overrides = list(HydraConfig.get().overrides.task)
    raw_setting = OmegaConf.to_container(cfg.setting, resolve=False)
    ident = dict(table=plain["table"], tier=plain["tier"]["name"], dataset=dataset, method=plain["method"],
                 setting=row_setting(plain["setting"], raw_setting, overrides), seed=plain["seed"])
    path = results.row_path(plain["results_dir"], **ident)
    label = f"{ident['dataset']}/{ident['method']}/{results.setting_key(ident['setting'])}/seed={ident['seed']}"
    if path.exists() and not plain["force"]:
        logging.getLogger("benchmarks.progress").info("skip: %s exists (force=true reruns it)", path)
        if not progress.report_job({"status": "skip", "label": label, "path": str(path)}):
            print(f"skip: {path} exists (force=true reruns it)", flush=True)
        return
    env = distributed_environment()
    if env is not None and int(env["RANK"]) != 0 and not methods.get(plain["method"]).is_search:
        return  # a job of several processes: only a loss search is spread over them; rank 0 runs the rest
    for written in (path, results.history_path(path)):  # a kill mid-write left these
        lfs_checkpoint.clean_temporaries(written)
    checkpoint = results.checkpoint_path(path) if plain.get("checkpoint", True) else None
    if checkpoint is not None and plain["force"]:
        lfs_checkpoint.remove(checkpoint)  # force: start over
        for stale in checkpoint.parent.glob(checkpoint.name + ".tune*"):  # a tuned arm's points
            stale.unlink()
    if (env is None and plain.get("reuse", True) and not plain["force"] and plain.get("job", "train") == "train"
            and not methods.get(plain["method"]).transfer):  # a transfer reads another table's row: never copied
        runner.set_threads(plain)  # as the run would: the thread count is part of what must agree
        current = results.provenance(overrides=overrides)
        source = results.same_computation(plain["results_dir"], ident["tier"], ident["table"], dataset, plain["method"],
                                          plain["seed"], plain, current)
        if source is not None:  # another table's row of the same computation: copied, not recomputed
            row = results.reused_row(source, plain["results_dir"], ident=ident, config=plain, current=current)
            if results.history_path(source).exists():
                lfs_checkpoint.atomic_write(results.history_path(path), results.history_path(source).read_bytes())
            results.atomic_write_json(path, row)
            event = {"status": "reused", "label": label, "metrics": row["metrics"], "path": str(path),
                     "source": row["provenance"]["reused_from"]["row"]}
            logging.getLogger("benchmarks.progress").info("%s -> %s", progress.job_line(event), path)
            if not progress.report_job(event):
                print(progress.job_line(event), flush=True)
            return
    start = time.perf_counter()
    try:
        metrics, extra, history = runner.run(plain, checkpoint=checkpoint)
    except Exception as e:  # noqa: BLE001 - bad input ends in one line; anything else is a bug: re-raised
        known = (DatasetError, ConfigError, lfs_checkpoint.CheckpointError, SearchFailed)
        cause = e if isinstance(e, known) else unwrap_worker_error(e)  # a DataLoader worker's DatasetError
        if cause is None:  # not the user's input: a bug. The traceback goes to the job's log
            logging.getLogger("benchmarks.run").info("job %s failed", label, exc_info=True)  # run.log only
            log_file = Path(HydraConfig.get().runtime.output_dir) / f"{HydraConfig.get().job.name}.log"
            message = (f"unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]} (the traceback is in "
                       f"{log_file}; please report it)")
            code = 1
        else:
            message = str(cause)
            code = 1 if isinstance(cause, SearchFailed) else 2  # the computation failed / the input cannot be used
        if is_writer():
            progress.report_job({"status": "failed", "label": label, "error": message})
        raise JobError(f"error: {ident['dataset']}/{ident['method']}/seed={ident['seed']}: {message}", code) from None
    if not is_writer():  # other ranks of a distributed search: rank 0 writes the row
        return
    prov = results.provenance(overrides=overrides)
    prov["wall_seconds"] = round(time.perf_counter() - start, 3)
    prov["config"] = plain
    if history:  # the row is written last: a row on disk means its run is complete
        if not plain.get("history_candidates", False):
            history = results.without_candidates(history)
        results.write_history(path, history)
    results.atomic_write_json(path, results.make_row(metrics=metrics, provenance=prov, extra=extra, **ident))
    if checkpoint is not None:
        lfs_checkpoint.remove(checkpoint)  # the row is on disk: the run is complete
    event = {"status": "done", "label": label, "metrics": metrics, "seconds": prov["wall_seconds"], "path": str(path)}
    logging.getLogger("benchmarks.progress").info("%s -> %s", progress.job_line(event), path)
    if not progress.report_job(event):  # not in a sweep that shows progress: say it here
        print(f"done: {progress.job_line(event)} -> {path}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args) or not any(a.lstrip("+").startswith("table=") for a in args):
        from benchmarks.cli import usage

        help_asked = any(a in ("-h", "--help") for a in args)
        print(usage(), file=sys.stdout if help_asked else sys.stderr)
        sys.exit(0 if help_asked else 2)
    check_table_argument(args)
    try:
        sys.argv[1:] = arguments.check(args)
    except arguments.ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.stderr = HydraJobErrorFilter(sys.stderr)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing: the lines below say it once
    try:
        main()
    except JobError as e:  # a job met bad input: its one line (the other jobs' rows are on disk)
        from benchmarks.callbacks import ReportCallback

        ReportCallback.stop_progress()
        print(str(e), file=sys.stderr)
        sys.exit(e.code)
    except HydraException as e:  # a composition error the checks above did not foresee
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
