"""Market-1501 and DukeMTMC-reID on disk (full tier, the paper's re-ID tables).

Protocol (ARCHITECTURE.md, "Evaluation protocols" -> Re-ID), as torchreid's dataset classes read it:

* layout: ``<root>/Market-1501-v15.09.15/`` (or ``<root>`` itself) and
  ``<root>/DukeMTMC-reID/`` (or ``<root>``), each with ``bounding_box_train/``, ``query/`` and
  ``bounding_box_test/`` (the gallery) holding ``.jpg`` images;
* file names ``PID_cCAM...jpg`` (Market: ``0002_c1s1_000451_03.jpg``; Duke:
  ``0001_c2_f0046182.jpg``) parsed with the regex ``([-\\d]+)_c(\\d)`` at the start of the name;
* pid ``-1`` is junk and skipped; pid ``0`` (Market's distractors) is kept, so it lands in the
  gallery; camid = ``c - 1`` (0-based; Market has 6 cameras, Duke 8); Market pids must lie in
  ``0..1501`` (torchreid asserts the same);
* training pids are relabelled ``0..K-1`` in increasing order of the original pid.

The evaluation (removing gallery entries with the query's pid AND camera, CMC, mAP) lives in
``benchmarks.evaluation``; this module only reads the data.

AM-LFS rewards each sampled loss on a validation split held out from the training set
(Algorithm 1), never the test set. :func:`load_reid` therefore holds ``num_val_ids`` training
identities out (chosen with ``seed`` among identities seen by >= 2 cameras): for each of them and
each camera, one random image becomes a validation query and the others go to the validation
gallery (pids and camids as on disk, pid >= 1). The remaining training identities are relabelled
``0..K'-1``. ``num_val_ids=0`` gives the standard split with empty validation sets.

Every problem with the files raises a one-line :class:`DatasetError` naming the path and layout.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .images import check_image_files, open_rgb

__all__ = ["REID_DATASETS", "PATTERN", "resolve_reid_dir", "parse_reid", "ReIDImageDataset",
           "ReIDImageData", "load_reid", "load_market1501", "load_dukemtmc"]

PATTERN = re.compile(r"([-\d]+)_c(\d)")
FOLDERS = ("bounding_box_train", "query", "bounding_box_test")

REID_DATASETS: dict[str, dict[str, Any]] = {
    "market1501": {"display": "Market-1501", "subdir": "Market-1501-v15.09.15", "num_cameras": 6,
                   "max_pid": 1501, "example": "0002_c1s1_000451_03.jpg"},
    "dukemtmc": {"display": "DukeMTMC-reID", "subdir": "DukeMTMC-reID", "num_cameras": 8,
                 "max_pid": None, "example": "0001_c2_f0046182.jpg"},
}


def _spec(name: str) -> dict[str, Any]:
    if name not in REID_DATASETS:
        raise ValueError(f"unknown re-ID dataset {name!r}; available: {', '.join(REID_DATASETS)}")
    return REID_DATASETS[name]


def _layout(base: str, spec: dict) -> str:
    return (", ".join(os.path.join(base, f) for f in FOLDERS)
            + f" with files like {spec['example']}")


def resolve_reid_dir(root: str | os.PathLike, name: str) -> str:
    """The directory holding the three folders: ``root/<official dir>`` or ``root`` itself."""
    spec = _spec(name)
    root = os.fspath(root)
    candidates = [os.path.join(root, spec["subdir"]), root]
    for c in candidates:
        if all(os.path.isdir(os.path.join(c, f)) for f in FOLDERS):
            return c
    base = candidates[0] if os.path.isdir(candidates[0]) else root
    present = [f for f in FOLDERS if os.path.isdir(os.path.join(base, f))]
    problem = "not found" if not present else \
        f"incomplete (missing {', '.join(f for f in FOLDERS if f not in present)})"
    raise DatasetError(spec["display"], base, problem, _layout(base, spec))


def _parse_folder(folder: str, spec: dict, base: str) -> list[tuple[str, int, int]]:
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".jpg"))
    if not files:
        raise DatasetError(spec["display"], folder, "has no .jpg images", _layout(base, spec))
    items = []
    for fname in files:
        m = PATTERN.match(fname)
        if m is None:
            raise DatasetError(spec["display"], os.path.join(folder, fname),
                               "has a file name that does not match ([-\\d]+)_c(\\d)",
                               f"names like {spec['example']}")
        try:
            pid, cam = int(m.group(1)), int(m.group(2))
        except ValueError:
            raise DatasetError(spec["display"], os.path.join(folder, fname), "has an unparsable pid",
                               f"names like {spec['example']}") from None
        if pid == -1:
            continue  # junk images
        if pid < -1 or (spec["max_pid"] is not None and pid > spec["max_pid"]):
            raise DatasetError(spec["display"], os.path.join(folder, fname), f"has pid {pid} out of range",
                               f"pids in -1..{spec['max_pid'] or 'N'}")
        if not (1 <= cam <= spec["num_cameras"]):
            raise DatasetError(spec["display"], os.path.join(folder, fname), f"has camera c{cam} out of range",
                               f"cameras c1..c{spec['num_cameras']}")
        items.append((os.path.join(folder, fname), pid, cam - 1))
    check_image_files((path for path, _, _ in items), spec["display"], f"JPEG images named like {spec['example']}")
    return items


def _parse_raw(root, name: str):
    spec = _spec(name)
    base = resolve_reid_dir(root, name)
    train = _parse_folder(os.path.join(base, "bounding_box_train"), spec, base)
    query = _parse_folder(os.path.join(base, "query"), spec, base)
    gallery = _parse_folder(os.path.join(base, "bounding_box_test"), spec, base)
    return base, train, query, gallery


def parse_reid(root: str | os.PathLike, name: str) -> dict[str, list[tuple[str, int, int]]]:
    """Parse a Market-1501 (``name="market1501"``) or DukeMTMC-reID (``"dukemtmc"``) directory.

    Returns ``dict(train=[(path, pid, camid)], query=[...], gallery=[...])`` sorted by file name,
    junk (pid -1) removed, camid 0-based, training pids relabelled ``0..K-1`` (sorted original
    pids); query/gallery keep the original pids (pid 0 = distractor).
    """
    _, train, query, gallery = _parse_raw(root, name)
    pid2label = {pid: i for i, pid in enumerate(sorted({p for _, p, _ in train}))}
    train = [(path, pid2label[pid], cam) for path, pid, cam in train]
    return {"train": train, "query": query, "gallery": gallery}


class ReIDImageDataset(Dataset):
    """``(img, pid, camid)`` items from a list of ``(path, pid, camid)``; ``img`` is an RGB PIL
    image passed through ``transform`` if given."""

    def __init__(self, items: list[tuple[str, int, int]], transform: Callable | None = None):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    @property
    def pids(self) -> list[int]:
        return [p for _, p, _ in self.items]

    @property
    def camids(self) -> list[int]:
        return [c for _, _, c in self.items]

    def __getitem__(self, i: int):
        path, pid, camid = self.items[i]
        img = open_rgb(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, pid, camid


@dataclass
class ReIDImageData:
    """The image-dataset counterpart of :class:`~benchmarks.data.containers.RetrievalData`."""

    name: str
    train: ReIDImageDataset
    num_classes: int
    val_query: ReIDImageDataset
    val_gallery: ReIDImageDataset
    query: ReIDImageDataset
    gallery: ReIDImageDataset
    info: dict[str, Any] = field(default_factory=dict)


def load_reid(root: str | os.PathLike, name: str, num_val_ids: int = 100, seed: int = 0,
              train_transform: Callable | None = None, test_transform: Callable | None = None
              ) -> ReIDImageData:
    """Parse ``root`` and build train / held-out validation / query / gallery datasets.

    Args:
        root: dataset root (see :func:`resolve_reid_dir`).
        name: ``"market1501"`` or ``"dukemtmc"``.
        num_val_ids: training identities held out for the AM-LFS reward (0: none).
        seed: seed of the choice of validation identities and validation queries.
        train_transform: transform of training images; ``test_transform``: of all the others.
    """
    spec = _spec(name)
    base, train, query, gallery = _parse_raw(root, name)  # original pids
    by_pid: dict[int, list[tuple[str, int, int]]] = {}
    for it in train:
        by_pid.setdefault(it[1], []).append(it)
    eligible = sorted(p for p, its in by_pid.items() if len({c for _, _, c in its}) >= 2)
    num_val_ids = int(num_val_ids)
    if num_val_ids < 0 or num_val_ids > len(eligible) or (num_val_ids and num_val_ids >= len(by_pid)):
        raise ValueError(f"dataset.loader.num_val_ids={num_val_ids} is not possible: {len(eligible)} of the "
                         f"{len(by_pid)} training identities are seen by >= 2 cameras")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(eligible), generator=g).tolist()
    val_pids = sorted(eligible[i] for i in perm[:num_val_ids])
    val_q, val_g = [], []
    for pid in val_pids:
        for cam in sorted({c for _, _, c in by_pid[pid]}):
            its = [it for it in by_pid[pid] if it[2] == cam]
            k = int(torch.randint(len(its), (), generator=g))
            for j, it in enumerate(its):
                (val_q if j == k else val_g).append(it)
    keep = sorted(set(by_pid) - set(val_pids))
    relabel = {pid: i for i, pid in enumerate(keep)}
    train_items = [(p, relabel[pid], c) for p, pid, c in train if pid in relabel]
    info = {"root": os.fspath(root), "dir": base, "num_val_ids": num_val_ids, "seed": seed,
            "val_pids_original": val_pids, "train_pids_original": keep,
            "num_cameras": spec["num_cameras"],
            "sizes": {"train": len(train_items), "val_query": len(val_q), "val_gallery": len(val_g),
                      "query": len(query), "gallery": len(gallery)}}
    return ReIDImageData(
        name=name, train=ReIDImageDataset(train_items, train_transform), num_classes=len(keep),
        val_query=ReIDImageDataset(val_q, test_transform), val_gallery=ReIDImageDataset(val_g, test_transform),
        query=ReIDImageDataset(query, test_transform), gallery=ReIDImageDataset(gallery, test_transform),
        info=info)


def load_market1501(root, **kwargs) -> ReIDImageData:
    """:func:`load_reid` for Market-1501."""
    return load_reid(root, "market1501", **kwargs)


def load_dukemtmc(root, **kwargs) -> ReIDImageData:
    """:func:`load_reid` for DukeMTMC-reID."""
    return load_reid(root, "dukemtmc", **kwargs)
