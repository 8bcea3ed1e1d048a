"""Losses written as expressions of primitive operators (CSE-Autoloss, ICLR 2021; AutoLoss-Zero,
CVPR 2022): a candidate is a :class:`lfs.evolve.LossExpression` over the logits ``x`` and the
one-hot target ``y``. Not stackable (each candidate is its own program): the sequential
executor trains them, each copy on its own (the evolutionary searcher does not broadcast)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..family import LossFamily, register_family
from ..loss import as_scale, check_inputs, split_output


@register_family("expression")
class ExpressionFamily(LossFamily):
    """A candidate is a formula (``str``) or a parsed :class:`lfs.evolve.LossExpression`; its
    loss is the batch mean of the per-sample values on ``x = scale * cos`` (or plain logits)."""

    stackable = False

    def __init__(self, operators: str = "autoloss_zero"):
        from ..evolve import OPERATOR_SETS, OPERATORS

        if operators not in OPERATOR_SETS:
            raise ValueError(f"operators must be one of {', '.join(OPERATOR_SETS)}, got {operators!r}")
        self.operators = operators
        self._table = {k: OPERATORS[k] for k in OPERATOR_SETS[operators]}
        self._parsed: dict = {}  # formula -> its compiled LossExpression: a formula is parsed once, not per batch

    def expression(self, candidate):
        from ..evolve import LossExpression, parse

        if isinstance(candidate, LossExpression):
            return candidate
        formula = str(candidate)
        if formula not in self._parsed:
            self._parsed[formula] = parse(formula, operators=self._table)
        return self._parsed[formula]

    def loss(self, output, target: Tensor, candidate) -> Tensor:
        cos, scale = split_output(output)
        check_inputs(cos, target, "expression loss")
        x = as_scale(scale, cos) * cos
        y = F.one_hot(target, x.shape[-1]).to(x.dtype)
        return self.expression(candidate)(x, y).mean()

    def identity(self):
        """Cross entropy."""
        return self.expression("neg(dot(y, log(softmax(x))))")

    def describe(self, candidate) -> str:
        return str(candidate)

    def to_json(self, candidate) -> str:
        return str(candidate)

    def from_json(self, data):
        return self.expression(data)

    def config(self) -> dict:
        return {"operators": self.operators}

