"""The pattern every margin baseline shares: replace the target logit, then cross entropy.

``logits = scale * cos``; the target entry ``scale_y * cos_y`` becomes ``scale_y * g(cos_y)`` and
``-log softmax`` of the result is taken by :func:`lfs.loss.target_logit_cross_entropy`, the same
core AM-LFS uses (its ``t`` plays the role of ``g``).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from lfs.loss import as_scale, gather_target, reduce_loss, target_logit_cross_entropy


def margin_cross_entropy(cos: Tensor, target: Tensor, scale, target_cosine: Callable[[Tensor], Tensor],
                         reduction: str = "mean") -> Tensor:
    """``-log p_y`` after the target logit ``scale_y cos_y`` becomes ``scale_y target_cosine(cos_y)``.

    ``scale`` is a number, an N x 1 or an N x C tensor (see :func:`lfs.loss.as_scale`).
    """
    scale = as_scale(scale, cos)
    logits = scale * cos
    cos_y = gather_target(cos, target)
    scale_y = gather_target(scale.expand_as(cos), target)
    loss = target_logit_cross_entropy(logits, target, scale_y * target_cosine(cos_y), reduction="none")
    return reduce_loss(loss, reduction)
