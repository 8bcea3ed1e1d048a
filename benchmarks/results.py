"""Result rows: one JSON file per run, written atomically, with provenance.

A row says what was run (table, tier, dataset, method, setting, seed), what came out (metrics)
and how it was produced (command line and Hydra overrides, git commit and dirty flag, host,
CPU/GPU model, library versions, wall time, date). The file name is a function of the run's
identity, so concurrent jobs never write the same file, and a rerun finds its own row (and is
skipped unless forced).

Layout: ``<results_dir>/<tier>/<table>/<dataset>/<method>/<setting>/seed=<seed>.json`` with an
optional ``seed=<seed>.history.json.gz`` beside it: the per-epoch records of a search (rewards,
the searcher's record such as mu; the sampled candidates only with ``history_candidates=true``,
since they follow from the seed), gzipped compact JSON with every float kept to 7
significant digits (float32 precision; the row's own numbers are not rounded), which makes it
about 5x smaller than plain JSON. :func:`load_history` also reads the older uncompressed
``.history.json``.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from lfs.checkpoint import atomic_write

ROW_KEYS = ("table", "tier", "dataset", "method", "setting", "seed", "metrics", "provenance")


def setting_key(setting: dict) -> str:
    """A stable, file-name-safe key of a setting dict: ``noise=0.1`` / ``B=8,M=6`` / ``default``."""
    if not setting:
        return "default"
    return ",".join(f"{k}={_fmt(v)}" for k, v in sorted(setting.items()))


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def row_path(results_dir: str | Path, tier: str, table: str, dataset: str, method: str, setting: dict,
             seed: int) -> Path:
    return Path(results_dir) / tier / table / dataset / method / setting_key(setting) / f"seed={seed}.json"


def checkpoint_path(row: Path) -> Path:
    """Where the run of a row keeps its per-epoch checkpoint until the row is written."""
    return row.with_name(row.stem + ".ckpt")


def atomic_write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    """Write JSON atomically (:func:`lfs.checkpoint.atomic_write`): readers see the old file or
    the complete new one, never a partial one."""
    text = json.dumps(obj, indent=indent, sort_keys=True, allow_nan=True, default=_jsonable)
    atomic_write(path, text.encode())


HISTORY_DIGITS = 7


def history_path(row: Path) -> Path:
    """Where a row's per-epoch history lives (beside it)."""
    row = Path(row)
    return row.with_name(row.stem + ".history.json.gz")


def _round(x, digits: int = HISTORY_DIGITS):
    if isinstance(x, float):
        return x if not math.isfinite(x) or x == 0 else float(f"{x:.{digits}g}")
    if isinstance(x, list):
        return [_round(v, digits) for v in x]
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    return x


def write_history(row: Path, history: list) -> Path:
    """Write a row's history atomically (see the module docstring for the format)."""
    plain = json.loads(json.dumps(history, allow_nan=True, default=_jsonable))  # tensors -> lists
    text = json.dumps(_round(plain), separators=(",", ":"), sort_keys=True, allow_nan=True)
    path = history_path(row)
    atomic_write(path, gzip.compress(text.encode(), compresslevel=9, mtime=0))
    return path


def without_candidates(history: list) -> list:
    """A search's history without each epoch's sampled candidates (``history_candidates=false``):
    they follow from the run's seed and the searcher's state, and are most of a history's size."""
    return [{k: v for k, v in h.items() if k != "candidates"} if isinstance(h, dict) else h for h in history]


def compact_histories(results_dir: str | Path) -> tuple[int, int, int]:
    """Rewrite every history under ``results_dir`` without candidates (the default's format):
    ``(histories rewritten, bytes before, bytes after)``."""
    n = before = after = 0
    for row in sorted(Path(results_dir).rglob("seed=*.json")):
        if row.name.endswith(".history.json"):
            continue
        history = load_history(row)
        if not history or not any(isinstance(h, dict) and "candidates" in h for h in history):
            continue
        legacy = row.with_name(row.stem + ".history.json")
        before += sum(p.stat().st_size for p in (history_path(row), legacy) if p.exists())
        after += write_history(row, without_candidates(history)).stat().st_size
        if legacy.exists():
            legacy.unlink()
        n += 1
    return n, before, after


def load_history(row: Path) -> list | None:
    """A row's history (gzipped, or the older plain ``.history.json``); None if it has none."""
    row = Path(row)
    path = history_path(row)
    legacy = row.with_name(row.stem + ".history.json")
    try:
        if path.exists():
            return json.loads(gzip.decompress(path.read_bytes()))
        return json.loads(legacy.read_text()) if legacy.exists() else None
    except (OSError, EOFError, ValueError) as e:  # a truncated gzip, bad JSON
        raise ValueError(f"malformed history {path if path.exists() else legacy}: {type(e).__name__}; "
                         "delete it (its row stays valid) or rerun the row with force=true") from None


