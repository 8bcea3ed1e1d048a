"""Face data on disk (full tier, the paper's face tables): CASIA-WebFace training images and
MegaFace Challenge 1's evaluation data. The devkit's file formats are in :mod:`.megaface_devkit`,
the noise lists in :mod:`.face_noise`, the input pipeline in :mod:`.face_transforms`; their names
are importable from here too.

Protocol (ARCHITECTURE.md, "Evaluation protocols" -> MegaFace): models are trained on CASIA-WebFace and
evaluated by MegaFace Challenge 1: FaceScrub probes against 10^6 distractors, rank-1
identification; features are flip-summed and L2-normalized; results must say whether the
distractor noise was cleaned. The evaluation itself lives in ``benchmarks.evaluation``; this
module reads and writes the files.

CASIA-WebFace
    An image folder, ``root/<identity>/<image>.jpg`` (10,575 identity folders, ~494k images in
    the real set; folder names such as ``0000045``, images such as ``001.jpg``). ``root`` may
    also contain a ``CASIA-WebFace`` folder. Labels are the indices of the SORTED folder names.
    ``.jpg``/``.jpeg``/``.png`` files are read (case-insensitive). A missing root, no identity
    folder, or an identity folder without images raises :class:`DatasetError`. Optionally
    ``num_val_ids`` identities are held out (seeded) as a validation set for the AM-LFS reward.

MegaFace Challenge 1 on disk (full tier; :func:`load_megaface`, :func:`load_megaface_protocol`)
    ``dataset.megaface.root`` (default ``$LFS_DATA/megaface``) holds ``devkit/templatelists/``
    (the devkit's lists), ``facescrub_images/<probe list path>`` and
    ``megaface_images/<distractor list path>`` (aligned crops under the lists' relative paths,
    as insightface's testpack ``data/facescrub_images`` / ``data/megaface_images``), and the noise
    lists ``megaface_noises.txt`` / ``facescrub_noises.txt`` (insightface). Every listed image is
    checked before training; a missing one is a one-line :class:`DatasetError`.
    Noise lists, as insightface's ``Evaluation/Megaface/remove_noises.py`` reads them: ``#``
    lines are comments; MegaFace lines are a distractor path (``<a>/<b>/<file>.jpg``), or
    ``<x>\t<path>``, compared on the last three path components; FaceScrub lines are image file
    names, matched by :func:`facescrub_key` (name without extension, spaces and underscores; the
    noise list and the devkit's list may spell the same image differently).
    Training images get the SphereFace pipeline (:func:`face_transforms`); the reward of the
    AM-LFS search uses ``dataset.loader.num_val_ids`` held-out CASIA-WebFace identities
    (:func:`face_reward_split`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .images import check_image_files, open_rgb
from .face_noise import (FACESCRUB_NOISE_ACTIONS, facescrub_key, facescrub_noise_mask, megaface_noise_mask,
                         read_facescrub_noises, read_megaface_noises)
from .face_transforms import FACE_MEAN, FACE_STD, CenterCropToAspect, face_transforms
from .megaface_devkit import (CV_TYPES, feature_file, load_features, megaface_list_name, read_facescrub_list,
                              read_feature_bin, read_feature_vector, read_megaface_list, write_feature_bin)

__all__ = ["IMAGE_EXTENSIONS", "list_image_folder", "ImageFolderDataset", "FaceImageData",
           "load_casia_webface", "read_feature_bin", "write_feature_bin", "read_feature_vector",
           "read_facescrub_list", "read_megaface_list", "megaface_list_name", "feature_file",
           "load_features", "CV_TYPES", "read_id_list", "FACE_MEAN", "FACE_STD", "CenterCropToAspect",
           "face_transforms", "read_megaface_noises", "read_facescrub_noises", "facescrub_key",
           "megaface_noise_mask", "facescrub_noise_mask", "MegaFaceProtocol", "load_megaface_protocol",
           "face_reward_split", "MegaFaceData", "load_megaface", "FACESCRUB_NOISE_ACTIONS", "MEGAFACE_OPTIONS",
           "megaface_options"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_CASIA = "CASIA-WebFace"


# --------------------------------------------------------------------------- CASIA-WebFace
def _casia_layout(base: str) -> str:
    return (f"{base}/<identity>/<image>.jpg, one folder per identity (10,575 in the real set), "
            f"e.g. {base}/0000045/001.jpg")


def list_image_folder(root: str | os.PathLike, name: str = _CASIA) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path, label)], classes)`` of ``root/<class>/<image>``, labels = sorted folder index."""
    root = os.fspath(root)
    base = os.path.join(root, _CASIA) if os.path.isdir(os.path.join(root, _CASIA)) else root
    if not os.path.isdir(base):
        raise DatasetError(name, base, "not found", _casia_layout(base))
    classes = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
    if not classes:
        raise DatasetError(name, base, "has no identity folders", _casia_layout(base))
    samples = []
    for label, cls in enumerate(classes):
        folder = os.path.join(base, cls)
        files = sorted(f for f in os.listdir(folder)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))
        if not files:
            raise DatasetError(name, folder, "has an identity folder without images", _casia_layout(base))
        samples.extend((os.path.join(folder, f), label) for f in files)
    check_image_files((path for path, _ in samples), name, _casia_layout(base))
    return samples, classes


