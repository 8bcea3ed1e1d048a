"""The one model form of the benchmarks: a backbone (input -> embedding) and a class head.

Every model is an :class:`EmbeddingClassifier`: ``backbone`` maps an input batch to embeddings
``(n, embedding_dim)`` and ``head`` is an :class:`lfs.CosineClassifier` that owns the class
weights W. ``forward`` returns the head's ``(cos, scale)`` tuple, the form that every loss of the
project (AM-LFS and the baselines) consumes; ``embed`` (or ``forward(x, embed=True)``) gives the
embedding (re-ID and face evaluation match embeddings, not logits); ``logits`` gives
``cos * scale``.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch import Tensor

from lfs import CosineClassifier


class EmbeddingClassifier(nn.Module):
    """``backbone`` (input -> ``embedding_dim`` features) followed by a :class:`~lfs.CosineClassifier`.

    Args:
        backbone: any module mapping a batch to ``(n, embedding_dim)``.
        embedding_dim: width of the backbone's output.
        num_classes: number of classes of the head.
        normalize: head normalization, ``"both"`` (scale ``s``), ``"weights"`` (scale ``||x||``)
            or ``"none"`` (plain bias-free linear layer, scale ``||W_j|| ||x||``).
        s: the fixed scale of a ``"both"`` head (ignored otherwise).
        input_shape: the per-sample input shape the model is built for (metadata for data
            pipelines and summaries; not enforced).
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int,
                 normalize: str = "both", s: float = 30.0, input_shape: Sequence[int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = CosineClassifier(embedding_dim, num_classes, normalize=normalize, s=s)
        self.embedding_dim, self.num_classes = int(embedding_dim), int(num_classes)
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None

    @property
    def normalize(self) -> str:
        return self.head.normalize

    @property
    def s(self) -> float:
        return self.head.s

    def embed(self, x: Tensor) -> Tensor:
        """The backbone's embedding ``(n, embedding_dim)`` (not normalized)."""
        return self.backbone(x)

    def forward(self, x: Tensor, embed: bool = False) -> tuple[Tensor, Tensor] | Tensor:
        """``(cos, scale)`` of the head (``cos * scale`` are the logits).

        ``embed=True`` returns the embedding instead, so that code which can only call the
        module (``torch.func.functional_call``, a task's ``eval_kwargs={"embed": True}`` for a
        retrieval reward) reaches it.
        """
        if embed:
            return self.backbone(x)
        return self.head(self.backbone(x))

    def logits(self, x: Tensor) -> Tensor:
        return self.head.logits(self.backbone(x))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
