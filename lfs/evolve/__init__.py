"""Evolved losses (CSE-Autoloss, ICLR 2021; AutoLoss-Zero, CVPR 2022): loss expressions over
primitive operators (:mod:`.operators`, :mod:`.expression`) and the Gradient-Equivalence-Check
signature (:mod:`.signature`).

    >>> import lfs.evolve
    >>> ce = lfs.evolve.parse("neg(dot(y, log(softmax(x))))")
    >>> ce(logits, one_hot).shape          # (N,)
    >>> lfs.evolve.signature(ce)           # equal for algebraically equal losses
"""
from .expression import CLASSIFICATION_INPUTS, ExpressionError, LossExpression, Node, parse, parse_tree
from .operators import AUTOLOSS_ZERO, CONSTANTS, CSE_AUTOLOSS, OPERATOR_SETS, OPERATORS, Operator
from .signature import signature

__all__ = ["parse", "parse_tree", "signature", "LossExpression", "Node", "ExpressionError", "OPERATORS",
           "Operator", "OPERATOR_SETS", "CSE_AUTOLOSS", "AUTOLOSS_ZERO", "CONSTANTS", "CLASSIFICATION_INPUTS"]