class ImageFolderDataset(Dataset):
    """``(img, label)`` items from ``[(path, label)]``; ``img`` is RGB PIL through ``transform``."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable | None = None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = open_rgb(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, label


@dataclass
class FaceImageData:
    """CASIA-WebFace: ``train`` (labels ``0..num_classes-1``), ``val`` (held-out identities,
    labels ``0..V-1`` in the order of ``info["val_classes"]``), ``classes`` of ``train``."""

    train: ImageFolderDataset
    val: ImageFolderDataset
    num_classes: int
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def read_id_list(path: str | os.PathLike, what: str = "identity exclusion list") -> list[str]:
    """Non-empty, non-``#`` lines of a text file (e.g. CASIA-WebFace folder names to drop)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
    except OSError:
        raise DatasetError(what, path, "not found", "a text file, one entry per line, '#' comments") from None
    return [ln for ln in lines if ln and not ln.startswith("#")]


def load_casia_webface(root: str | os.PathLike, transform: Callable | None = None,
                       num_val_ids: int = 0, seed: int = 0, val_transform: Callable | None = None,
                       exclude_ids: str | os.PathLike | Sequence[str] | None = None) -> FaceImageData:
    """CASIA-WebFace as an image folder, optionally with ``num_val_ids`` held-out identities.

    ``exclude_ids``: identity folder names (or a text file of them, one per line) dropped before
    labelling, e.g. the identities overlapping FaceScrub (the paper removes the overlap between
    training and test identities; it does not publish its list). Unknown names are ignored and
    counted in ``info["excluded_unknown"]``.
    """
    samples, classes = list_image_folder(root)
    excluded, unknown = 0, 0
    if exclude_ids is not None:
        names = read_id_list(exclude_ids) if isinstance(exclude_ids, (str, os.PathLike)) else list(exclude_ids)
        drop = set(names) & set(classes)
        unknown = len(set(names) - drop)
        if len(drop) == len(classes):
            raise DatasetError(_CASIA, os.fspath(root), "has no identity left after exclude_ids",
                               _casia_layout(os.fspath(root)))
        keep_cls = [c for c in classes if c not in drop]
        remap = {old: new for new, old in enumerate(i for i, c in enumerate(classes) if c not in drop)}
        samples = [(p, remap[l]) for p, l in samples if l in remap]
        classes, excluded = keep_cls, len(drop)
    num_val_ids = int(num_val_ids)
    if not (0 <= num_val_ids < len(classes)):
        raise ValueError(f"dataset.loader.num_val_ids={num_val_ids} must be in [0, {len(classes)})")
    g = torch.Generator().manual_seed(int(seed))
    val_labels = set(torch.randperm(len(classes), generator=g)[:num_val_ids].tolist())
    keep = [i for i in range(len(classes)) if i not in val_labels]
    vals = sorted(val_labels)
    re_train = {old: new for new, old in enumerate(keep)}
    re_val = {old: new for new, old in enumerate(vals)}
    train = [(p, re_train[l]) for p, l in samples if l in re_train]
    val = [(p, re_val[l]) for p, l in samples if l in re_val]
    info = {"root": os.fspath(root), "num_val_ids": num_val_ids, "seed": seed,
            "val_classes": [classes[i] for i in vals], "num_images": len(samples)}
    if exclude_ids is not None:
        info.update(excluded_ids=excluded, excluded_unknown=unknown)
    return FaceImageData(train=ImageFolderDataset(train, transform),
                         val=ImageFolderDataset(val, val_transform or transform),
                         num_classes=len(keep), classes=[classes[i] for i in keep], info=info)


