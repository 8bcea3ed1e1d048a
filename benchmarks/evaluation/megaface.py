"""MegaFace challenge 1 identification (FaceScrub probes vs. distractors), rank-1 rate.

Protocol (Kemelmacher-Shlizerman et al., "The MegaFace Benchmark: 1 Million Faces for
Recognition at Scale", CVPR 2016; ARCHITECTURE.md, "Evaluation protocols"; the AM-LFS MegaFace row):
for each FaceScrub identity with n images and each ordered pair (probe image i, target image
j != i of that identity), the target j is added to the D distractors; the pair is a rank-1 hit
if j is nearer to i than every distractor. The identification rate is
``100 * hits / number of ordered pairs``, pooled over all identities (an identity with n images
contributes n(n-1) pairs; identities with a single image contribute none).

What was matched:

* The official devkit (``devkit/experiments/run_experiment.py``) only prepares lists; the
  scoring is in closed binaries (``bin/Identification``, ``bin/FuseResults``), so the definition
  above was checked against the open Python port that states it equals them, FaceX-Zoo's
  ``CommonMegaFaceEvaluator.get_rankN_accuracy`` (JDAI-CV/FaceX-Zoo,
  ``test_protocol/megaface/megaface_evaluator.py``, commit ``f8f3cf1e``). It loops over every
  identity, every image ``a`` "added to megaface" and every other image ``b`` as the probe, and
  counts a hit when ``score(a, b) >= `` the N-th best distractor score of ``b``. Since the
  distance is symmetric, the set of comparisons over all ordered pairs is the same as here
  (with i = b, j = a), so the rate is the same.
* Rank-k generalization (FaceX-Zoo's ``max_rank``): a hit at rank k when the target is nearer
  than the k-th nearest distractor (equivalently fewer than k distractors are at least as near).
* Ties: FaceX-Zoo counts an exact tie with the k-th distractor as a hit (``>=``); the brief's
  "nearer than every distractor" counts it as a miss. Default ``ties="miss"``; pass
  ``ties="hit"`` for FaceX-Zoo's rule. Exact ties do not happen with real features.
* Distractor set sizes 10, 100, ..., 10^6: the devkit reads fixed lists
  (``templatelists/megaface_features_list.json_{size}_{set}``); here ``num_distractors=N``
  takes the **first N** distractor rows, deterministic and nested. To reproduce an official
  size exactly, order the distractor features as the devkit list of that size.
* Features: flip-summed and L2-normalized (see :func:`.features.extract_features`), compared
  with cosine distance (the insightface / FaceX-Zoo scripts use the dot product of normalized
  features). Whether the known MegaFace/FaceScrub label noise was removed (insightface's
  ``remove_noises.py`` lists) is a property of the features passed in, not of this function:
  the caller must record it with the result.

Full-tier pipeline (``+table=megaface tier=full``; :func:`evaluate_megaface`):

1. The devkit's lists define the sets: ``templatelists/facescrub_features_list.json`` (probes,
   ``path`` + ``id``) and ``templatelists/megaface_features_list.json_<N>_<set>`` (distractors,
   ``path``), N = 10^6 by default (``dataset.megaface.num_distractors``; the list must hold exactly
   N paths). Images are ``<facescrub_images>/<path>`` and ``<megaface_images>/<path>``, aligned
   crops prepared by the user (:func:`benchmarks.data.faces.load_megaface_protocol`).
2. Features: ``normalize(f(x) + f(hflip(x)))`` with the training preprocessing (resize to the
   model's input, 112x96 by default, ``(p - 127.5) / 128``), as insightface's ``gen_megaface.py``
   (sum of the embeddings of the image and its mirror, then L2-normalized).
3. Noise (``dataset.megaface.noise_cleaned``; insightface's ``megaface_noises.txt`` /
   ``facescrub_noises.txt`` and ``Evaluation/Megaface/remove_noises.py``; FaceX-Zoo's
   ``test_protocol/remove_noises.py`` states "for 1M test, remove facescrub noise 25, megaface
   noise 686"): a listed distractor is removed. insightface instead pads every feature with one
   coordinate (0, or 100 for listed distractors), which puts the listed distractors ~100 away
   from every unit-norm probe (pairwise distances <= 2), so they never rank above a true match:
   for rank-1 this is the same as removing them. A listed probe is, by default
   (``facescrub_noise_action: center``), replaced by its identity's centre (sum of the clean
   features + U(-0.001, 0.001), L2-normalized; insightface and FaceX-Zoo), or dropped
   (``remove``). The result always states ``noise_cleaned``.
4. Rank-1 by :func:`megaface_identification` (above), in percent.
5. Optionally (``features_out``) the cleaned features in the devkit's ``.bin`` layout with the
   lists that name them (:func:`write_devkit_features`), so the devkit's ``run_experiment.py``
   (closed ``Identification`` / ``FuseResults`` binaries) can score the same sets;
   :func:`score_feature_files` scores such files in Python. The devkit's own results file
   ``cmc_facescrub_megaface_<alg>_<N>_<set>.json`` holds ``cmc = [ranks (0-based), rates in
   [0, 1]]``, so its rank-1 is ``100 * cmc[1][0]`` (read by third-party plotting scripts; not
   produced here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .features import pairwise_distance

__all__ = ["megaface_rank1", "megaface_identification", "flip_features", "center_noisy_probes", "clean_megaface",
           "num_pairs", "score_megaface", "write_devkit_features", "evaluate_megaface", "score_feature_files"]


def _tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        t = torch.as_tensor(np.asarray(x))
    if not t.dtype.is_floating_point:
        t = t.float()
    return t


@torch.no_grad()
def _kth_nearest(probes: torch.Tensor, distractors: torch.Tensor, k: int, metric: str,
                 batch: int, device) -> torch.Tensor:
    """``(n_probe, k)`` ascending distances to the k nearest distractors (+inf padded)."""
    n = probes.shape[0]
    out = torch.full((n, k), float("inf"), dtype=probes.dtype)
    num_d = distractors.shape[0]
    if num_d == 0 or n == 0:
        return out
    for p0 in range(0, n, batch):
        p = probes[p0:p0 + batch]
        if device is not None:
            p = p.to(device)
        best = torch.full((p.shape[0], k), float("inf"), dtype=p.dtype, device=p.device)
        for d0 in range(0, num_d, batch):
            d = distractors[d0:d0 + batch]
            if device is not None:
                d = d.to(device)
            dist = pairwise_distance(p, d, metric)
            merged = torch.cat([best, dist], dim=1)
            best = merged.topk(k, dim=1, largest=False, sorted=True).values
        out[p0:p0 + batch] = best.cpu()
    return out


@torch.no_grad()
def megaface_identification(
    probe_feats,
    probe_ids,
    distractor_feats,
    ranks: Sequence[int] = (1,),
    metric: str = "cosine",
    num_distractors: int | None = None,
    batch: int = 4096,
    ties: str = "miss",
    device: torch.device | str | None = None,
) -> dict[int, float]:
    """Identification rate (%) at each rank in ``ranks`` (see the module docstring).

    Args:
        probe_feats: ``(P, D)`` FaceScrub features (flip-summed, L2-normalized).
        probe_ids: ``(P,)`` identity labels (ints or strings).
        distractor_feats: ``(M, D)`` MegaFace distractor features.
        ranks: ranks to report (1 for the paper's number).
        metric: ``"cosine"`` (default) or ``"euclidean"`` (same ranking on unit vectors);
            ``"sqeuclidean"`` is accepted too.
        num_distractors: use the first N distractors (``None``: all); N > M is an error.
        batch: block size (rows of probes and of distractors per distance block); bounds
            memory at about ``batch**2`` floats.
        ties: ``"miss"`` (strict ``<``) or ``"hit"`` (``<=``, FaceX-Zoo's rule).
        device: where to compute the distance blocks (e.g. ``"cuda"``); features stay put.

    Returns:
        ``{rank: rate_in_percent}``.

    Raises:
        ValueError: no identity has two images (no pair to score), bad shapes or arguments.
    """
    if ties not in ("miss", "hit"):
        raise ValueError(f"ties must be 'miss' or 'hit', got {ties!r}")
    ranks = [int(r) for r in ranks]
    if not ranks or min(ranks) < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    if batch < 1:
        raise ValueError("batch must be >= 1")
    probes = _tensor(probe_feats)
    distractors = _tensor(distractor_feats)
    dtype = torch.promote_types(probes.dtype, distractors.dtype)
    probes, distractors = probes.to(dtype), distractors.to(dtype)
    ids = np.asarray(probe_ids.detach().cpu().numpy() if isinstance(probe_ids, torch.Tensor)
                     else probe_ids).reshape(-1)
    if probes.dim() != 2 or distractors.dim() != 2:
        raise ValueError("features must be 2-D")
    if ids.shape[0] != probes.shape[0]:
        raise ValueError(f"{probes.shape[0]} probe features for {ids.shape[0]} ids")
    if distractors.shape[0] and distractors.shape[1] != probes.shape[1]:
        raise ValueError("probe and distractor feature dims differ")
    if num_distractors is not None:
        if num_distractors < 0 or num_distractors > distractors.shape[0]:
            raise ValueError(
                f"num_distractors={num_distractors} but {distractors.shape[0]} distractors given"
            )
        distractors = distractors[:num_distractors]

    kmax = max(ranks)
    # thresholds[i, k-1] = distance from probe i to its k-th nearest distractor
    thresholds = _kth_nearest(probes, distractors, kmax, metric, batch, device)

    hits = {r: 0 for r in ranks}
    pairs = 0
    for ident in np.unique(ids):
        members = np.flatnonzero(ids == ident)
        n = members.shape[0]
        if n < 2:
            continue
        idx = torch.as_tensor(members)
        f = probes[idx]
        if device is not None:
            f = f.to(device)
        intra = pairwise_distance(f, f, metric).cpu()  # intra[i, j] = d(probe i, target j)
        off_diag = ~torch.eye(n, dtype=torch.bool)
        pairs += n * (n - 1)
        for r in ranks:
            thr = thresholds[idx, r - 1][:, None]  # probe i's r-th nearest distractor
            hit = intra < thr if ties == "miss" else intra <= thr
            hits[r] += int((hit & off_diag).sum().item())
    if pairs == 0:
        raise ValueError("no identity has at least two probe images: nothing to score")
    return {r: 100.0 * hits[r] / pairs for r in ranks}


def megaface_rank1(
    probe_feats,
    probe_ids,
    distractor_feats,
    metric: str = "cosine",
    batch: int = 4096,
    num_distractors: int | None = None,
    ties: str = "miss",
    device: torch.device | str | None = None,
) -> float:
    """MegaFace challenge-1 rank-1 identification rate in percent (see the module docstring)."""
    return megaface_identification(
        probe_feats, probe_ids, distractor_feats, ranks=(1,), metric=metric,
        num_distractors=num_distractors, batch=batch, ties=ties, device=device,
    )[1]


# ----------------------------------------------------------------------------------------------
# The full-tier pipeline: features of the devkit's lists -> noise cleaning -> rank-1 (-> .bin)
# ----------------------------------------------------------------------------------------------
def flip_features(embed_fn, dataset, batch_size: int = 256, workers: int = 0,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``normalize(embed(x) + embed(hflip(x)))`` for every item of ``dataset`` (items
    ``(img, ...)``), in order, on the CPU (see :func:`.features.extract_features`)."""
    from torch.utils.data import DataLoader

    from .features import extract_features

    loader = DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=int(workers),
                        pin_memory=torch.device(device).type == "cuda" if device is not None else False)
    return extract_features(embed_fn, loader, flip=True, normalize=True, device=device)


def center_noisy_probes(feats, ids, noisy, seed: int = 0, jitter: float = 1e-3
                        ) -> tuple[torch.Tensor, np.ndarray]:
    """insightface's FaceScrub cleaning (``Evaluation/Megaface/remove_noises.py``): the feature of
    a listed (mislabelled) probe becomes the sum of its identity's clean features plus
    ``U(-jitter, jitter)`` per dimension, L2-normalized. The jitter is drawn from a generator
    seeded with ``seed`` (insightface: numpy's unseeded global RNG).

    Returns ``(features, orphan)``: ``orphan`` marks noisy probes whose identity has no clean
    image (insightface asserts there is none); the caller drops them.
    """
    out = _tensor(feats).clone()
    ids = np.asarray(ids).reshape(-1)
    noisy = np.asarray(noisy, dtype=bool).reshape(-1)
    orphan = np.zeros_like(noisy)
    g = torch.Generator().manual_seed(int(seed))
    for ident in np.unique(ids[noisy]):
        members = ids == ident
        clean = np.flatnonzero(members & ~noisy)
        bad = np.flatnonzero(members & noisy)
        if clean.size == 0:
            orphan[bad] = True
            continue
        center = out[torch.as_tensor(clean)].sum(dim=0)
        for i in bad:
            g_i = (torch.rand(center.shape, generator=g, dtype=torch.float64) * 2 - 1) * jitter
            f = center + g_i.to(center.dtype)
            out[int(i)] = f / f.norm().clamp_min(1e-12)
    return out, orphan


def clean_megaface(probe_feats, probe_ids, distractor_feats, probe_noise=None, distractor_noise=None,
                   facescrub_noise_action: str = "center", seed: int = 0) -> dict:
    """Apply the noise lists' masks: listed distractors are removed (for rank-1 this equals
    insightface's padding of their features with a coordinate of 100, which puts them out of
    reach); listed probes are replaced by their identity centre (``"center"``, insightface) or
    removed (``"remove"``). Returns the cleaned arrays, the kept indices and counts."""
    probes = _tensor(probe_feats)
    distractors = _tensor(distractor_feats)
    ids = np.asarray(probe_ids).reshape(-1)
    pn = np.zeros(len(ids), bool) if probe_noise is None else np.asarray(probe_noise, bool).reshape(-1)
    dn = (np.zeros(distractors.shape[0], bool) if distractor_noise is None
          else np.asarray(distractor_noise, bool).reshape(-1))
    if pn.shape[0] != probes.shape[0] or dn.shape[0] != distractors.shape[0]:
        raise ValueError("noise masks must have one entry per probe / distractor")
    replaced = 0
    if facescrub_noise_action == "remove":
        keep_p = ~pn
    elif facescrub_noise_action == "center":
        probes, orphan = center_noisy_probes(probes, ids, pn, seed=seed)
        keep_p = ~orphan
        replaced = int((pn & ~orphan).sum())
    else:
        raise ValueError(f"facescrub_noise_action must be 'center' or 'remove', got {facescrub_noise_action!r}")
    kp, kd = np.flatnonzero(keep_p), np.flatnonzero(~dn)
    return {"probes": probes[torch.as_tensor(kp)], "probe_ids": ids[kp], "probe_index": kp,
            "distractors": distractors[torch.as_tensor(kd)], "distractor_index": kd,
            "probes_replaced": replaced, "probes_removed": int(len(ids) - len(kp)),
            "distractors_removed": int(len(dn) - len(kd))}


def num_pairs(probe_ids) -> int:
    """Ordered (probe, target) pairs of the protocol: sum of n(n-1) over identities."""
    _, counts = np.unique(np.asarray(probe_ids).reshape(-1), return_counts=True)
    return int((counts * (counts - 1)).sum())


def score_megaface(probe_feats, probe_ids, distractor_feats, probe_noise=None, distractor_noise=None,
                   facescrub_noise_action: str = "center", ranks: Sequence[int] = (1,),
                   metric: str = "cosine", ties: str = "miss", batch: int = 4096,
                   device: torch.device | str | None = None, seed: int = 0) -> dict:
    """Noise cleaning (:func:`clean_megaface`) then :func:`megaface_identification`.

    Returns ``{"rank1": %, ("rank<k>": %), "num_probes_used", "num_probe_ids_used", "num_pairs",
    "num_distractors_used", "probes_replaced", "probes_removed", "distractors_removed"}``.
    """
    c = clean_megaface(probe_feats, probe_ids, distractor_feats, probe_noise, distractor_noise,
                       facescrub_noise_action, seed)
    rates = megaface_identification(c["probes"], c["probe_ids"], c["distractors"], ranks=ranks, metric=metric,
                                    batch=batch, ties=ties, device=device)
    out: dict = {f"rank{r}": float(v) for r, v in rates.items()}
    out.update(num_probes_used=int(len(c["probe_ids"])), num_probe_ids_used=int(len(np.unique(c["probe_ids"]))),
               num_pairs=num_pairs(c["probe_ids"]), num_distractors_used=int(c["distractors"].shape[0]),
               probes_replaced=c["probes_replaced"], probes_removed=c["probes_removed"],
               distractors_removed=c["distractors_removed"])
    return out


def write_devkit_features(out_dir, probe_paths: Sequence[str], probe_ids: Sequence, probe_feats,
                          distractor_paths: Sequence[str], distractor_feats, file_ending: str = "_lfs.bin",
                          distractor_set: int = 1) -> dict:
    """Write features where the devkit's ``run_experiment.py`` looks for them, plus the lists.

    ``out_dir/facescrub/<probe path><file_ending>`` and ``out_dir/megaface/<distractor path>
    <file_ending>`` (OpenCV mat, ``d x 1`` float32: :func:`benchmarks.data.faces.write_feature_bin`),
    ``out_dir/templatelists/facescrub_features_list.json`` (``path``, ``id``) and
    ``out_dir/templatelists/megaface_features_list.json_<n>_<set>`` (``path``) naming exactly the
    images written. Returns the paths and the devkit command line that scores them.
    """
    import json
    import os

    from benchmarks.data.faces import megaface_list_name, write_feature_bin

    out_dir = os.fspath(out_dir)
    pf = _tensor(probe_feats).float().numpy()
    df = _tensor(distractor_feats).float().numpy()
    if len(probe_paths) != pf.shape[0] or len(distractor_paths) != df.shape[0]:
        raise ValueError("one feature per listed path is needed")
    for sub, paths, feats in (("facescrub", probe_paths, pf), ("megaface", distractor_paths, df)):
        for p, f in zip(paths, feats):
            target = os.path.join(out_dir, sub, p + file_ending)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            write_feature_bin(target, f)
    tl = os.path.join(out_dir, "templatelists")
    os.makedirs(tl, exist_ok=True)
    probe_list = os.path.join(tl, "facescrub_features_list.json")
    with open(probe_list, "w", encoding="utf-8") as f:
        json.dump({"path": list(probe_paths), "id": [str(i) for i in probe_ids]}, f)
    n = len(distractor_paths)
    distractor_list = os.path.join(tl, megaface_list_name(n, distractor_set))
    with open(distractor_list, "w", encoding="utf-8") as f:
        json.dump({"path": list(distractor_paths)}, f)
    command = (f"python devkit/experiments/run_experiment.py {os.path.join(out_dir, 'megaface')} "
               f"{os.path.join(out_dir, 'facescrub')} {file_ending} <results dir> -s {n} "
               f"-p {probe_list} -dlp {tl}")
    return {"features_out": out_dir, "probe_list_out": probe_list, "distractor_list_out": distractor_list,
            "devkit_command": command}


def evaluate_megaface(embed_fn, protocol, *, batch_size: int = 256, workers: int = 0,
                      device: torch.device | str | None = None, metric: str = "cosine", ties: str = "miss",
                      score_batch: int = 4096, features_out=None, file_ending: str = "_lfs.bin",
                      seed: int = 0) -> tuple[dict, dict]:
    """MegaFace Challenge 1 rank-1 of a model on a :class:`benchmarks.data.faces.MegaFaceProtocol`.

    Features of every probe and distractor image (flip-sum, L2-normalize), the noise lists'
    cleaning when ``protocol.noise_cleaned``, then the rank-1 rate; optionally the cleaned
    features and lists in the devkit's layout (``features_out``).

    Returns ``(metrics, info)``: ``metrics = {"rank1": %, "noise_cleaned": bool,
    "num_distractors": the list's size}``; ``info`` holds the counts of :func:`score_megaface`
    (and the export's paths).
    """
    pf = flip_features(embed_fn, protocol.probes, batch_size, workers, device)
    df = flip_features(embed_fn, protocol.distractors, batch_size, workers, device)
    cleaned = bool(protocol.noise_cleaned)
    c = clean_megaface(pf, protocol.probe_ids, df, protocol.probe_noise if cleaned else None,
                       protocol.distractor_noise if cleaned else None, protocol.facescrub_noise_action, seed)
    rate = megaface_identification(c["probes"], c["probe_ids"], c["distractors"], ranks=(1,), metric=metric,
                                   batch=score_batch, ties=ties, device=device)[1]
    info = {"num_probes_used": int(len(c["probe_ids"])), "num_pairs": num_pairs(c["probe_ids"]),
            "num_distractors_used": int(c["distractors"].shape[0]), "probes_replaced": c["probes_replaced"],
            "probes_removed": c["probes_removed"], "distractors_removed": c["distractors_removed"],
            "metric": metric, "ties": ties, "feature_dim": int(pf.shape[1])}
    if features_out:
        info.update(write_devkit_features(
            features_out, [protocol.probe_paths[i] for i in c["probe_index"]], list(c["probe_ids"]),
            c["probes"], [protocol.distractor_paths[i] for i in c["distractor_index"]], c["distractors"],
            file_ending, protocol.distractor_set))
    metrics = {"rank1": float(rate), "noise_cleaned": cleaned, "num_distractors": int(protocol.num_distractors)}
    return metrics, info


def score_feature_files(probe_list, distractor_list, probe_feature_root, distractor_feature_root,
                        file_ending: str, megaface_noises=None, facescrub_noises=None,
                        facescrub_noise_action: str = "center", **kwargs) -> dict:
    """Score feature files laid out for the devkit (``<root>/<list path><file_ending>``), e.g.
    those :func:`write_devkit_features` wrote or another tool produced: the Python counterpart of
    ``run_experiment.py`` + ``Identification`` + ``FuseResults`` for rank-1. Noise lists are
    applied when given (both or neither). ``kwargs`` go to :func:`score_megaface`."""
    from benchmarks.data.faces import (facescrub_noise_mask, load_features, megaface_noise_mask,
                                       read_facescrub_list, read_facescrub_noises, read_megaface_list,
                                       read_megaface_noises)

    if (megaface_noises is None) != (facescrub_noises is None):
        raise ValueError("give both noise lists (megaface_noises and facescrub_noises) or neither")
    probe_paths, probe_ids = read_facescrub_list(probe_list)
    distractor_paths = read_megaface_list(distractor_list)
    pf = load_features(probe_feature_root, probe_paths, file_ending)
    df = load_features(distractor_feature_root, distractor_paths, file_ending)
    pn = dn = None
    if megaface_noises is not None:
        dn = megaface_noise_mask(distractor_paths, read_megaface_noises(megaface_noises))
        pn = facescrub_noise_mask(probe_paths, read_facescrub_noises(facescrub_noises))
    out = score_megaface(pf, probe_ids, df, pn, dn, facescrub_noise_action, **kwargs)
    out["noise_cleaned"] = megaface_noises is not None
    out["num_distractors"] = len(distractor_paths)
    return out
