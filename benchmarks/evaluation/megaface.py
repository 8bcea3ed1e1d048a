"""MegaFace challenge 1 identification (FaceScrub probes vs. distractors), rank-1 rate.

Protocol (Kemelmacher-Shlizerman et al., "The MegaFace Benchmark: 1 Million Faces for
Recognition at Scale", CVPR 2016; DESIGN.md, "Evaluation protocols"; the AM-LFS MegaFace row):
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
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .features import pairwise_distance

__all__ = ["megaface_rank1", "megaface_identification"]


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