# --------------------------------------------------------------------------- MegaFace protocol
def _check_images(root: str, rel_paths: Sequence[str], what: str, list_path: str) -> list[str]:
    if not os.path.isdir(root):
        raise DatasetError(what, root, "not found",
                           f"{root}/<path> for every path of {list_path} (aligned face crops)")
    full = [os.path.join(root, p) for p in rel_paths]
    missing = [p for p, f in zip(rel_paths, full) if not os.path.isfile(f)]
    if missing:
        raise DatasetError(what, root, f"is missing {len(missing)} of {len(full)} images (first: {missing[0]})",
                           f"{root}/<path> for every path of {list_path} (aligned face crops)")
    # sizes only: a MegaFace distractor set has a million files (a bad one is named when opened)
    check_image_files(full, what, f"aligned face crops for every path of {list_path}", verify=False)
    return full


@dataclass
class MegaFaceProtocol:
    """MegaFace Challenge 1 (identification) as the devkit's lists define it.

    ``probes``: FaceScrub images of the probe list, items ``(path, identity index, 0)`` (the
    identity index numbers ``probe_ids`` by first appearance); ``distractors``: the MegaFace
    distractor list, items ``(path, 0, 1)``. ``probe_noise`` / ``distractor_noise``: boolean
    masks of the list entries named by the noise lists (all False when not cleaned).
    """

    probes: Dataset
    distractors: Dataset
    probe_paths: list[str]
    probe_ids: list[str]
    distractor_paths: list[str]
    probe_noise: np.ndarray
    distractor_noise: np.ndarray
    noise_cleaned: bool
    facescrub_noise_action: str
    num_distractors: int
    distractor_set: int
    info: dict[str, Any] = field(default_factory=dict)


