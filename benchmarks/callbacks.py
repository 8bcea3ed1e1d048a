"""Hydra callback: when a table's multirun ends, regenerate its CSV, Markdown and figures from
the rows and say where they are (it runs in the launching process, after every job finished,
also for SLURM launches)."""
from __future__ import annotations

from pathlib import Path

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback


class JobError(CompactHydraException):
    """Bad input met while a job ran (missing dataset, unusable checkpoint, ...): one line, and
    the exit code ``code`` (2: the input, 1: the computation; README "Exit codes")."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message, code)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])


class ReportCallback(Callback):
    """Validates the command line before any job starts, shows the sweep's progress while it runs
    (:mod:`benchmarks.progress`), and ends with the table's summary and where its files are."""

    progress = None

    def on_multirun_start(self, config, **kwargs) -> None:
        """Fail fast, before any job starts, on a bad value given on the command line."""
        import os
        import sys

        from omegaconf import OmegaConf

        from benchmarks import progress
        from benchmarks.config import preflight, validate

        try:
            keys = [k for k in config if k != "hydra"]  # hydra.* needs job values not known yet
            plain = OmegaConf.to_container(OmegaConf.masked_copy(config, keys), resolve=True)
            validate(plain, check_method=False)
            preflight(plain, OmegaConf.select(config, "hydra.launcher._target_", default=None))
        except Exception as e:  # noqa: BLE001 - one line, exit 2, no job launched
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        path = sweep_dir / "progress.jsonl"
        path.write_text("")  # a sweep folder given twice starts its progress over
        os.environ[progress.ENV] = str(path)
        total = progress.count_jobs(OmegaConf.to_container(config.hydra.sweeper.params or {}, resolve=False),
                                    list(config.hydra.overrides.task))
        ReportCallback.progress = progress.SweepProgress(path, total, enabled=bool(config.get("progress", True)))
        ReportCallback.progress.__enter__()

    @staticmethod
    def stop_progress() -> None:
        """Show the last jobs' lines and the counts (also when the sweep ends with a failed job)."""
        shown, ReportCallback.progress = ReportCallback.progress, None
        if shown is not None:
            shown.close()
            print(shown.summary(), flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        from benchmarks.report import build

        self.stop_progress()
        results_dir, tier, table = Path(config.results_dir), config.tier.name, config.table
        written = build(results_dir, tier, table)
        csv = [p for p in written if p.suffix == ".csv"]
        md = [p for p in written if p.suffix == ".md"]
        figs = [p for p in written if p.suffix == ".png"]
        for p in md:  # the table, with the paper's cells beside ours
            print("\n" + p.read_text().strip(), flush=True)
        print(f"\n{table} ({tier} tier): CSV {', '.join(map(str, csv)) or 'none'}; "
              f"Markdown {', '.join(map(str, md)) or 'none'}; "
              f"{len(figs)} figure(s) in {results_dir / tier / 'figures'}"
              + "".join(f"\n  {p}" for p in figs), flush=True)
