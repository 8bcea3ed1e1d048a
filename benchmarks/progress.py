"""A sweep's progress, shown by the process that launched it: one line per finished job with
jobs done / total, elapsed time and ETA off a terminal, one overall bar in a terminal.

Jobs run in other processes (joblib workers, SLURM nodes), or one after another in this one (the
smoke tier: ``tier.jobs: 1``), so they do not print their own bars.
Each job appends one JSON line to the sweep's progress file when it ends (done, skipped or
failed; :func:`report_job`); the launching process tails that file (:class:`SweepProgress`,
started and stopped by :class:`benchmarks.callbacks.ReportCallback`). The file's path reaches the
jobs through the environment (:data:`ENV`), which joblib workers and SLURM jobs inherit. A job
run outside such a sweep prints its own line instead.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

ENV = "LFS_BENCH_PROGRESS"


def count_jobs(sweeper_params: dict, task_overrides: list[str]) -> int | None:
    """The number of jobs Hydra's basic sweeper makes of a table's sweep and the command line's
    overrides (a later value of a key replaces an earlier one, as in the sweeper). None when the
    overrides cannot be parsed here (the sweep still runs; the progress shows no total)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(task_overrides)
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
        return sum(len(b) for b in batches)
    except Exception:  # noqa: BLE001 - a private Hydra API: without it, progress has no total
        return None


def duration(seconds: float) -> str:
    """``42 s``, ``5 min``, ``1 h 20 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def job_line(event: dict) -> str:
    """What a finished job says: ``mnist1d/learn/noise=0.1/seed=2 top1_error=12.3 (6.2 s)``."""
    label = event["label"]
    if event["status"] == "skip":
        return f"skip: {label}: its row exists (force=true reruns it)"
    if event["status"] == "failed":
        return f"FAILED: {label}: {event.get('error', '')}"
    if event["status"] == "reused":  # the same computation was a row of another table
        return f"reused: {label}: the same computation as {event.get('source', '?')} (reuse=false recomputes it)"
    shown = " ".join(f"{k}={v:.4g}" for k, v in (event.get("metrics") or {}).items())
    return f"{label} {shown} ({event.get('seconds', 0):.1f} s)"


def report_job(event: dict) -> bool:
    """Append a finished job's event to the sweep's progress file; False (nothing written) outside
    a sweep that shows progress: the caller prints its own line then."""
    path = os.environ.get(ENV)
    if not path:
        return False
    line = (json.dumps(event, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one write: lines never interleave
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return True


class SweepProgress:
    """Tails a sweep's progress file in a background thread and shows each finished job."""

    def __init__(self, path: Path, total: int | None, stream=None, interval: float = 0.5, enabled: bool = True):
        self.path, self.total, self.interval, self.enabled = Path(path), total, interval, enabled
        self.stream = stream or sys.stdout
        self.done = self.computed = self.failed = self.reused = 0
        self.start = time.monotonic()
        self._offset = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="jobs", unit="job", file=self.stream, dynamic_ncols=True)
            except ImportError:
                pass

    def eta(self) -> str:
        """From the jobs computed so far (skipped ones cost nothing)."""
        if self.total is None or not self.computed:
            return ""
        left = self.total - self.done
        seconds = (time.monotonic() - self.start) / self.computed * left
        return f" · ETA {duration(seconds)}" if left > 0 else ""

    def show(self, event: dict) -> None:
        self.done += 1
        self.computed += event["status"] == "done"
        self.failed += event["status"] == "failed"
        self.reused += event["status"] == "reused"
        total = "?" if self.total is None else self.total
        line = f"[{self.done}/{total}] {job_line(event)}"
        if not self.enabled and event["status"] != "failed":
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.update(1)
        else:
            elapsed = duration(time.monotonic() - self.start)
            print(f"{line} · {elapsed} elapsed{self.eta()}", file=self.stream, flush=True)

    def poll(self) -> None:
        """Show the events appended since the last poll (complete lines only)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for raw in data[: end + 1].splitlines():
            try:
                self.show(json.loads(raw))
            except (ValueError, KeyError):
                continue

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def __enter__(self) -> "SweepProgress":
        self._thread = threading.Thread(target=self._loop, name="lfs-bench-progress", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        if self.bar is not None:
            self.bar.close()

    def summary(self) -> str:
        took = duration(time.monotonic() - self.start)
        skipped = self.done - self.computed - self.failed - self.reused
        parts = [f"{self.computed} run", f"{skipped} skipped (rows exist)"]
        if self.reused:
            parts.append(f"{self.reused} reused (the same computation in another table's row)")
        if self.failed:
            parts.append(f"{self.failed} FAILED")
        return f"{self.done} job(s) in {took}: " + ", ".join(parts)

