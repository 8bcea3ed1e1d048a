"""SphereReID (Fan, Jiang, Luo, Fei: "SphereReID: Deep Hypersphere Manifold Embedding for Person
Re-Identification", arXiv:1807.00537; J. Vis. Commun. Image R. 2019).

Backbone: torchvision's ResNet-50 without its classifier, built with ``weights=None`` (never a
download); pass ``pretrained_path`` (a local ImageNet state dict of ``torchvision.models.resnet50``)
to start from ImageNet weights as the paper does.

Neck: the paper's "network-D", its best variant: global average pooling -> BatchNorm -> dropout
(p = 0.5) -> fully connected layer (2048 -> 1024) -> BatchNorm, giving the 1024-d embedding; the
paper then L2-normalizes it, which here is the head's ``normalize="both"`` (features and class
weights normalized, "Sphere Softmax"). The 1024-d size, the dropout ratio and the order of the
layers are the paper's (networks A-D of its ablation; A: GAP only, 2048-d; B: GAP + FC; C: GAP +
FC + BN; D as above). Not stated there and chosen here: the FC has a bias (PyTorch default
initialization), the BatchNorms start at weight 1 / bias 0.

Scale: ``s = 14``, the temperature used by the public re-implementation of SphereReID
(``SphereLoss(scale=14)``); we could not confirm the value in the paper's text from the sources at
hand, so it is a config value (``s=...``).

Input: the paper resizes to 288x144 and randomly crops 256x128 for training; ``input_size``
(default (256, 128)) is metadata for the data pipeline, the network itself accepts any size
(global pooling). ``last_stride=1`` (removing the stride of ResNet's last stage, a trick the public
re-implementation adds but the paper does not) is available as an option; default 2, as in the paper.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .base import EmbeddingClassifier
from .registry import register_model

_NECKS = ("D", "C", "B", "A")


def _read_resnet50_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a local ImageNet state dict of ``torchvision.models.resnet50`` and check it.

    Accepts a bare state dict or a checkpoint ``{"state_dict": ...}``, with or without the
    ``module.`` prefix of DataParallel; the ``fc.*`` entries are dropped (SphereReID replaces the
    classifier). Keys and shapes are checked against a ResNet-50 built on the meta device (no
    memory, no time), so a wrong file fails before the real network is built.
    """
    from torchvision.models import resnet50

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{os.fspath(path)!r} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    with torch.device("meta"):
        expected = {k: v.shape for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        def few(keys):
            return f"{keys[:3]}{'...' if len(keys) > 3 else ''}"
        raise ValueError(f"{os.fspath(path)!r} is not a torchvision ResNet-50 state dict: missing {few(missing)}, "
                         f"unexpected {few(unexpected)}, wrong shape {few(wrong)}")
    return state


class SphereReIDBackbone(nn.Module):
    """ResNet-50 trunk + SphereReID neck: (n, 3, H, W) -> (n, embedding_dim).

    ``neck`` selects the paper's network variant: ``"D"`` (GAP-BN-dropout-FC-BN, default),
    ``"C"`` (GAP-FC-BN), ``"B"`` (GAP-FC) or ``"A"`` (GAP only, 2048-d).
    """

    def __init__(self, embedding_dim: int = 1024, dropout: float = 0.5, neck: str = "D", last_stride: int = 2,
                 pretrained_path: str | os.PathLike | None = None):
        super().__init__()
        from torchvision.models import resnet50

        if neck not in _NECKS:
            raise ValueError(f"neck must be one of {_NECKS}, got {neck!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        state = _read_resnet50_state(pretrained_path) if pretrained_path is not None else None
        resnet = resnet50(weights=None)
        if state is not None:
            resnet.load_state_dict(state, strict=False)  # strict apart from the dropped fc.*
        if last_stride == 1:
            block = resnet.layer4[0]
            block.conv2.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.trunk = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                   resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        in_f = resnet.fc.in_features  # 2048
        self.neck_type = neck
        if neck == "A":
            self.neck = nn.Identity()
            embedding_dim = in_f
        elif neck == "B":
            self.neck = nn.Linear(in_f, embedding_dim)
        elif neck == "C":
            self.neck = nn.Sequential(nn.Linear(in_f, embedding_dim), nn.BatchNorm1d(embedding_dim))
        else:
            self.neck = nn.Sequential(nn.BatchNorm1d(in_f), nn.Dropout(dropout), nn.Linear(in_f, embedding_dim),
                                      nn.BatchNorm1d(embedding_dim))
        self.out_features = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.neck(self.trunk(x).mean(dim=(-2, -1)))


@register_model("sphere_reid_resnet50")
def sphere_reid_resnet50(num_classes: int, normalize: str = "both", s: float = 14.0, embedding_dim: int = 1024,
                         dropout: float = 0.5, neck: str = "D", last_stride: int = 2,
                         input_size: Sequence[int] = (256, 128),
                         pretrained_path: str | os.PathLike | None = None) -> EmbeddingClassifier:
    """SphereReID (network-D on ResNet-50), 1024-d embedding, normalized head with s=14 by default."""
    backbone = SphereReIDBackbone(embedding_dim, dropout, neck, last_stride, pretrained_path)
    return EmbeddingClassifier(backbone, backbone.out_features, num_classes, normalize=normalize, s=s,
                               input_shape=(3, *(int(d) for d in input_size)))