def load_megaface_protocol(probe_list: str | os.PathLike, distractor_list: str | os.PathLike,
                           facescrub_images: str | os.PathLike, megaface_images: str | os.PathLike,
                           num_distractors: int | None = None, distractor_set: int = 1,
                           noise_cleaned: bool = False, megaface_noises: str | os.PathLike | None = None,
                           facescrub_noises: str | os.PathLike | None = None,
                           facescrub_noise_action: str = "center", transform: Callable | None = None,
                           check_images: bool = True) -> MegaFaceProtocol:
    """Read the devkit's probe and distractor lists, resolve their images and the noise lists.

    Args:
        probe_list: ``facescrub_features_list.json`` (``{"path": [...], "id": [...]}``).
        distractor_list: ``megaface_features_list.json_<N>_<set>`` (``{"path": [...]}``); it must
            hold exactly ``num_distractors`` paths (``None``: whatever it holds).
        facescrub_images, megaface_images: roots under which the lists' relative paths are the
            aligned crops (``<root>/<path>``).
        noise_cleaned: apply the noise lists (both required); the masks are computed here and
            applied by the evaluation.
        facescrub_noise_action: ``"center"`` (insightface's ``remove_noises.py``: a listed probe's
            feature becomes its identity's centre) or ``"remove"`` (the probe is dropped).
        check_images: every listed image must exist (checked now, before any training).
    """
    from .reid import ReIDImageDataset

    if facescrub_noise_action not in FACESCRUB_NOISE_ACTIONS:
        raise ValueError(f"dataset.megaface.facescrub_noise_action must be one of "
                         f"{', '.join(FACESCRUB_NOISE_ACTIONS)}, got {facescrub_noise_action!r}")
    if noise_cleaned and (megaface_noises is None or facescrub_noises is None):
        raise ValueError("dataset.megaface.noise_cleaned=true needs dataset.megaface.megaface_noises and "
                         "dataset.megaface.facescrub_noises (paths of the noise lists)")
    probe_list, distractor_list = os.fspath(probe_list), os.fspath(distractor_list)
    probe_paths, probe_ids = read_facescrub_list(probe_list)
    distractor_paths = read_megaface_list(distractor_list)
    if not probe_paths:
        raise DatasetError("MegaFace probe list", probe_list, "is empty", 'parallel "path" and "id" lists')
    if num_distractors is not None and len(distractor_paths) != int(num_distractors):
        raise DatasetError("MegaFace distractor list", distractor_list,
                           f"has {len(distractor_paths)} paths, not num_distractors={int(num_distractors)}",
                           f"the devkit's {megaface_list_name(int(num_distractors), distractor_set)} "
                           f"with exactly {int(num_distractors)} paths")
    fs_root, mf_root = os.fspath(facescrub_images), os.fspath(megaface_images)
    if check_images:
        probe_full = _check_images(fs_root, probe_paths, "FaceScrub images", probe_list)
        distractor_full = _check_images(mf_root, distractor_paths, "MegaFace images", distractor_list)
    else:
        probe_full = [os.path.join(fs_root, p) for p in probe_paths]
        distractor_full = [os.path.join(mf_root, p) for p in distractor_paths]
    index: dict[str, int] = {}
    pids = [index.setdefault(i, len(index)) for i in probe_ids]
    probe_noise = np.zeros(len(probe_paths), dtype=bool)
    distractor_noise = np.zeros(len(distractor_paths), dtype=bool)
    info: dict[str, Any] = {"probe_list": probe_list, "distractor_list": distractor_list,
                            "num_probes": len(probe_paths), "num_probe_ids": len(index),
                            "num_distractors": len(distractor_paths), "distractor_set": int(distractor_set),
                            "noise_cleaned": bool(noise_cleaned)}
    if noise_cleaned:
        distractor_noise = megaface_noise_mask(distractor_paths, read_megaface_noises(megaface_noises))
        probe_noise = facescrub_noise_mask(probe_paths, read_facescrub_noises(facescrub_noises))
        info.update(megaface_noises=os.fspath(megaface_noises), facescrub_noises=os.fspath(facescrub_noises),
                    facescrub_noise_action=facescrub_noise_action,
                    distractor_noise_listed=int(distractor_noise.sum()), probe_noise_listed=int(probe_noise.sum()))
    info["num_distractors_used"] = int(len(distractor_paths) - distractor_noise.sum())
    return MegaFaceProtocol(
        probes=ReIDImageDataset([(f, p, 0) for f, p in zip(probe_full, pids)], transform),
        distractors=ReIDImageDataset([(f, 0, 1) for f in distractor_full], transform),
        probe_paths=list(probe_paths), probe_ids=list(probe_ids), distractor_paths=list(distractor_paths),
        probe_noise=probe_noise, distractor_noise=distractor_noise, noise_cleaned=bool(noise_cleaned),
        facescrub_noise_action=facescrub_noise_action, num_distractors=len(distractor_paths),
        distractor_set=int(distractor_set), info=info)


def face_reward_split(val: ImageFolderDataset, transform: Callable | None = None):
    """Validation query / gallery of held-out CASIA-WebFace identities for the AM-LFS reward
    (mAP, as the other retrieval tables): per identity, its first image (sorted path) is the
    gallery image (camid 1), the others are queries (camid 0); pids are ``label + 1``."""
    from .reid import ReIDImageDataset

    by: dict[int, list[str]] = {}
    for p, label in val.samples:
        by.setdefault(label, []).append(p)
    query, gallery = [], []
    for label in sorted(by):
        paths = sorted(by[label])
        gallery.append((paths[0], label + 1, 1))
        query.extend((p, label + 1, 0) for p in paths[1:])
    return ReIDImageDataset(query, transform), ReIDImageDataset(gallery, transform)


