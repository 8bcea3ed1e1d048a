"""Image files of the on-disk datasets (re-ID, faces): checked before any training, and opened
so that a bad file is named in one line (:class:`~benchmarks.data.errors.DatasetError`).

The check (:func:`check_image_files`) finds empty files by their size, and files that are not an
image PIL can identify by reading their header (no decoding), so a dataset with a truncated copy
fails at load time with the file's path, not minutes later in a DataLoader worker.
"""
from __future__ import annotations

import os
from typing import Iterable

from .errors import DatasetError


def image_problem(path: str, verify: bool = True) -> str | None:
    """What is wrong with the image file ``path`` (None: nothing found)."""
    try:
        if os.path.getsize(path) == 0:
            return "is an empty (zero-byte) image file"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if verify:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError) as e:
            return f"is not a readable image ({type(e).__name__})"
    return None


def check_image_files(paths: Iterable[str], dataset: str, expected: str, verify: bool = True) -> None:
    """Raise :class:`DatasetError` naming the first empty or unreadable file of ``paths``."""
    for path in paths:
        problem = image_problem(path, verify)
        if problem is not None:
            raise DatasetError(dataset, path, problem, expected)


def open_rgb(path: str, dataset: str = "image"):
    """The RGB PIL image at ``path``; a file that cannot be decoded raises :class:`DatasetError`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:  # UnidentifiedImageError, a truncated file, a permission error
        raise DatasetError(dataset, path, f"is not a readable image ({type(e).__name__}: {e})",
                           "a JPEG or PNG image; replace the file from the original archive") from None


def unwrap_worker_error(error: BaseException) -> DatasetError | None:
    """A :class:`DatasetError` raised in a DataLoader worker reaches the main process re-raised
    by torch as a multi-line error ("Caught DatasetError in DataLoader worker process 0 ...
    DatasetError: <message>"); return the original's one-line message as a DatasetError."""
    text = str(error)
    if "Caught DatasetError" not in text:
        return None
    last = [line for line in text.strip().splitlines() if "DatasetError:" in line]
    message = last[-1].split("DatasetError:", 1)[1].strip() if last else text.splitlines()[0]
    return DatasetError.from_message(message)
