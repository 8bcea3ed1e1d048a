"""Loss expressions: trees of primitive operators over named inputs and constants (CSE-Autoloss,
AutoLoss-Zero), parsed from and printed as formulas, and compiled once into a torch callable.

    >>> loss = parse("neg(dot(y, log(softmax(x))))")      # cross entropy
    >>> loss(x, y)                                         # per-sample losses, shape (N,)
    >>> str(loss)                                          # 'neg(dot(y, log(softmax(x))))'

Inputs are named (classification: ``x`` the N x C logits, ``y`` the one-hot N x C target; any
other names for other tasks, e.g. ``inputs=("pred", "target")``). Constants are numbers (the
searches draw 1, 2, 3). A formula evaluates to N x C or, after a reduction over the class axis
(``dot``, ``mean``), N x 1; the per-sample loss is its mean over the class axis (our choice: the
batch mean is then torch's ``reduction="mean"`` for element-wise losses such as BCE or MSE).

Compilation: the tree becomes the source of one Python function of nested operator calls,
compiled once (``compile``); a call runs those torch ops and nothing else (no tree walk).
``log(softmax(a))`` is emitted as one stable call (same function, see :mod:`.operators`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .operators import OPERATORS, Operator, log_softmax_eps

CLASSIFICATION_INPUTS = ("x", "y")


class ExpressionError(ValueError):
    """An unparsable formula, an unknown operator or input, or a wrong arity; the message names
    the position (0-based character offset) in the formula."""


@dataclass(frozen=True)
class Node:
    """An operator applied to children, an input (``op=None, name=...``) or a constant."""

    op: str | None = None
    children: tuple["Node", ...] = ()
    name: str | None = None  # an input's name
    value: float | None = None  # a constant

    def __str__(self) -> str:
        if self.op is not None:
            return f"{self.op}({', '.join(map(str, self.children))})"
        if self.name is not None:
            return self.name
        v = self.value
        return str(int(v)) if float(v).is_integer() else repr(float(v))

    def size(self) -> int:
        return 1 + sum(c.size() for c in self.children)

    def depth(self) -> int:
        return 1 + max((c.depth() for c in self.children), default=0)

    def inputs(self) -> set[str]:
        return ({self.name} if self.name is not None else set()).union(*[c.inputs() for c in self.children])


_TOKEN = re.compile(r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<punct>[(),]))")


def _tokens(formula: str):
    pos = 0
    while pos < len(formula):
        if formula[pos:].strip() == "":
            break
        m = _TOKEN.match(formula, pos)
        if m is None or m.end() == pos:
            bad = len(formula) - len(formula[pos:].lstrip())
            raise ExpressionError(f"unexpected character {formula[bad]!r} at position {bad} of {formula!r}")
        kind = m.lastgroup
        start = m.start(kind)
        yield kind, m.group(kind), start
        pos = m.end()
    yield "end", "", len(formula)


def parse_tree(formula: str, inputs: Sequence[str] = CLASSIFICATION_INPUTS,
               operators: dict[str, Operator] | None = None) -> Node:
    """The tree of ``formula`` (see :func:`parse`)."""
    if not isinstance(formula, str) or not formula.strip():
        raise ExpressionError(f"a loss formula must be a non-empty string, got {formula!r}")
    ops = OPERATORS if operators is None else operators
    toks = list(_tokens(formula))
    i = 0

    def expect(value: str):
        nonlocal i
        kind, text, pos = toks[i]
        if text != value:
            found = "the end" if kind == "end" else repr(text)
            raise ExpressionError(f"expected {value!r} at position {pos} of {formula!r}, found {found}")
        i += 1

    def node() -> Node:
        nonlocal i
        kind, text, pos = toks[i]
        i += 1
        if kind == "num":
            return Node(value=float(text))
        if kind != "name":
            found = "the end" if kind == "end" else repr(text)
            raise ExpressionError(f"expected an operator, input or number at position {pos} of {formula!r}, found {found}")
        if toks[i][1] != "(":
            if text in ops:
                raise ExpressionError(f"operator {text!r} at position {pos} of {formula!r} needs its arguments: "
                                      f"{text}(...)")
            if text not in inputs:
                raise ExpressionError(f"unknown input {text!r} at position {pos} of {formula!r}; inputs: "
                                      f"{', '.join(inputs)}")
            return Node(name=text)
        if text not in ops:
            raise ExpressionError(f"unknown operator {text!r} at position {pos} of {formula!r}; known: "
                                  f"{', '.join(sorted(ops))}")
        expect("(")
        children = [node()]
        while toks[i][1] == ",":
            i += 1
            children.append(node())
        expect(")")
        if len(children) != ops[text].arity:
            raise ExpressionError(f"operator {text!r} at position {pos} of {formula!r} takes {ops[text].arity} "
                                  f"argument(s), got {len(children)}")
        return Node(op=text, children=tuple(children))

    tree = node()
    kind, text, pos = toks[i]
    if kind != "end":
        raise ExpressionError(f"unexpected {text!r} at position {pos} of {formula!r} after a complete formula")
    return tree


def _source(node: Node, names: dict[str, str]) -> str:
    if node.op == "log" and node.children[0].op == "softmax":  # fused: no underflow of softmax
        return f"_log_softmax_eps({_source(node.children[0].children[0], names)})"
    if node.op is not None:
        return f"{names[node.op]}({', '.join(_source(c, names) for c in node.children)})"
    if node.name is not None:
        return f"in_{node.name}"
    return repr(float(node.value))


class LossExpression:
    """A parsed, compiled loss: ``loss(*inputs)`` returns the per-sample losses, shape (N,).

    ``str(loss)`` is the formula (it parses back to the same tree); ``loss.tree`` the tree;
    equality and hashing are the formula's."""

    def __init__(self, tree: Node, inputs: Sequence[str] = CLASSIFICATION_INPUTS,
                 operators: dict[str, Operator] | None = None):
        self.tree, self.inputs = tree, tuple(inputs)
        ops = OPERATORS if operators is None else operators
        used = sorted(_ops_of(tree))
        names = {op: f"op_{op}" for op in used}
        args = ", ".join(f"in_{n}" for n in self.inputs)
        src = f"def _loss({args}):\n    return _per_sample({_source(tree, names)}, in_{self.inputs[0]})\n"
        namespace: dict = {f"op_{op}": ops[op].fn for op in used}
        namespace["_per_sample"], namespace["_log_softmax_eps"] = _per_sample, log_softmax_eps
        exec(compile(src, f"<loss {tree}>", "exec"), namespace)  # noqa: S102 - our own generated source
        self._fn: Callable = namespace["_loss"]
        self.source = src

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if len(args) != len(self.inputs):
            raise ValueError(f"loss {self} takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), got {len(args)}")
        first = args[0]
        for name, a in zip(self.inputs, args):
            if not isinstance(a, torch.Tensor) or a.ndim != 2 or a.shape != first.shape:
                shapes = ", ".join(f"{n} {tuple(getattr(v, 'shape', ()))}" for n, v in zip(self.inputs, args))
                raise ValueError(f"loss inputs must be N x C tensors of one shape (y one-hot); got {shapes}")
        return self._fn(*args)

    def __str__(self) -> str:
        return str(self.tree)

    def __repr__(self) -> str:
        return f"LossExpression({str(self.tree)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, LossExpression) and str(self) == str(other) and self.inputs == other.inputs

    def __hash__(self) -> int:
        return hash((str(self), self.inputs))


