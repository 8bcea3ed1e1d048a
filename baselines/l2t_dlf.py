"""L2T-DLF-style baseline: a teacher network that outputs the student's loss coefficients.

Reference: Lijun Wu, Fei Tian, Yingce Xia, Yang Fan, Tao Qin, Jianhuang Lai, Tie-Yan Liu,
"Learning to Teach with Dynamic Loss Functions", NeurIPS 2018 (arXiv 1810.12081). The AM-LFS
paper compares against it on CIFAR-10 / ResNet-20 (its Table 2: CE 8.75 %, L2T-DLF 7.63 %,
AM-LFS 6.92 % top-1 error, no label noise).

The loss family (the original's classification loss)
----------------------------------------------------
With ``p = softmax(scale * cos)`` (the student's class probabilities) and ``y`` the label::

    L_phi(p, y) = -sigmoid( y^T W log p + b ) = -sigmoid( sum_j W[y, j] log p_j + b )

a "bilinear" loss whose coefficients ``phi = (W, b)`` (``W`` C x C, ``b`` a number) are what the
teacher outputs. :func:`l2t_dlf` also takes a diagonal ``W`` (a vector of C numbers,
``W[y] log p_y``) or a number (``W log p_y``), for many classes where C x C does not fit.

Defaults and their relation to cross entropy (``W = I``, ``b = 0``; ``W=None`` means ``I``)::

    L = -sigmoid(log p_y) = -p_y / (1 + p_y) = -1 / (1 + exp(CE)),   CE = -log p_y

so the default loss is a strictly increasing function of the cross entropy (same minimizer,
same per-example ranking), bounded in (-1/2, 0], and its gradient is, example by example,
the cross-entropy gradient re-weighted::

    d L / d logits = w_i * d CE / d logits,   w_i = sigmoid'(log p_y) = p_y / (1 + p_y)^2 <= 1/4

(in general ``w_i = sigmoid'(u_i)`` with ``u_i = y^T W log p + b``, times ``W``). Confident
examples get up to 1/4 of their CE gradient; hopeless ones (``p_y -> 0``, e.g. noisy labels)
almost none. It is *not* CE itself: with the default coefficients a student needs a learning
rate a few times larger than with CE, or a teacher that learns a larger ``W`` (``W = a I``
multiplies the gradient by ``a``).

The teacher
-----------
:class:`L2TTeacher` is a small MLP ``features -> (W, b)`` with ``W = I + dW``, ``b = b0 + db``
where ``(dW, db)`` is the MLP's output. Its last layer is zero-initialized, so **at
initialization the teacher outputs exactly** ``W = I, b = b0`` (``b0 = 0`` by default) for
every input: the student starts on the default loss above. The input is a vector of training
progress (:data:`FEATURE_NAMES`): the fraction of training done, an EMA of the student's
training cross entropy divided by ``log C`` (1 = chance), an EMA of the training error, and the
latest validation error.

The driver, usable from any training loop
-----------------------------------------
:class:`L2TDLF` owns the teacher, its Adam optimizer and the progress state::

    l2t = L2TDLF(num_classes=10)
    for step, (x, y) in enumerate(loader):
        cos, scale = student(x)
        loss = l2t.student_loss(cos, y, scale)          # teacher coefficients detached
        opt.zero_grad(); loss.backward(); opt.step()
        l2t.update_state(progress=step / total, train_loss=ce, train_error=err)
        if step % k == 0:
            l2t.teacher_step(student, None, (x, y), next(val_iter), student_lr=lr)
        # once per epoch: l2t.update_state(val_error=...)

``teacher_step`` differentiates a smoothed validation measure through one look-ahead SGD step
of the student, ``omega' = omega - student_lr * grad_omega L_phi(omega; train batch)``, with
:func:`torch.func.functional_call` and ``torch.autograd.grad(create_graph=True)``; the student
itself is not modified.

``forward_fn(student, params, x) -> (cos, scale)`` evaluates the student with the parameters
and buffers in the dict ``params`` (name -> tensor, the names of ``student.named_parameters()``
and ``named_buffers()``). ``None`` selects :func:`default_forward`:
``torch.func.functional_call(student, params, (x,))``, whose result is taken as ``(cos, scale)``
when it is a pair and as plain logits (``cos = logits``, ``scale = 1``) otherwise. Pass your own
when the student's forward needs more than ``x`` or returns something else.

How this departs from the original L2T-DLF
------------------------------------------
* **Teacher training signal.** The original optimizes the teacher by reverse-mode
  differentiation (RMD) of the dev-set measure through the student's whole training trajectory
  (an episode of many momentum-SGD steps), updating the teacher between episodes and then using
  the learned teacher to train a fresh student. Here the teacher gets a **one-step look-ahead**
  gradient (the DARTS / meta-reweighting approximation): the dev measure after a single plain SGD
  step of the current student, online, during one training run (no episodes, no separate
  teacher-training phase, no second student). The look-ahead step ignores the student
  optimizer's momentum and weight decay; ``student_lr`` should be its current learning rate.
* **Update frequency.** One Adam step of the teacher per :meth:`L2TDLF.teacher_step` call, at the
  frequency the training loop chooses (e.g. every k student steps), on one training and one
  validation mini-batch, instead of once per episode on the full dev set.
* **Measure.** The smoothed dev measure is the *soft accuracy*, the mean softmax probability of
  the true class on the validation batch (``measure="soft_accuracy"``, default), or the negative
  cross entropy (``"neg_ce"``); the original replaces the dev accuracy by a differentiable
  surrogate in the same spirit, over the dev set.
* **Features.** Fraction of training done, EMA of the training CE (/ log C), EMA of the
  training error, validation error (:data:`FEATURE_NAMES`), in the spirit of the original's
  iteration number and training / dev accuracy; the exact original feature set and its
  normalization are not reproduced.
* **Teacher architecture and parametrization.** A 2-layer tanh MLP with a residual,
  zero-initialized output (``W = I + dW``) so that training starts on the default loss; the
  original's teacher network differs. ``w_form`` can restrict ``W`` to a diagonal or a single
  number (``"diag"``, ``"scalar"``); the original uses the full C x C matrix.
* **Logits.** The loss acts on ``scale * cos`` as every loss of this project does
  (:mod:`lfs.heads`); with ``normalize="none"`` (the default of :class:`L2TDLFLoss`) these are the
  plain linear-layer logits of the original (a bias-free last layer).

Provenance: the stored public copies consulted for this file gave the paper's abstract and
introduction and a summary confirming the teacher's inputs (iteration number, training and dev
accuracy), the coefficient-output teacher and the RMD training. The loss formula
``-sigmoid(y^T W log p + b)`` and the smoothed dev measure follow the paper's Section 4 as
recalled, not as re-read here: check them against arXiv 1810.12081 before calling them exact.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from lfs.heads import HeadLoss
from lfs.loss import as_scale, gather_target, reduce_loss, validated

from .registry import register

__all__ = [
    "FEATURE_NAMES",
    "W_FORMS",
    "MEASURES",
    "l2t_dlf",
    "soft_accuracy",
    "validation_measure",
    "default_forward",
    "L2TTeacher",
    "L2TDLF",
    "L2TDLFLoss",
]

#: The teacher's input, in this order.
FEATURE_NAMES = ("progress", "train_loss_ema", "train_error_ema", "val_error")
#: Shapes of the coefficient matrix W: C x C, C (diagonal) or a number.
W_FORMS = ("full", "diag", "scalar")
#: Smoothed validation measures (higher is better) that the teacher maximizes.
MEASURES = ("soft_accuracy", "neg_ce")

ForwardFn = Callable[[nn.Module, dict, Tensor], "tuple[Tensor, Tensor | float]"]


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------
def _as_coefficient(x, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(dtype=like.dtype)
    return torch.as_tensor(float(x), dtype=like.dtype, device=like.device)


def _weighted_log_prob(log_p: Tensor, target: Tensor, W) -> Tensor:
    """``y^T W log p`` per example for W = None (identity), a number, a C-vector or a C x C matrix.

    Branches on the *rank* of W only (a static property, also under vmap), never on values."""
    log_p_y = gather_target(log_p, target)
    if W is None:
        return log_p_y
    W = _as_coefficient(W, log_p)
    if W.dim() == 0:
        return W * log_p_y
    if W.dim() == 1:  # diagonal W
        return W.index_select(0, target) * log_p_y
    if W.dim() == 2:  # row y of W dotted with log p
        return (W.index_select(0, target) * log_p).sum(-1)
    raise ValueError(f"W must be None, a number, a C-vector or a C x C matrix, got shape {tuple(W.shape)}")


@validated("l2t_dlf")
def l2t_dlf(cos: Tensor, target: Tensor, scale=1.0, W=None, b=0.0, reduction: str = "mean") -> Tensor:
    """The L2T-DLF student loss ``-sigmoid(y^T W log softmax(scale * cos) + b)``.

    Args:
        cos: N x C cosines (or logits with ``scale = 1``).
        target: N class indices.
        scale: a number, or an N x 1 / N x C tensor (see :func:`lfs.loss.as_scale`).
        W: ``None`` (identity), a number ``a`` (``a I``), a C-vector (diagonal) or a C x C matrix.
        b: the bias, a number or a 0-d tensor.
        reduction: "mean", "sum" or "none".

    With the defaults it equals ``-p_y / (1 + p_y) = -1 / (1 + exp(CE))`` (see the module
    docstring). Differentiable in ``cos``, ``scale``, ``W`` and ``b``; vmap-safe.
    """
    logits = as_scale(scale, cos) * cos
    log_p = F.log_softmax(logits, dim=-1)
    u = _weighted_log_prob(log_p, target, W) + _as_coefficient(b, log_p)
    return reduce_loss(-torch.sigmoid(u), reduction)


def soft_accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean softmax probability of the true class: a smooth surrogate of the accuracy."""
    return gather_target(F.softmax(logits, dim=-1), target).mean()


