"""The MegaFace devkit's file formats: OpenCV-matrix feature files and the JSON template lists.

MegaFace devkit feature files (confirmed from code that interoperates with the devkit)
    The devkit's ``run_experiment.py`` looks up the feature of image ``<path>`` from a template
    list as ``os.path.join(feature_dir, path + file_ending)``; its help text gives the example
    ``11084833664_0.jpg_LBP_100x100.bin`` for the file ending ``_LBP_100x100.bin``. Each ``.bin``
    is an OpenCV matrix: a 16-byte header of FOUR little-endian int32 ``rows, cols, stride,
    type`` (``stride = cols * element size`` in bytes; ``type`` 5 = CV_32F, 6 = CV_64F) followed
    by ``rows * stride`` bytes of row-major data. A feature vector of dimension d is stored as
    ``rows=d, cols=1``. Sources: the ``read_mat``/``write_mat`` helpers (``struct.unpack('iiii')``)
    circulated with MegaFace tooling, and insightface's ``remove_noises.py``, whose output the
    devkit consumes (header ``struct.pack('4i', d, 1, 4, 5)``). We did not inspect the devkit's
    C++ reader itself. A 3-int header (rows, cols, type) is sometimes described; every writer we
    found uses the 4-int header above, which is what is implemented.
    :func:`read_feature_bin` is strict: a short header, an unknown type, a stride that is not
    ``cols * element size``, a truncated payload or trailing bytes raise :class:`DatasetError`.

MegaFace devkit template lists (confirmed keys; path styles partly confirmed)
    JSON objects. The probe list ``templatelists/facescrub_features_list.json`` has ``"path"``
    (image paths relative to the FaceScrub image root, ``<identity>/<file>``) and ``"id"`` (the
    identity of each path, parallel to ``"path"``). The distractor lists
    ``templatelists/megaface_features_list.json_<size>_<set>`` (size 10 .. 1000000; set 1 is the
    one used by the challenge's tools) have ``"path"`` (paths relative to the MegaFace image root,
    three levels such as ``<a>/<b>/<file>.jpg``); we did not confirm whether they carry other keys
    and ignore any. Confirmed from the devkit's ``run_experiment.py`` (reads ``["path"]`` from both)
    and from third-party Python re-implementations (read ``["path"]`` and ``["id"]`` from the
    FaceScrub list). We could not inspect the devkit's C++ ``FuseResults`` (it reads ``"id"``
    from the probe list to know which probes match), so the types of ``"id"`` values (names or
    ints) are accepted as either and returned as strings.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Sequence

import numpy as np

from .errors import DatasetError

CV_TYPES = {5: np.dtype("<f4"), 6: np.dtype("<f8")}  # CV_32F, CV_64F (single channel)


_BIN = "MegaFace feature file"
_BIN_LAYOUT = ("int32 rows, cols, stride (= cols * 4 or 8 bytes), type (5 = CV_32F, 6 = CV_64F), "
               "then rows * stride bytes, little-endian")


def read_feature_bin(path: str | os.PathLike) -> np.ndarray:
    """Read a MegaFace devkit feature file (``<image name><file ending>.bin``).

    Returns the stored matrix, shape ``(rows, cols)`` (a d-dim feature is ``(d, 1)``; see
    :func:`read_feature_vector`), dtype float32 or float64 as stored.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise DatasetError(_BIN, path, "not found", _BIN_LAYOUT) from None
    if len(raw) < 16:
        raise DatasetError(_BIN, path, f"truncated header ({len(raw)} of 16 bytes)", _BIN_LAYOUT)
    rows, cols, stride, cv_type = struct.unpack("<4i", raw[:16])
    if cv_type not in CV_TYPES:
        raise DatasetError(_BIN, path, f"has unsupported cv type {cv_type}", _BIN_LAYOUT)
    dt = CV_TYPES[cv_type]
    if rows < 0 or cols < 0 or stride != cols * dt.itemsize:
        raise DatasetError(_BIN, path, f"has a malformed header (rows={rows}, cols={cols}, "
                           f"stride={stride}, type={cv_type})", _BIN_LAYOUT)
    need = rows * stride
    have = len(raw) - 16
    if have < need:
        raise DatasetError(_BIN, path, f"truncated ({have} of {need} data bytes)", _BIN_LAYOUT)
    if have > need:
        raise DatasetError(_BIN, path, f"has {have - need} trailing bytes", _BIN_LAYOUT)
    out = np.frombuffer(raw, dtype=dt, count=rows * cols, offset=16).reshape(rows, cols)
    return out.astype(np.float32 if cv_type == 5 else np.float64)  # native byte order, writable