@dataclass
class MegaFaceData:
    """Table 3, full tier: CASIA-WebFace training (``train``, ``num_classes``), the reward's
    held-out identities (``val_query`` / ``val_gallery``, see :func:`face_reward_split`) and the
    MegaFace test protocol (``megaface``)."""

    name: str
    train: ImageFolderDataset
    num_classes: int
    val_query: Dataset
    val_gallery: Dataset
    megaface: MegaFaceProtocol
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def load_megaface(root: str | os.PathLike, megaface: dict, num_val_ids: int = 0, seed: int = 0,
                  input_size: Sequence[int] = (112, 96), fit: str = "resize",
                  exclude_ids: str | os.PathLike | Sequence[str] | None = None) -> MegaFaceData:
    """CASIA-WebFace training + MegaFace Challenge 1 evaluation (``megaface``: the keyword
    arguments of :func:`load_megaface_protocol`). Every file is checked here, before training."""
    if num_val_ids < 1:
        raise ValueError("dataset.loader.num_val_ids must be >= 1: the AM-LFS reward needs held-out identities")
    tf = face_transforms(input_size, fit)
    casia = load_casia_webface(root, tf["train_transform"], num_val_ids=num_val_ids, seed=seed,
                               val_transform=tf["test_transform"], exclude_ids=exclude_ids)
    val_query, val_gallery = face_reward_split(casia.val, tf["test_transform"])
    protocol = load_megaface_protocol(transform=tf["test_transform"], **megaface)
    info = {**casia.info, "train_set": "CASIA-WebFace", "input_size": [int(d) for d in input_size], "fit": fit,
            "val_query": len(val_query), "val_gallery": len(val_gallery), **protocol.info}
    return MegaFaceData(name="megaface", train=casia.train, num_classes=casia.num_classes, val_query=val_query,
                        val_gallery=val_gallery, megaface=protocol, classes=casia.classes, info=info)


MEGAFACE_OPTIONS = ("root", "templatelists", "probe_list", "distractor_list", "facescrub_images", "megaface_images",
                    "num_distractors", "distractor_set", "noise_cleaned", "megaface_noises", "facescrub_noises",
                    "facescrub_noise_action", "check_images",
                    # evaluation-side keys (benchmarks.evaluation.megaface.evaluate_megaface)
                    "metric", "ties", "batch_size", "score_batch", "features_out", "file_ending")


def megaface_options(mf: dict) -> dict:
    """The keyword arguments of :func:`load_megaface_protocol` from the config block
    ``dataset.megaface`` (see ``benchmarks/conf/dataset/megaface.yaml``): the probe list defaults
    to ``<templatelists>/facescrub_features_list.json``, the distractor list to
    ``<templatelists>/megaface_features_list.json_<num_distractors>_<distractor_set>``. A bad
    value raises ``ValueError`` naming the key."""
    unknown = sorted(set(mf) - set(MEGAFACE_OPTIONS))
    if unknown:
        raise ValueError(f"dataset.megaface.{unknown[0]} is not a known key; known: {', '.join(MEGAFACE_OPTIONS)}")
    n = mf.get("num_distractors")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"dataset.megaface.num_distractors must be an integer >= 1 (the devkit's list sizes: "
                         f"10 ... 1000000), got {n!r}")
    sset = mf.get("distractor_set", 1)
    if not (isinstance(sset, int) and sset >= 1):
        raise ValueError(f"dataset.megaface.distractor_set must be an integer >= 1, got {sset!r}")
    if not isinstance(mf.get("noise_cleaned", False), bool):
        raise ValueError(f"dataset.megaface.noise_cleaned must be true or false, got {mf.get('noise_cleaned')!r}")
    if mf.get("metric", "cosine") not in ("cosine", "euclidean", "sqeuclidean"):
        raise ValueError(f"dataset.megaface.metric must be one of cosine, euclidean, sqeuclidean, got {mf['metric']!r}")
    if mf.get("ties", "miss") not in ("miss", "hit"):
        raise ValueError(f"dataset.megaface.ties must be miss or hit, got {mf['ties']!r}")
    for key in ("facescrub_images", "megaface_images"):
        if not mf.get(key):
            raise ValueError(f"dataset.megaface.{key} must be a directory path, got {mf.get(key)!r}")
    tl = mf.get("templatelists")
    for key in ("probe_list", "distractor_list"):
        if not mf.get(key) and not tl:
            raise ValueError(f"dataset.megaface.{key} or dataset.megaface.templatelists must be set")
    return dict(
        probe_list=mf.get("probe_list") or os.path.join(tl, "facescrub_features_list.json"),
        distractor_list=mf.get("distractor_list") or os.path.join(tl, megaface_list_name(n, sset)),
        facescrub_images=mf["facescrub_images"], megaface_images=mf["megaface_images"], num_distractors=n,
        distractor_set=sset, noise_cleaned=bool(mf.get("noise_cleaned", False)),
        megaface_noises=mf.get("megaface_noises"), facescrub_noises=mf.get("facescrub_noises"),
        facescrub_noise_action=mf.get("facescrub_noise_action", "center"),
        check_images=bool(mf.get("check_images", True)))
