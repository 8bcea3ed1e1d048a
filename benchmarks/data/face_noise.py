"""The MegaFace and FaceScrub noise lists (insightface's ``remove_noises.py`` format) and the masks
they give; see :mod:`benchmarks.data.faces` for where the files live."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .errors import DatasetError

_MF_NOISE = "MegaFace noise list"
_FS_NOISE = "FaceScrub noise list"
_MF_NOISE_LAYOUT = ("a text file, one distractor per line as its path relative to the MegaFace image root "
                    "(<a>/<b>/<file>.jpg) or '<anything>\\t<path>', '#' comment lines "
                    "(insightface's megaface_noises.txt)")
_FS_NOISE_LAYOUT = ("a text file, one FaceScrub image file name per line (e.g. Aaron_Eckhart_221.png), "
                    "'#' comment lines (insightface's facescrub_noises.txt)")
FACESCRUB_NOISE_ACTIONS = ("center", "remove")


def _noise_lines(path: str | os.PathLike, what: str, layout: str) -> list[str]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\r\n") for ln in f]
    except FileNotFoundError:
        raise DatasetError(what, path, "not found", layout) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(what, path, f"is unreadable ({type(e).__name__})", layout) from None
    out = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    if not out:
        raise DatasetError(what, path, "has no entries", layout)
    return out


def _last3(path: str) -> str:
    return "/".join(path.replace("\\", "/").strip().split("/")[-3:])


def read_megaface_noises(path: str | os.PathLike) -> set[str]:
    """Distractor paths of a MegaFace noise list, reduced to their last three components
    (``<a>/<b>/<file>``), as insightface's ``remove_noises.py`` compares them. A line with a tab
    holds the path in its second field (the same script's rule)."""
    out = set()
    for ln in _noise_lines(path, _MF_NOISE, _MF_NOISE_LAYOUT):
        fields = ln.strip().split("\t")
        out.add(_last3(fields[1] if len(fields) > 1 else fields[0]))
    return out


def facescrub_key(name: str) -> str:
    """Match key of a FaceScrub image: its file name without extension, spaces and underscores
    (noise lists and template lists spell the same image differently, e.g. ``Aaron_Eckhart_221.png``
    vs ``Aaron Eckhart_221.jpg``; the number is the image's FaceScrub id)."""
    base = os.path.splitext(os.path.basename(name.replace("\\", "/").strip()))[0]
    return base.replace(" ", "").replace("_", "")


def read_facescrub_noises(path: str | os.PathLike) -> set[str]:
    """:func:`facescrub_key` of every image of a FaceScrub noise list."""
    return {facescrub_key(ln) for ln in _noise_lines(path, _FS_NOISE, _FS_NOISE_LAYOUT)}


def megaface_noise_mask(distractor_paths: Sequence[str], noises: set[str]) -> np.ndarray:
    """Boolean mask of the distractor list entries named by a MegaFace noise list."""
    return np.array([_last3(p) in noises for p in distractor_paths], dtype=bool)


def facescrub_noise_mask(probe_paths: Sequence[str], noises: set[str]) -> np.ndarray:
    """Boolean mask of the probe list entries named by a FaceScrub noise list."""
    return np.array([facescrub_key(p) in noises for p in probe_paths], dtype=bool)
