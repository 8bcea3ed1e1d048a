"""Atomic, checksummed checkpoint files, and the process-wide RNG state they carry.

A checkpoint file is ``MAGIC`` + the SHA-256 of the payload (64 hex digits) + ``\\n`` + the payload
(``torch.save`` bytes). :func:`save` writes a temporary file in the same folder, fsyncs it, moves
the current checkpoint to ``<path>.prev`` and renames the temporary over ``<path>``, so a crash
at any point (``kill -9`` included) leaves a complete checkpoint at ``<path>`` or at
``<path>.prev``. :func:`load` verifies the checksum; a truncated or corrupted file is reported
and the previous good one used; if neither is good it raises :class:`CheckpointError` (never a
silently wrong resume).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

MAGIC = b"LFSCKPT1\n"


class CheckpointError(RuntimeError):
    """No usable checkpoint: every candidate file is truncated, corrupted or unreadable."""


def previous(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".prev")


def atomic_write(path: str | Path, data: bytes, keep_previous: bool = False) -> None:
    """Write ``data`` to a temporary file in the same folder, fsync, then rename over ``path``:
    readers see the old file or the complete new one, never a partial one. With
    ``keep_previous`` the replaced file is kept as ``<path>.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        if keep_previous and path.exists():
            os.replace(path, previous(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save(path: str | Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically; the replaced checkpoint is kept as ``<path>.prev``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_write(path, MAGIC + digest + b"\n" + payload, keep_previous=True)


def _read(path: Path) -> Any:
    """The object in one checkpoint file; ``ValueError`` if it is not a complete, intact one."""
    data = path.read_bytes()
    head = len(MAGIC) + 65
    if not data.startswith(MAGIC) or len(data) < head or data[head - 1 : head] != b"\n":
        raise ValueError("not an LFS Bench checkpoint (bad header)")
    digest, payload = data[len(MAGIC) : head - 1].decode("ascii", "replace"), data[head:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError("checksum mismatch (truncated or corrupted)")
    # Our own file, verified above; it holds RNG states (numpy arrays, tuples), hence not weights_only.
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)


def clean_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries that a write of ``path`` (or of its ``.prev``) left behind when it was
    killed between creating and renaming them (``.<name>.<random>.tmp`` beside it). Call it where
    no write of ``path`` can be under way (a job's start); returns the files removed."""
    path = Path(path)
    removed = []
    for name in (path.name, previous(path).name):
        for tmp in path.parent.glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    if removed:
        log.info("removed %d stale temporary file(s) of %s", len(removed), path)
    return removed


def load_with_source(path: str | Path) -> tuple[Any, Path] | None:
    """``(object, file)`` of the newest intact checkpoint at ``path`` or ``<path>.prev`` (the file
    actually read: ``.prev`` when ``path`` is damaged); None if neither file exists. Stale
    temporaries of earlier, killed writes are removed first."""
    path = Path(path)
    clean_temporaries(path)
    candidates = [p for p in (path, previous(path)) if p.exists()]
    if not candidates:
        return None
    problems = []
    for p in candidates:
        try:
            obj = _read(p)
        except Exception as e:  # noqa: BLE001 - any unreadable file: try the previous one
            problems.append(f"{p}: {e}")
            log.warning("checkpoint %s is unusable (%s)%s", p, e,
                        "; trying the previous one" if p == path else "")
            continue
        return obj, p
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems) +
                          " (delete these files to start over)")


def load(path: str | Path) -> Any | None:
    """The newest intact checkpoint at ``path`` (or ``<path>.prev``); None if neither file exists."""
    found = load_with_source(path)
    return None if found is None else found[0]


def remove(path: str | Path) -> None:
    """Delete a checkpoint and its previous version (after the run's result is safely written)."""
    for p in (Path(path), previous(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def rng_state() -> dict:
    """Every process-wide RNG state: torch (CPU and CUDA), numpy, python."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