def validation_measure(logits: Tensor, target: Tensor, measure: str = "soft_accuracy") -> Tensor:
    """The smoothed validation measure (higher is better): soft accuracy or ``-CE``."""
    if measure == "soft_accuracy":
        return soft_accuracy(logits, target)
    if measure == "neg_ce":
        return -F.cross_entropy(logits, target)
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")


def default_forward(student: nn.Module, params: dict, x: Tensor):
    """``functional_call(student, params, (x,))`` as ``(cos, scale)``; a single output is taken
    as logits (``scale = 1``)."""
    out = functional_call(student, params, (x,))
    if isinstance(out, (tuple, list)):
        cos, scale = out
        return cos, scale
    return out, 1.0


# --------------------------------------------------------------------------------------------
# The teacher
# --------------------------------------------------------------------------------------------
class L2TTeacher(nn.Module):
    """MLP ``features -> (W, b)``: ``W = I + dW``, ``b = b0 + db``, ``(dW, db)`` from a 2-layer
    tanh MLP whose output layer is zero-initialized, so that a new teacher outputs exactly
    ``W = I`` (in its ``w_form``) and ``b = b0`` whatever its input.

    Args:
        num_classes: C.
        num_features: length of the feature vector (default ``len(FEATURE_NAMES)``).
        hidden: hidden units.
        w_form: "full" (C x C), "diag" (C) or "scalar".
        b_init: ``b0``.
    """

    def __init__(self, num_classes: int, num_features: int = len(FEATURE_NAMES), hidden: int = 32,
                 w_form: str = "full", b_init: float = 0.0):
        super().__init__()
        if w_form not in W_FORMS:
            raise ValueError(f"w_form must be one of {W_FORMS}, got {w_form!r}")
        self.num_classes, self.num_features, self.w_form = int(num_classes), int(num_features), w_form
        self.w_shape = {"full": (self.num_classes, self.num_classes), "diag": (self.num_classes,),
                        "scalar": ()}[w_form]
        n_w = math.prod(self.w_shape)
        self.hidden = nn.Linear(self.num_features, hidden)
        self.out = nn.Linear(hidden, n_w + 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        base = {"full": torch.eye(self.num_classes), "diag": torch.ones(self.num_classes),
                "scalar": torch.ones(())}[w_form]
        self.register_buffer("W_base", base)
        self.register_buffer("b_base", torch.tensor(float(b_init)))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        features = features.to(self.out.weight.dtype)
        delta = self.out(torch.tanh(self.hidden(features)))
        dW, db = delta[..., :-1], delta[..., -1]
        W = self.W_base + dW.reshape(tuple(delta.shape[:-1]) + tuple(self.w_shape))
        return W, self.b_base + db


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
class L2TDLF:
    """The teacher, its Adam optimizer and the training-progress state, for any training loop.

    Args:
        num_classes: C.
        teacher: an :class:`L2TTeacher` (built from the other arguments when omitted).
        lr: the teacher's Adam learning rate.
        measure: the smoothed validation measure, see :data:`MEASURES`.
        ema: momentum of the EMAs of the training loss and error.
        w_form, hidden, b_init: passed to a new :class:`L2TTeacher`.
        reduction: reduction of :meth:`student_loss`.
        max_grad_norm: clip the teacher's gradient norm (``None``: no clipping).
    """

    def __init__(self, num_classes: int, teacher: L2TTeacher | None = None, lr: float = 1e-3,
                 measure: str = "soft_accuracy", ema: float = 0.9, w_form: str = "full",
                 hidden: int = 32, b_init: float = 0.0, reduction: str = "mean",
                 max_grad_norm: float | None = None):
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema!r}")
        self.num_classes = int(num_classes)
        self.teacher = teacher if teacher is not None else L2TTeacher(
            num_classes, hidden=hidden, w_form=w_form, b_init=b_init)
        self.optimizer = torch.optim.Adam(self.teacher.parameters(), lr=lr)
        self.measure, self.ema, self.reduction, self.max_grad_norm = measure, float(ema), reduction, max_grad_norm
        chance_error = 1.0 - 1.0 / self.num_classes
        self.state = {"progress": 0.0, "train_loss_ema": 1.0, "train_error_ema": chance_error,
                      "val_error": chance_error}
        self._seen = set()

    # ---- progress state ---------------------------------------------------------------------
    def update_state(self, progress: float | None = None, train_loss: float | None = None,
                     train_error: float | None = None, val_error: float | None = None) -> dict:
        """Record training progress. ``train_loss`` is the student's training cross entropy
        (stored as an EMA of ``CE / log C``), ``train_error`` its training error in [0, 1] (EMA),
        ``val_error`` the latest validation error, ``progress`` the fraction of training done.
        The first value of an EMA replaces the initial (chance-level) one."""
        def _ema(key, value):
            value = float(value)
            self.state[key] = value if key not in self._seen else self.ema * self.state[key] + (1 - self.ema) * value
            self._seen.add(key)

        if progress is not None:
            self.state["progress"] = float(progress)
        if train_loss is not None:
            _ema("train_loss_ema", float(train_loss) / math.log(max(self.num_classes, 2)))
        if train_error is not None:
            _ema("train_error_ema", train_error)
        if val_error is not None:
            self.state["val_error"] = float(val_error)
        return dict(self.state)

    def state_dict(self) -> dict:
        """Teacher, its optimizer and the progress state (for checkpoints)."""
        return {"teacher": copy.deepcopy(self.teacher.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "state": dict(self.state), "seen": sorted(self._seen)}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.state, self._seen = dict(state["state"]), set(state["seen"])

    def features(self) -> Tensor:
        """The current feature vector (:data:`FEATURE_NAMES` order) in the teacher's dtype."""
        dtype = self.teacher.out.weight.dtype
        device = self.teacher.out.weight.device
        return torch.tensor([self.state[k] for k in FEATURE_NAMES], dtype=dtype, device=device)

    def _features(self, features) -> Tensor:
        if features is None:
            return self.features()
        p = self.teacher.out.weight
        return torch.as_tensor(features).to(dtype=p.dtype, device=p.device)

    # ---- the student's loss -----------------------------------------------------------------
    def coefficients(self, features: Tensor | None = None, detach: bool = True) -> tuple[Tensor, Tensor]:
        """The teacher's ``(W, b)`` for ``features`` (default: the tracked state)."""
        feats = self._features(features)
        if detach:
            with torch.no_grad():
                return self.teacher(feats)
        return self.teacher(feats)

    def student_loss(self, cos: Tensor, target: Tensor, scale=1.0, features: Tensor | None = None) -> Tensor:
        """:func:`l2t_dlf` with the teacher's current coefficients, detached from the teacher."""
        W, b = self.coefficients(features, detach=True)
        return l2t_dlf(cos, target, scale, W.to(cos.device), b.to(cos.device), reduction=self.reduction)

    def sync(self, loss_module: "L2TDLFLoss", features: Tensor | None = None) -> None:
        """Copy the teacher's current coefficients into an :class:`L2TDLFLoss` module."""
        W, b = self.coefficients(features, detach=True)
        loss_module.set_coefficients(W, b)

    # ---- the teacher's update ---------------------------------------------------------------
    def lookahead_measure(self, student: nn.Module, forward_fn: ForwardFn | None, train_batch, val_batch,
                          features: Tensor | None = None, student_lr: float = 0.1) -> tuple[Tensor, Tensor]:
        """``(measure(omega'), L_phi(omega))``: the validation measure after one look-ahead SGD step
        ``omega' = omega - student_lr * grad L_phi(omega; train batch)``, differentiable w.r.t. the
        teacher's parameters, and the student's training loss at ``omega``. Leaves ``student``
        (parameters and buffers) untouched: the step is taken on detached copies."""
        forward_fn = default_forward if forward_fn is None else forward_fn
        x_tr, y_tr = train_batch
        x_val, y_val = val_batch
        named = list(student.named_parameters())
        trainable = [n for n, p in named if p.requires_grad]
        params = {n: p.detach().requires_grad_(p.requires_grad) for n, p in named}
        buffers = {n: b.detach().clone() for n, b in student.named_buffers()}  # BN stats stay put

        W, b = self.teacher(self._features(features))
        cos, scale = forward_fn(student, {**params, **buffers}, x_tr)
        train_loss = l2t_dlf(cos, y_tr, scale, W, b, reduction="mean")
        grads = torch.autograd.grad(train_loss, [params[n] for n in trainable], create_graph=True,
                                    allow_unused=True)
        new_params = dict(params)
        for n, g in zip(trainable, grads):
            if g is not None:
                new_params[n] = params[n] - student_lr * g
        cos_v, scale_v = forward_fn(student, {**new_params, **buffers}, x_val)
        logits_v = as_scale(scale_v, cos_v) * cos_v
        return validation_measure(logits_v, y_val, self.measure), train_loss

    def teacher_step(self, student: nn.Module, forward_fn: ForwardFn | None, train_batch, val_batch,
                     features: Tensor | None = None, student_lr: float = 0.1) -> dict:
        """One Adam step of the teacher on ``-measure(omega')`` (see :meth:`lookahead_measure`).

        Leaves the gradient of ``-measure(omega')`` w.r.t. the teacher's parameters in their
        ``.grad`` (as it was before clipping and the step). Returns floats: ``val_measure``
        (at ``omega'``, before the teacher's update), ``student_loss`` (``L_phi(omega)`` on the
        training batch), ``teacher_grad_norm``, and the coefficients used: ``b`` and
        ``W_diag_mean``."""
        measure, train_loss = self.lookahead_measure(student, forward_fn, train_batch, val_batch,
                                                     features, student_lr)
        teacher_params = [p for p in self.teacher.parameters() if p.requires_grad]
        grads = torch.autograd.grad(-measure, teacher_params, allow_unused=True)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(teacher_params, grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in teacher_params))
        W_used, b_used = self.coefficients(features, detach=True)
        if self.max_grad_norm is not None:
            saved = [p.grad.clone() for p in teacher_params]
            nn.utils.clip_grad_norm_(teacher_params, self.max_grad_norm)
        self.optimizer.step()
        if self.max_grad_norm is not None:
            for p, g in zip(teacher_params, saved):
                p.grad = g
        diag = {"full": lambda w: w.diagonal(), "diag": lambda w: w, "scalar": lambda w: w}[self.teacher.w_form]
        return {"val_measure": float(measure.detach()), "student_loss": float(train_loss.detach()),
                "teacher_grad_norm": float(grad_norm), "b": float(b_used),
                "W_diag_mean": float(diag(W_used).mean())}