def _jsonable(obj):
    """Tensors and numpy values become lists / numbers in rows."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: the files whose content decides what a job computes: the library, the baselines, the harness
#: and its configs (documents and tests do not)
CODE_FILES = ("lfs/**/*.py", "baselines/**/*.py", "benchmarks/**/*.py", "benchmarks/**/*.yaml")
_DIGESTS: dict = {}


def code_digest(repo: Path | None = None) -> str:
    """SHA-256 of the code a job runs (:data:`CODE_FILES`, paths and contents, in path order), as it
    is on disk now: equal digests mean the same code, committed or not (computed once per process)."""
    import hashlib

    repo = Path(repo or Path(__file__).resolve().parents[1])
    if repo not in _DIGESTS:
        h = hashlib.sha256()
        for path in sorted({p for pattern in CODE_FILES for p in repo.glob(pattern) if p.is_file()}):
            h.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
        _DIGESTS[repo] = h.hexdigest()
    return _DIGESTS[repo]


def provenance(overrides: Iterable[str] = (), repo: Path | None = None) -> dict:
    """Everything needed to say how a row was produced (except the wall time, added by the caller)."""
    import numpy
    import torch

    import lfs

    repo = repo or Path(__file__).resolve().parents[1]
    commit = _git("rev-parse", "HEAD", cwd=repo)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=repo)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "overrides": list(overrides),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "code_digest": code_digest(repo),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "gpu": gpu,
        "torch_threads": torch.get_num_threads(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(os.environ["SLURM_RESTART_COUNT"]) if "SLURM_RESTART_COUNT" in os.environ else None,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                     "lfs": lfs.__version__},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def compact(info: dict, max_items: int = 64) -> dict:
    """The small, descriptive part of a loader's ``info`` (scalars, short lists, small dicts):
    generator internals and per-example arrays stay out of result rows."""
    out = {}
    for k, v in info.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and len(v) <= max_items and all(isinstance(x, (str, int, float)) for x in v):
            out[k] = list(v)
        elif isinstance(v, dict) and len(json.dumps(v, default=str)) <= 2000:
            out[k] = v
    return out


def make_row(*, table: str, tier: str, dataset: str, method: str, setting: dict, seed: int, metrics: dict,
             provenance: dict, extra: dict | None = None) -> dict:
    row = {"table": table, "tier": tier, "dataset": dataset, "method": method, "setting": dict(setting),
           "seed": int(seed), "metrics": dict(metrics), "provenance": dict(provenance)}
    if extra:
        row["extra"] = extra
    return row


def load_rows(results_dir: str | Path) -> list[dict]:
    """Every row under ``results_dir`` (history files and temporaries excluded); a malformed
    row file raises ``ValueError`` naming the file."""
    rows = []
    for path in sorted(Path(results_dir).rglob("seed=*.json")):
        if path.name.endswith(".history.json"):
            continue
        try:
            row = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed result row {path}: {e}") from None
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"malformed result row {path}: missing {', '.join(missing)}")
        row["_path"] = str(path)
        rows.append(row)
    return rows


#: provenance fields two rows must share to be the same computation besides their config: the
#: code (:func:`code_digest`), the libraries and the hardware that ran it
SAME_CODE = ("code_digest", "versions", "cpu", "gpu", "torch_threads", "world_size")


def same_computation(results_dir: str | Path, tier: str, table: str, dataset: str, method: str, seed: int,
                     config: dict, current: dict) -> Path | None:
    """A row of *another* table under ``results_dir`` that computed exactly this job, or None.

    Same computation: the same :func:`benchmarks.config.computation` of the config (everything
    but the row's labels and where output goes: the executor, device, threads and denormal
    flushing included), and the same code, libraries and hardware (:data:`SAME_CODE`; rows
    written before the code digest was recorded never match). ``current`` is this job's
    :func:`provenance`. Such a row is what this job would compute, bit for bit (the runs are
    deterministic for a seed: REPRODUCE.md, "Resume"); the first in path order is returned."""
    from .config import computation

    if not current.get("code_digest"):
        return None
    want = computation(config)
    for path in sorted(Path(results_dir).glob(f"{tier}/*/{dataset}/{method}/*/seed={seed}.json")):
        if path.parts[-5] == table:
            continue
        try:
            row = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a malformed row is report.py's to name; here it is just not a match
        prov = row.get("provenance") or {}
        if (prov.get("config") is not None and all(prov.get(k) == current.get(k) for k in SAME_CODE)
                and computation(prov["config"]) == want):
            return path
    return None


def reused_row(source: Path, results_dir: str | Path, *, ident: dict, config: dict, current: dict) -> dict:
    """This job's row made from ``source``'s (:func:`same_computation`): its metrics and extra,
    its provenance of the computation (commit, host, CPU, versions, date and wall time of the run
    that computed it), with this job's command, overrides and config, and ``reused_from``: the
    source row (relative to ``results_dir``), its command and the date of the copy."""
    row = json.loads(Path(source).read_text())
    prov = dict(row["provenance"])
    prov["reused_from"] = {"row": str(Path(source).relative_to(results_dir)), "command": prov.get("command"),
                           "overrides": prov.get("overrides"),
                           "copied": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    prov.update(command=current["command"], overrides=current["overrides"], config=config)
    return make_row(metrics=row["metrics"], provenance=prov, extra=row.get("extra"), **ident)