def read_feature_vector(path: str | os.PathLike) -> np.ndarray:
    """A feature file as a flat float32 vector."""
    return read_feature_bin(path).reshape(-1).astype(np.float32)


def write_feature_bin(path: str | os.PathLike, array) -> None:
    """Write ``array`` in the devkit's format: 1-D (d,) as ``rows=d, cols=1``, 2-D as is;
    float64 stays CV_64F, anything else is written as float32 (CV_32F)."""
    a = np.asarray(array)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2:
        raise ValueError(f"a feature must be 1-D or 2-D, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype="<f8" if a.dtype == np.float64 else "<f4")
    cv_type = 6 if a.dtype.itemsize == 8 else 5
    rows, cols = a.shape
    with open(os.fspath(path), "wb") as f:
        f.write(struct.pack("<4i", rows, cols, cols * a.dtype.itemsize, cv_type))
        f.write(a.tobytes())


def _read_json_list(path: str | os.PathLike, what: str, need: Sequence[str]) -> dict:
    path = os.fspath(path)
    layout = "a JSON object with " + " and ".join(f'"{k}": [...]' for k in need)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise DatasetError(what, path, "not found", layout) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(what, path, f"is not valid JSON ({type(e).__name__})", layout) from None
    if not isinstance(obj, dict) or any(not isinstance(obj.get(k), list) for k in need):
        raise DatasetError(what, path, "is malformed", layout)
    if any(not isinstance(p, str) for p in obj["path"]):
        raise DatasetError(what, path, "has non-string paths", layout)
    return obj


def read_facescrub_list(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(paths, ids)`` of the devkit's FaceScrub probe list (``facescrub_features_list.json``)."""
    obj = _read_json_list(path, "MegaFace probe list", ("path", "id"))
    if len(obj["path"]) != len(obj["id"]):
        raise DatasetError("MegaFace probe list", os.fspath(path),
                           f"has {len(obj['path'])} paths but {len(obj['id'])} ids",
                           'parallel "path" and "id" lists')
    return list(obj["path"]), [str(i) for i in obj["id"]]


def read_megaface_list(path: str | os.PathLike) -> list[str]:
    """Paths of a devkit distractor list (``megaface_features_list.json_<size>_<set>``)."""
    return list(_read_json_list(path, "MegaFace distractor list", ("path",))["path"])


def megaface_list_name(size: int, set_index: int = 1) -> str:
    """File name of the devkit's distractor list of ``size`` images (set ``set_index``)."""
    return f"megaface_features_list.json_{int(size)}_{int(set_index)}"


def feature_file(feature_root: str | os.PathLike, image_path: str, file_ending: str) -> str:
    """Where the devkit expects the feature of ``image_path``: ``feature_root/image_path +
    file_ending`` (e.g. ``_r100.bin``)."""
    return os.path.join(os.fspath(feature_root), image_path + file_ending)


def load_features(feature_root: str | os.PathLike, image_paths: Sequence[str], file_ending: str
                  ) -> np.ndarray:
    """Stack the feature vectors of ``image_paths`` into a float32 ``(N, d)`` array."""
    feats = [read_feature_vector(feature_file(feature_root, p, file_ending)) for p in image_paths]
    if not feats:
        return np.zeros((0, 0), dtype=np.float32)
    dims = {f.shape[0] for f in feats}
    if len(dims) != 1:
        raise DatasetError(_BIN, os.fspath(feature_root), f"has features of different sizes {sorted(dims)}",
                           "one feature dimension for all images")
    return np.stack(feats)
