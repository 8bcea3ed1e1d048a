"""Hydra callback: when a table's multirun ends, regenerate its CSV, Markdown and figures from
the rows and say where they are (it runs in the launching process, after every job finished,
also for SLURM launches)."""
from __future__ import annotations

from pathlib import Path

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback


class JobError(CompactHydraException):
    """Bad input met while a job ran (missing dataset, unusable checkpoint, ...): Hydra prints
    just this message (no traceback) and the command exits non-zero."""


class ReportCallback(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        """Fail fast, before any job starts, on a bad value given on the command line."""
        import sys

        from omegaconf import OmegaConf

        from benchmarks.config import validate

        try:
            keys = [k for k in config if k != "hydra"]  # hydra.* needs job values not known yet
            validate(OmegaConf.to_container(OmegaConf.masked_copy(config, keys), resolve=True), check_method=False)
        except Exception as e:  # noqa: BLE001 - one line, exit 2, no job launched
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)

    def on_multirun_end(self, config, **kwargs) -> None:
        from benchmarks.report import build

        results_dir, tier, table = Path(config.results_dir), config.tier.name, config.table
        written = build(results_dir, tier, table)
        csv = [p for p in written if p.suffix == ".csv"]
        md = [p for p in written if p.suffix == ".md"]
        figs = [p for p in written if p.suffix == ".png"]
        print(f"\n{table} ({tier} tier): CSV {', '.join(map(str, csv)) or 'none'}; "
              f"Markdown {', '.join(map(str, md)) or 'none'}; "
              f"{len(figs)} figure(s) in {results_dir / tier / 'figures'}", flush=True)
