"""Evaluation protocols of the AM-LFS tables (ARCHITECTURE.md, "Evaluation protocols").

* :mod:`.classification`: CIFAR-10 top-1 error (%).
* :mod:`.features`: flip-summed, L2-normalized test features; distance matrices.
* :mod:`.reid`: Market-1501 / DukeMTMC-reID CMC and mAP (torchreid's ``eval_market1501``),
  k-reciprocal re-ranking (Zhong et al., CVPR 2017) for the "(RK)" rows.
* :mod:`.megaface`: MegaFace challenge-1 rank-1 identification with FaceScrub probes; the
  full-tier pipeline (features of the devkit's lists, noise cleaning, devkit ``.bin`` export).

Numpy/torch only; nothing here imports Hydra.
"""
from .classification import accuracy, num_correct, top1_error
from .features import METRICS, extract_features, pairwise_distance
from .megaface import (evaluate_megaface, megaface_identification, megaface_rank1, score_feature_files,
                       score_megaface)
from .reid import eval_market1501, evaluate_reid, re_ranking

__all__ = [
    "accuracy",
    "num_correct",
    "top1_error",
    "METRICS",
    "extract_features",
    "pairwise_distance",
    "eval_market1501",
    "evaluate_reid",
    "re_ranking",
    "megaface_identification",
    "megaface_rank1",
    "evaluate_megaface",
    "score_megaface",
    "score_feature_files",
]