# --------------------------------------------------------------------------------------------
# The module form
# --------------------------------------------------------------------------------------------
@register(
    "l2t_dlf",
    fn=l2t_dlf,
    description="L2T-DLF-style dynamic loss -sigmoid(y^T W log p + b); a teacher MLP outputs W, b from "
                "training-progress features and is trained by one-step look-ahead differentiation of a "
                "smoothed validation measure (driver: baselines.l2t_dlf.L2TDLF).",
    reference="Wu et al. (Wu, Tian, Xia, Fan, Qin, Lai, Liu). Learning to Teach with Dynamic Loss "
              "Functions. NeurIPS 2018, arXiv:1810.12081",
)
class L2TDLFLoss(HeadLoss):
    """The L2T-DLF loss with its own class weights; its coefficients ``W`` and ``b`` are buffers
    (initialized at ``W = I`` in the chosen ``w_form`` and ``b``), set by
    :meth:`set_coefficients` or :meth:`L2TDLF.sync`. Default head: ``normalize="none"`` (plain
    bias-free linear logits, as in the original's image classifiers)."""

    default_normalize = "none"

    def __init__(self, in_features: int, num_classes: int, normalize: str | None = None, s: float = 30.0,
                 reduction: str = "mean", w_form: str = "full", b: float = 0.0):
        super().__init__(in_features, num_classes, normalize, s, reduction)
        if w_form not in W_FORMS:
            raise ValueError(f"w_form must be one of {W_FORMS}, got {w_form!r}")
        self.w_form = w_form
        W = {"full": torch.eye(num_classes), "diag": torch.ones(num_classes), "scalar": torch.ones(())}[w_form]
        self.register_buffer("W", W)
        self.register_buffer("b", torch.tensor(float(b)))

    def set_coefficients(self, W, b) -> None:
        """Copy ``W`` (shape of this loss's ``w_form``) and ``b`` into the buffers."""
        W, b = torch.as_tensor(W), torch.as_tensor(b)
        if W.shape != self.W.shape:
            raise ValueError(f"W must have shape {tuple(self.W.shape)} (w_form={self.w_form!r}), got {tuple(W.shape)}")
        if b.numel() != 1:
            raise ValueError(f"b must be a single number, got shape {tuple(b.shape)}")
        with torch.no_grad():
            self.W.copy_(W)
            self.b.copy_(b.reshape(()))

    def loss_from_cosine(self, cos: Tensor, target: Tensor, scale: Tensor) -> Tensor:
        return l2t_dlf(cos, target, scale, self.W, self.b, self.reduction)
