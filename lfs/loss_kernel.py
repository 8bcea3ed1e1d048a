"""The fast AM-LFS loss: a custom autograd Function with the closed-form gradient of Eq. 16.

Speed (measured in ``benchmarks/perf``). :func:`am_lfs_loss` is a custom autograd
Function with the closed-form gradient of Eq. 16 (:class:`_AMLFSLoss`): its full-size work is
cross entropy's (one multiply and a log-softmax forward, one fused log-softmax backward), and the
rest is ~20 small ops on N-vectors: the interval of x in one ``bucketize`` against thresholds that
reproduce :func:`~lfs.search_space.interval_index` exactly, per-interval coefficient tables made
once per theta tensor (so ``tau = a p + b`` is evaluated directly, and as ``log a + log p`` where
b = 0, with no branch: the identity is still exactly cross entropy when p underflows), constants
as cached 0-d tensors, and one coefficient per row for the backward. At (128, 10) per-op
overhead is all there is, so the count of ops is what was cut. Under ``vmap`` it runs once on the stacked copies
(a ``vmap`` rule, no per-op batching). The composition of autograd ops it replaces is kept as
:func:`am_lfs_loss_autograd` (the reference in the tests; also what runs when theta itself
requires a gradient, or where second derivatives are needed).

:func:`lfs.loss.am_lfs_loss` dispatches here; :func:`lfs.loss.am_lfs_loss_autograd` is the
reference the tests hold this kernel against.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.weak import WeakIdKeyDictionary

from .search_space import T_DOMAIN, TAU_DOMAIN, interval_edges, interval_index

_THRESHOLDS: dict = {}
_INT_OF = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _thresholds(M: int, domain: tuple[float, float], dtype: torch.dtype, device) -> Tensor:
    """The M-1 values at which :func:`~lfs.search_space.interval_index` steps up, exactly: the
    smallest x of ``dtype`` whose index is >= i, for i = 1..M-1 (found by bisection over the
    floats of ``dtype``, in their order, with the very function they stand for).

    ``torch.bucketize(x, thresholds, right=True)`` then equals ``interval_index(x, M, domain)``
    for every x of that dtype (a NaN gets an index in range, M-1), in one op instead of four.
    """
    key = (M, domain, dtype, device)
    out = _THRESHOLDS.get(key)
    if out is None:
        lo, hi = domain
        itype = _INT_OF[torch.finfo(dtype).bits // 8]
        imin = torch.iinfo(itype).min

        def to_key(x: float) -> int:  # the float's rank: consecutive floats, consecutive keys
            bits = int(torch.tensor(x, dtype=dtype).view(itype))
            return bits if bits >= 0 else imin - bits - 1

        def from_key(k: int) -> Tensor:
            return torch.tensor(k if k >= 0 else imin - k - 1, dtype=itype).view(dtype)

        def index(k: int) -> int:
            return int(interval_index(from_key(k), M, domain))

        found = []
        for i in range(1, M):
            nominal, width = lo + i * (hi - lo) / M, (hi - lo) / M
            a, b = to_key(nominal - width / 2), to_key(nominal + width / 2)  # index(a) < i <= index(b)
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (a, mid) if index(mid) >= i else (mid, b)
            found.append(from_key(b))
        out = _THRESHOLDS[key] = torch.stack(found).to(device) if found else torch.empty(0, dtype=dtype, device=device)
    return out


def _interval(x: Tensor, M: int, domain: tuple[float, float]) -> Tensor:
    """:func:`~lfs.search_space.interval_index` in one op (see :func:`_thresholds`)."""
    return torch.bucketize(x, _thresholds(M, domain, x.dtype, x.device), right=True)


_CONSTANTS: dict = {}


def _const(value: float, dtype: torch.dtype, device) -> Tensor:
    """``value`` as a cached 0-d tensor (an op with a tensor operand skips the conversion of a
    Python number, ~2 us per op on CPU: most of this loss's ops are that small at (128, 10))."""
    if torch.compiler.is_compiling():  # traced: a constant of the graph, not a cached tensor
        return torch.tensor(value, dtype=dtype, device=device)
    key = (value, dtype, device)
    out = _CONSTANTS.get(key)
    if out is None:
        if len(_CONSTANTS) > 4096:  # e.g. one mean factor per batch size: keep it bounded
            _CONSTANTS.clear()
        out = _CONSTANTS[key] = torch.tensor(value, dtype=dtype, device=device)
    return out


_TABLES = WeakIdKeyDictionary()  # theta -> {(t dtype, tau dtype, device): (theta._version, tables, tau_positive)}


def _tau_positive(theta: Tensor) -> bool:
    """Whether ``tau = a p + b`` is safely > 0 for every p in [0, 1] (so no example can meet an
    invalid tau and the loss need not mask): per interval, ``b = 0 < a`` (tau = a p), or the line
    is positive at both ends with a margin of 1e-5 (|a| + |b|), far above float32 rounding. A
    theta of the "positive" search space usually is (it may be positive by less than the margin)."""
    M = theta.shape[-1] // 4
    a, b = theta.detach().to("cpu", torch.float64).split(M, -1)[2:]
    edges = interval_edges(M, TAU_DOMAIN).to(torch.float64)
    margin = 1e-5 * (a.abs() + b.abs())
    ok = ((b == 0) & (a > 0)) | ((a * edges[:-1] + b > margin) & (a * edges[1:] + b > margin))
    return bool(ok.all())


def _make_tables(theta: Tensor, dtype: torch.dtype, tau_dtype: torch.dtype, device) -> tuple[Tensor, ...]:
    """Per-interval coefficients, flat (..., M) and contiguous: ``a_t, b_t`` of t in ``dtype`` and,
    in ``tau_dtype``, ``A, B, C`` with which ``tau = a p + b`` is evaluated in the same few ops
    for every interval (see :func:`_forward`)::

        b != 0:  A = a, B = b, C = 0     te = B + A p = tau,  log tau = log te
        b == 0:  A = 0, B = a, C = 1     te = a,              log tau = log te + log p  (= log a p)
    """
    M = theta.shape[-1] // 4
    th = theta.to(device=device, dtype=dtype)  # (a CPU policy sample for a model on a GPU)
    a_t, b_t = (x.contiguous() for x in th.split(M, -1)[:2])
    a, b = (th if tau_dtype == dtype else theta.to(device=device, dtype=tau_dtype)).split(M, -1)[2:]
    zero = b == 0
    return a_t, b_t, a.masked_fill(zero, 0.0), torch.where(zero, a, b), zero.to(tau_dtype)


def _tables(theta: Tensor, dtype: torch.dtype, tau_dtype: torch.dtype, device) -> tuple[tuple[Tensor, ...], bool]:
    """``(tables, tau_positive)``: :func:`_make_tables` and :func:`_tau_positive`, kept per theta
    tensor while it is unchanged (a search trains every minibatch of an epoch with the same theta,
    so the conversion and the tables are made once). Stacked (vmapped) thetas: made per call, and
    ``tau_positive`` is False (the masking then always runs)."""
    if theta.ndim != 1 or torch.compiler.is_compiling():  # vmapped copies (a fresh stacked tensor at
        # every call), or traced by torch.compile (which would break its graph at the cache)
        return _make_tables(theta, dtype, tau_dtype, device), False
    per = _TABLES.get(theta)
    if per is None:
        per = _TABLES[theta] = {}
    hit = per.get((dtype, tau_dtype, device))
    if hit is None or hit[0] != theta._version:
        hit = per[(dtype, tau_dtype, device)] = (theta._version, _make_tables(theta, dtype, tau_dtype, device),
                                                 _tau_positive(theta))
    return hit[1], hit[2]


def _take(idx: Tensor, *tables: Tensor) -> list[Tensor]:
    """``table[..., idx]`` for each flat (..., M) table and idx (..., N, 1) with the same leading
    dims (or none): each x's interval's coefficient."""
    if tables[0].ndim > 1:  # leading (vmapped) dims: offsets into the flattened tables
        lead, M = tables[0].shape[:-1], tables[0].shape[-1]
        offsets = torch.arange(0, tables[0].numel(), M, device=idx.device)
        idx = idx + offsets.view(lead + (1,) * (idx.ndim - len(lead)))
    return [torch.take(t, idx) for t in tables]


def _broadcasts_into(shape, into) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``into`` without growing it."""
    return len(shape) <= len(into) and all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(into)))


def _forward(cos, scale, target, theta, reduction, invalid_tau, tau_floor):
    """The fast forward: ``(loss, ls, g, a_t, t_y)`` with ``ls = log_softmax(z)`` (N x C),
    ``g = d log tau / d log p = a p / tau`` (N x 1, 0 where tau is invalid), ``a_t = t'(cos_y)``
    and ``t_y = t(cos_y)``. About 20 small ops on N-vectors plus cross entropy's full-size ones.

    ``tau = a p + b`` is evaluated directly from ``p = exp(log p)``, in the model's precision,
    with the same intervals as :func:`~lfs.search_space.tau_transform` (see :func:`_thresholds`).
    Where p underflows (float32: log p < -87) a p is below 1e-38, negligible next to any bias
    b != 0 a policy sample has; a zero bias (``tau = a p``, the identity included) takes
    ``log a + log p`` instead, so the identity is exactly cross entropy at any p, as the
    log-space :func:`log_tau` (kept as the reference) is. (A log p of -inf, which only infinite
    logits give, makes the loss NaN, a failed sample, where b = 0 does not hold.)
    """
    M = theta.shape[-1] // 4
    tgt = target.unsqueeze(-1)
    cos_y = cos.gather(-1, tgt)
    # t acts in the model's precision (theta is usually a float64 policy sample); tau in float32 at
    # least (float16 p underflows at 6e-8)
    half = cos.dtype in (torch.float16, torch.bfloat16)
    (a_t_tab, b_t_tab, A_tab, B_tab, C_tab), tau_positive = _tables(theta, cos.dtype,
                                                                    torch.float32 if half else cos.dtype, cos.device)
    a_t, b_t = _take(_interval(cos_y, M, T_DOMAIN), a_t_tab, b_t_tab)
    t_y = torch.addcmul(b_t, a_t, cos_y)
    # the logits scale * cos with the target entry scale_y * t(cos_y), bit for bit as the product
    z = cos.scatter(-1, tgt, t_y)
    if not isinstance(scale, Tensor):
        z.mul_(_const(scale, z.dtype, z.device))
    elif _broadcasts_into(scale.shape, z.shape):
        z.mul_(scale)
    else:  # a scale with more leading dims than cos
        z = z * scale
        tgt = tgt.expand(z.shape[:-1] + (1,))
        t_y, a_t = t_y.expand_as(tgt), a_t.expand_as(tgt)
    ls = torch.log_softmax(z, dim=-1)
    del z
    lp = ls.gather(-1, tgt)  # log p
    p = lp.exp()
    idx = _interval(p, M, TAU_DOMAIN)  # the interval of p in the model's precision, as tau_transform
    if half:
        lp = lp.float()
        p = lp.exp()
    A, B, C = _take(idx, A_tab, B_tab, C_tab)
    te = torch.addcmul(B, A, p)  # tau, or a where tau = a p (b = 0): tau > 0 iff te > 0
    lt = te.log().addcmul_(C, lp)  # log tau
    g = torch.addcdiv(C, A * p, te)  # a p / tau (1 where b = 0)
    if not tau_positive:  # (constants as cached 0-d tensors: a Python number costs a conversion per op)
        zero = _const(0.0, te.dtype, te.device)
        invalid = torch.le(te, zero)  # False for NaN: a NaN log p (a diverged model) stays NaN
        g.masked_fill_(invalid, zero)
        lt.masked_fill_(invalid, _const(math.log(tau_floor) if invalid_tau == "ignore" else math.nan, te.dtype, te.device))
    if reduction == "none":
        loss = lt.squeeze(-1).neg()
    else:
        loss = lt.sum((-2, -1)).mul_(_const(-1.0 / lt.shape[-2] if reduction == "mean" else -1.0, te.dtype, te.device))
    if loss.dtype != cos.dtype:
        loss = loss.to(cos.dtype)
    return loss, ls, g, a_t, t_y


def _softmax_grad(ls: Tensor, tgt: Tensor, k: Tensor) -> Tensor:
    """``k * (softmax - onehot(tgt))`` from ``ls = log_softmax(z)``: the backward of log-softmax
    applied to ``-k`` at the target (exp and multiply fused in one pass; a plain ``ls.exp()`` is up
    to 7x slower when many probabilities are float32 denormals, as with s = 64 and 10k classes)."""
    grad_ls = torch.zeros_like(ls).scatter_(-1, tgt, k.to(ls.dtype).neg_().expand(tgt.shape))
    return torch._log_softmax_backward_data(grad_ls, ls, -1, ls.dtype)


def _backward(grad_loss, ls, g, a_t, t_y, target, scale, cos, reduction, cos_shape, need_cos, need_scale):
    """The closed-form gradient (see :class:`_AMLFSLoss`): ``(grad_cos, grad_scale)``."""
    if reduction == "none":
        go = grad_loss.unsqueeze(-1)
    else:
        go = grad_loss.unsqueeze(-1).unsqueeze(-1)
        if reduction == "mean":
            go = go / ls.shape[-2]
    c = g * go  # (..., N, 1): dL/d(-log p) times d(-log tau)/d(-log p)
    tgt = target.unsqueeze(-1).expand(ls.shape[:-1] + (1,))
    grad_cos = grad_scale = None
    if not isinstance(scale, Tensor):
        k = c * scale
    elif not need_scale and (scale.ndim == 0 or scale.shape[-1] == 1):
        k = c * scale  # one scale per row (or one for all): folded into the softmax gradient
    else:
        k = None
    # k (softmax(z) - onehot(y)), cross entropy's gradient, from the saved log-softmax in one
    # fused pass (as F.cross_entropy's backward does)
    gz = _softmax_grad(ls, tgt, c if k is None else k)
    if k is not None:
        if need_cos:  # the target logit is scale_y t(cos_y): times t'(cos_y)
            grad_cos = gz.scatter_reduce_(-1, tgt, a_t, reduce="prod")
    else:  # gz = dL/dz
        gz_y = gz.gather(-1, tgt)
        if need_scale:
            grad_scale = (gz * cos).scatter_(-1, tgt, gz_y * t_y).sum_to_size(scale.shape)
        if need_cos:
            scale_y = scale.expand(ls.shape).gather(-1, tgt)
            grad_cos = gz.mul_(scale).scatter_(-1, tgt, gz_y * scale_y * a_t)
    if grad_cos is not None and grad_cos.shape != cos_shape:
        grad_cos = grad_cos.sum_to_size(cos_shape)
    return grad_cos, grad_scale


class _AMLFSLoss(torch.autograd.Function):
    """The AM-LFS loss with a hand-written backward (the closed-form gradient of Eq. 16).

    Forward: ``z`` = the logits ``scale * cos`` with the target entry replaced by
    ``scale_y t(cos_y)``, ``ls = log_softmax(z)``, ``log p = ls_y``, ``loss = -log tau(p)``.
    Backward, with ``g = d log tau / d log p = a p / tau`` and ``c = dL/dloss * g``:
    ``dL/dz = c (softmax(z) - onehot(y))``; ``dL/dcos_j = scale_j dL/dz_j`` off the target and
    ``scale_y t'(cos_y) dL/dz_y`` on it; ``dL/dscale`` = ``dL/dz * cos`` (``t(cos_y)`` on the target).
    The full-size work is cross entropy's: one multiply and a log-softmax forward, one fused
    log-softmax backward. Inputs may have leading (batch) dims: cos (..., N, C), target (..., N),
    theta (..., 4M), scale a number or a tensor broadcastable to cos.

    This class (forward with ``ctx``) is the cheap one to call; :class:`_AMLFSLossT` is the same
    function for torch.func transforms (vmap, grad).
    """

    @staticmethod
    def forward(ctx, cos, scale, target, theta, reduction, invalid_tau, tau_floor):
        loss, ls, g, a_t, t_y = _forward(cos, scale, target, theta, reduction, invalid_tau, tau_floor)
        ctx.reduction, ctx.cos_shape = reduction, cos.shape
        scalar = not isinstance(scale, Tensor)
        if not ctx.needs_input_grad[1] and (scalar or scale.ndim == 0 or scale.shape[-1] == 1):
            # the common case: everything but dL/dloss folded into one coefficient per row,
            # -dL/d(log p) = -g * scale (/ N): the backward is then cross entropy's
            sign = -1.0 / ls.shape[-2] if reduction == "mean" else -1.0
            k = g.mul_(_const(sign * scale, g.dtype, g.device)) if scalar else g.mul_(scale).mul_(_const(sign, g.dtype, g.device))
            ctx.fast = True
            ctx.save_for_backward(ls, k.to(ls.dtype), a_t, target)
        elif isinstance(scale, Tensor):
            ctx.fast, ctx.scale = False, None
            ctx.save_for_backward(ls, g, a_t, t_y, target, scale, cos if ctx.needs_input_grad[1] else None)
        else:
            ctx.fast, ctx.scale = False, scale
            ctx.save_for_backward(ls, g, a_t, t_y, target)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():  # (what once_differentiable does, without its overhead)
            raise RuntimeError("am_lfs_loss: second derivatives (create_graph=True) are not supported; "
                               "use lfs.loss.am_lfs_loss_autograd")
        saved = ctx.saved_tensors
        if ctx.fast:
            ls, k, a_t, target = saved
            tgt = target.unsqueeze(-1)
            if tgt.shape[:-1] != ls.shape[:-1]:
                tgt = tgt.expand(ls.shape[:-1] + (1,))
            src = k * (grad_loss.unsqueeze(-1) if ctx.reduction == "none" else grad_loss)
            grad_ls = torch.zeros_like(ls).scatter_(-1, tgt, src)
            gz = torch._log_softmax_backward_data(grad_ls, ls, -1, ls.dtype)  # k (softmax - onehot)
            grad_cos = gz.scatter_reduce_(-1, tgt, a_t, reduce="prod")  # the target logit went through t
            if grad_cos.shape != ctx.cos_shape:
                grad_cos = grad_cos.sum_to_size(ctx.cos_shape)
            return grad_cos, None, None, None, None, None, None
        if ctx.scale is None:
            ls, g, a_t, t_y, target, scale, cos = saved
        else:
            (ls, g, a_t, t_y, target), scale, cos = saved, ctx.scale, None
        grad_cos, grad_scale = _backward(grad_loss, ls, g, a_t, t_y, target, scale, cos, ctx.reduction,
                                         ctx.cos_shape, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_cos, grad_scale, None, None, None, None, None


class _AMLFSLossT(torch.autograd.Function):
    """:class:`_AMLFSLoss` for torch.func transforms (``setup_context`` and a ``vmap`` rule).

    The vmap rule moves the vmapped dim of every input to the front and calls the function once
    on the stacked inputs (no per-op batching rules): B vmapped model copies cost one call.
    """

    @staticmethod
    def forward(cos, scale, target, theta, reduction, invalid_tau, tau_floor):
        return _forward(cos, scale, target, theta, reduction, invalid_tau, tau_floor)

    @staticmethod
    def setup_context(ctx, inputs, output):
        cos, scale, target, theta, reduction, _, _ = inputs
        _, ls, g, a_t, t_y = output
        ctx.mark_non_differentiable(ls, g, a_t, t_y)
        ctx.reduction, ctx.cos_shape = reduction, cos.shape
        ctx.scale = None if isinstance(scale, Tensor) else scale
        ctx.save_for_backward(ls, g, a_t, t_y, target, scale if ctx.scale is None else None,
                              cos if ctx.scale is None and ctx.needs_input_grad[1] else None)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, *_):
        ls, g, a_t, t_y, target, scale, cos = ctx.saved_tensors
        if ctx.scale is not None:
            scale = ctx.scale
        grad_cos, grad_scale = _backward(grad_loss, ls, g, a_t, t_y, target, scale, cos, ctx.reduction,
                                         ctx.cos_shape, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_cos, grad_scale, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, cos, scale, target, theta, reduction, invalid_tau, tau_floor):
        B = info.batch_size

        def front(x, d):
            return x.expand(B, *x.shape) if d is None else x.movedim(d, 0)

        cos_d, scale_d, target_d, theta_d = in_dims[:4]
        if isinstance(scale, Tensor):
            per_example = scale.ndim - (scale_d is not None)
            scale = scale.unsqueeze(0) if scale_d is None else scale.movedim(scale_d, 0)
            want = cos.ndim - (cos_d is not None)  # cos's per-example ndim
            scale = scale.reshape(scale.shape[:1] + (1,) * (want - per_example) + scale.shape[1:])
        args = (front(cos, cos_d), scale, front(target, target_d), front(theta, theta_d),
                reduction, invalid_tau, tau_floor)
        # all outputs are real: a grad transform inside this vmap saves them for its backward
        return _AMLFSLossT.apply(*args), (0,) * 5
