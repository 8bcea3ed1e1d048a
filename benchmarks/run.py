"""Run a table of the AM-LFS paper:  python benchmarks/run.py +table=<name> [tier=mini|full|smoke] [key=value ...]

A table config launches its own Hydra multirun (datasets x methods x settings x seeds, see
benchmarks/conf/sweep/). Each job writes one result row (one JSON file, atomically) with
provenance; a job whose row exists is skipped unless force=true. When the sweep ends, the
table's CSV, Markdown and figures are regenerated from the rows (benchmarks/report.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmarks import methods, results, runner
from benchmarks.config import ConfigError, row_setting, validate
from benchmarks.callbacks import JobError
from benchmarks.data import DatasetError
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
        if arg.lstrip("+").startswith("table="):
            name = arg.split("=", 1)[1]
            if name not in tables():
                print(f"error: unknown table {name!r} (+table=...); available: {', '.join(tables())}", file=sys.stderr)
                sys.exit(2)


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
    if path.exists() and not plain["force"]:
        print(f"skip: {path} exists (force=true reruns it)", flush=True)
        return
    env = distributed_environment()
    if env is not None and int(env["RANK"]) != 0 and not methods.get(plain["method"]).is_search:
        return  # a job of several processes: only a loss search is spread over them; rank 0 runs the rest
    for written in (path, path.with_name(path.stem + ".history.json")):  # a kill mid-write left these
        lfs_checkpoint.clean_temporaries(written)
    checkpoint = results.checkpoint_path(path) if plain.get("checkpoint", True) else None
    if checkpoint is not None and plain["force"]:
        lfs_checkpoint.remove(checkpoint)  # force: start over
    start = time.perf_counter()
    try:
        metrics, extra, history = runner.run(plain, checkpoint=checkpoint)
    except (DatasetError, ConfigError, lfs_checkpoint.CheckpointError, SearchFailed) as e:
        raise JobError(f"error: {ident['dataset']}/{ident['method']}/seed={ident['seed']}: {e}") from None
    if not is_writer():  # other ranks of a distributed search: rank 0 writes the row
        return
    prov = results.provenance(overrides=overrides)
    prov["wall_seconds"] = round(time.perf_counter() - start, 3)
    prov["config"] = plain
    if history:  # the row is written last: a row on disk means its run is complete
        results.atomic_write_json(path.with_name(path.stem + ".history.json"), history, indent=None)
    results.atomic_write_json(path, results.make_row(metrics=metrics, provenance=prov, extra=extra, **ident))
    if checkpoint is not None:
        lfs_checkpoint.remove(checkpoint)  # the row is on disk: the run is complete
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    print(f"done: {ident['dataset']}/{ident['method']}/{results.setting_key(ident['setting'])}/seed={ident['seed']}: "
          f"{shown} ({prov['wall_seconds']:.1f}s) -> {path}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args) or not any(a.lstrip("+").startswith("table=") for a in args):
        from benchmarks.cli import usage

        help_asked = any(a in ("-h", "--help") for a in args)
        print(usage(), file=sys.stdout if help_asked else sys.stderr)
        sys.exit(0 if help_asked else 2)
    check_table_argument(args)
    main()
