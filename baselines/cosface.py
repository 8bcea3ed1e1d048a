"""CosFace / large margin cosine loss (Wang, Wang, Zhou, Ji, Gong, Zhou, Li and Liu, "CosFace:
Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018, arXiv:1801.09414)."""
from __future__ import annotations

from torch import Tensor

from lfs.heads import HeadLoss

from lfs.loss import margin_cross_entropy, validated
from .registry import register

__all__ = ["cosface", "CosFaceLoss"]


@validated("cosface")
def cosface(cos: Tensor, target: Tensor, scale=64.0, m: float = 0.35, reduction: str = "mean") -> Tensor:
    """CosFace (LMCL, Eq. 4 of Wang et al., CVPR 2018): the target logit ``s cos(theta_y)``
    becomes ``s (cos(theta_y) - m)``; s = 64, m = 0.35 by default (insightface uses m = 0.40).

    Args:
        cos: N x C cosines.
        target: N int64 class indices.
        scale: s (normalized head), or an N x 1 / N x C tensor.
        m: additive cosine margin (m = 0 is cross entropy on ``scale * cos``).
        reduction: "mean", "sum" or "none".
    """
    return margin_cross_entropy(cos, target, scale, lambda cos_y: cos_y - m, reduction)


def _cosface_t(m: float = 0.35):
    """t(x) = x - m (Table 1 of AM-LFS)."""
    return (lambda x: x - m), None


@register("cosface", fn=cosface, transform=_cosface_t,
          reference="Wang et al. CosFace: Large Margin Cosine Loss for Deep Face Recognition. "
                    "CVPR 2018, arXiv:1801.09414")
class CosFaceLoss(HeadLoss):
    """CosFace with its own class weights (default ``normalize="both"``, ``scale = s``)."""

    default_normalize = "both"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 64.0,
                 m: float = 0.35, reduction: str = "mean"):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        self.m = float(m)

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return cosface(cos, target, scale, self.m, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"m={self.m}"