def _ops_of(node: Node) -> set[str]:
    return ({node.op} if node.op else set()).union(*[_ops_of(c) for c in node.children])


def _per_sample(value, reference: torch.Tensor) -> torch.Tensor:
    """The formula's value as one loss per sample: N x C or N x 1 -> mean over the class axis; a
    formula without inputs (a number) is broadcast to (N,)."""
    n = reference.shape[0]
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=reference.dtype, device=reference.device)
    if value.ndim == 0:
        return value.expand(n)
    return torch.broadcast_to(value, (n, value.shape[-1])).mean(dim=-1)


def parse(formula: str, inputs: Sequence[str] = CLASSIFICATION_INPUTS,
          operators: dict[str, Operator] | None = None) -> LossExpression:
    """Parse and compile ``formula``, e.g. ``"neg(dot(y, log(softmax(x))))"`` (cross entropy).

    Args:
        formula: nested calls ``op(arg, ...)`` of the operators (:data:`lfs.evolve.OPERATORS`),
            the ``inputs`` by name and numbers.
        inputs: the input names, in call order (classification: ``("x", "y")``).
        operators: the operator table (default: every operator of :mod:`lfs.evolve.operators`).

    Raises :class:`ExpressionError` (one line, naming the position) for a formula that does not
    parse, an unknown operator or input, or a wrong number of arguments.
    """
    return LossExpression(parse_tree(formula, inputs, operators), inputs, operators)
