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

from benchmarks import results, runner

CONF = Path(__file__).resolve().parent / "conf"


def tables() -> list[str]:
    return sorted(p.stem for p in (CONF / "table").glob("*.yaml"))


def check_table_argument(argv: list[str]) -> None:
    """One-line error for an unknown ``+table=`` (Hydra's own message spans many lines)."""
    for arg in argv:
        if arg.lstrip("+").startswith("table="):
            name = arg.split("=", 1)[1]
            if name not in tables():
                sys.exit(f"error: unknown table {name!r} (+table=...); available: {', '.join(tables())}")


# Overrides that do not change what a run computes, or that are already part of a row's identity.
IDENTITY_FREE = {"table", "tier", "dataset", "method", "seed", "results_dir", "force", "progress", "threads",
                 "cache_dir"}


def row_setting(setting: dict, overrides: list[str]) -> dict:
    """The table's swept knobs plus every other override that changes the computation (e.g.
    ``search.sigma_is=std``), so that variants of a table never share a result row."""
    out = dict(setting)
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key in IDENTITY_FREE or key in setting or not value:
            continue
        if key in ("noise", "search.B", "search.M", "search.sigma_is") and key.split(".")[-1] in setting:
            continue
        out[key] = value
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    if cfg.get("table") is None:
        sys.exit(f"error: no table given: use +table=<name>; available: {', '.join(tables())}")
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        runner.validate(plain)
    except Exception as e:  # noqa: BLE001 - every config error ends the same way: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    dataset = "none" if plain["table"] == "figure1" else plain["dataset"]["name"]
    overrides = list(HydraConfig.get().overrides.task)
    ident = dict(table=plain["table"], tier=plain["tier"]["name"], dataset=dataset, method=plain["method"],
                 setting=row_setting(plain["setting"], overrides), seed=plain["seed"])
    path = results.row_path(plain["results_dir"], **ident)
    if path.exists() and not plain["force"]:
        print(f"skip: {path} exists (force=true reruns it)", flush=True)
        return
    start = time.perf_counter()
    metrics, extra, history = runner.run(plain)
    prov = results.provenance(overrides=overrides)
    prov["wall_seconds"] = round(time.perf_counter() - start, 3)
    prov["config"] = plain
    if history:  # the row is written last: a row on disk means its run is complete
        results.atomic_write_json(path.with_name(path.stem + ".history.json"), history, indent=None)
    results.atomic_write_json(path, results.make_row(metrics=metrics, provenance=prov, extra=extra, **ident))
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    print(f"done: {ident['dataset']}/{ident['method']}/{results.setting_key(ident['setting'])}/seed={ident['seed']}: "
          f"{shown} ({prov['wall_seconds']:.1f}s) -> {path}", flush=True)


if __name__ == "__main__":
    check_table_argument(sys.argv[1:])
    main()
