"""Tests of the L2T-DLF-style baseline (baselines/l2t_dlf.py).

Expected values are computed here independently of the implementation: the loss and the
one-step look-ahead of a linear student are written out in numpy (analytic gradient of the loss),
and the teacher's gradient is compared with central finite differences of that numpy function.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.l2t_dlf import (
    FEATURE_NAMES,
    L2TDLF,
    L2TDLFLoss,
    L2TTeacher,
    l2t_dlf,
)
from lfs.heads import CosineClassifier



# ---------------------------------------------------------------------------------------------
# numpy references
# ---------------------------------------------------------------------------------------------
def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


def np_full_W(W, C):
    """W in any accepted form (None, number, C-vector, C x C) as a C x C numpy matrix."""
    if W is None:
        return np.eye(C)
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 0:
        return float(W) * np.eye(C)
    if W.ndim == 1:
        return np.diag(W)
    return W


def np_l2t_loss(cos, target, scale, W, b):
    """Per-example -sigmoid(sum_j W[y, j] log p_j + b), written with explicit loops."""
    cos = np.asarray(cos, dtype=np.float64)
    N, C = cos.shape
    logits = np.asarray(scale, dtype=np.float64) * cos
    log_p = np_log_softmax(np.broadcast_to(logits, (N, C)).copy())
    Wf = np_full_W(W, C)
    out = np.empty(N)
    for i in range(N):
        y = int(target[i])
        u = sum(Wf[y, j] * log_p[i, j] for j in range(C)) + float(b)
        out[i] = -np_sigmoid(u)
    return out


def np_teacher(theta, feats, C, b0=0.0):
    """The documented teacher: W = I + dW, b = b0 + db, (dW, db) = out(tanh(hidden(feats)))."""
    h = np.tanh(theta["hidden.weight"] @ feats + theta["hidden.bias"])
    delta = theta["out.weight"] @ h + theta["out.bias"]
    return np.eye(C) + delta[:-1].reshape(C, C), b0 + delta[-1]


def np_lookahead(theta, feats, A, x_tr, y_tr, x_val, y_val, lr, measure):
    """Validation measure of a bias-free linear student (logits = x A^T) after one SGD step on
    the L2T-DLF loss, with the gradient written analytically."""
    C = A.shape[0]
    W, b = np_teacher(theta, feats, C)
    N = len(y_tr)
    log_p = np_log_softmax(x_tr @ A.T)
    p = np.exp(log_p)
    Wy = W[y_tr]  # N x C, rows W[y_i]
    u = (Wy * log_p).sum(1) + b
    s = np_sigmoid(u)
    # dL/dz_ik = -(1/N) s_i (1 - s_i) (W[y_i, k] - p_ik sum_j W[y_i, j])
    G = -(s * (1 - s))[:, None] * (Wy - p * Wy.sum(1, keepdims=True)) / N
    A1 = A - lr * (G.T @ x_tr)
    lp_val = np_log_softmax(x_val @ A1.T)
    rows = np.arange(len(y_val))
    if measure == "soft_accuracy":
        return np.exp(lp_val[rows, y_val]).mean()
    return lp_val[rows, y_val].mean()  # -CE


def teacher_theta(teacher):
    return {n: p.detach().double().numpy().copy() for n, p in teacher.named_parameters()}


def blobs(n_per_class, C=3, d=2, spread=0.4, seed=0):
    """Linearly separable Gaussian blobs around well-separated means (bias-free separable: the
    means lie on a circle around the origin)."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(C, dtype=torch.float64) * (2 * math.pi / C)
    means = torch.zeros(C, d, dtype=torch.float64)
    means[:, 0], means[:, 1] = 3 * torch.cos(angles), 3 * torch.sin(angles)
    y = torch.arange(C).repeat_interleave(n_per_class)
    x = means[y] + spread * torch.randn(len(y), d, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


# ---------------------------------------------------------------------------------------------
# the functional loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w_kind", ["none", "scalar", "diag", "full"])
@pytest.mark.parametrize("scale_kind", ["number", "row", "matrix"])
def test_functional_matches_closed_form(w_kind, scale_kind):
    g = torch.Generator().manual_seed(1)
    N, C = 7, 5
    cos = torch.rand(N, C, generator=g, dtype=torch.float64) * 2 - 1
    target = torch.randint(0, C, (N,), generator=g)
    scale = {"number": 4.0,
             "row": torch.rand(N, 1, generator=g, dtype=torch.float64) * 5 + 0.5,
             "matrix": torch.rand(N, C, generator=g, dtype=torch.float64) * 5 + 0.5}[scale_kind]
    W = {"none": None,
         "scalar": torch.tensor(1.7, dtype=torch.float64),
         "diag": torch.rand(C, generator=g, dtype=torch.float64) * 2,
         "full": torch.randn(C, C, generator=g, dtype=torch.float64)}[w_kind]
    b = -0.3
    np_scale = scale if isinstance(scale, float) else scale.numpy()
    expected = np_l2t_loss(cos.numpy(), target.numpy(), np_scale, None if W is None else W.numpy(), b)
    got = l2t_dlf(cos, target, scale, W, b, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert l2t_dlf(cos, target, scale, W, b).item() == pytest.approx(expected.mean(), rel=1e-12)
    assert l2t_dlf(cos, target, scale, W, b, reduction="sum").item() == pytest.approx(expected.sum(), rel=1e-12)


def test_float32_and_tensor_b():
    torch.manual_seed(0)
    cos, target = torch.rand(6, 4) * 2 - 1, torch.randint(0, 4, (6,))
    got = l2t_dlf(cos, target, 3.0, torch.eye(4), torch.tensor(0.5), reduction="none")
    assert got.dtype == torch.float32
    expected = np_l2t_loss(cos.double().numpy(), target.numpy(), 3.0, np.eye(4), 0.5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_bad_arguments():
    cos, target = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError):
        l2t_dlf(cos, target, 1.0, torch.zeros(3, 3, 3))
    with pytest.raises(ValueError):
        l2t_dlf(cos, target, reduction="avg")
    with pytest.raises(ValueError):
        L2TTeacher(3, w_form="low_rank")
    with pytest.raises(ValueError):
        L2TDLF(3, measure="accuracy")


def test_default_is_increasing_function_of_cross_entropy():
    """W = I, b = 0: L = -p_y / (1 + p_y) = -1 / (1 + exp(CE)), and its gradient is the CE
    gradient re-weighted per example by p_y / (1 + p_y)^2."""
    g = torch.Generator().manual_seed(2)
    N, C, s = 9, 6, 5.0
    cos = (torch.rand(N, C, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    target = torch.randint(0, C, (N,), generator=g)

    loss = l2t_dlf(cos, target, s, reduction="none")
    ce = F.cross_entropy(s * cos, target, reduction="none")
    p_y = torch.softmax(s * cos, -1)[torch.arange(N), target]
    torch.testing.assert_close(loss, -1.0 / (1.0 + torch.exp(ce)), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(loss, -p_y / (1 + p_y), rtol=1e-12, atol=1e-14)
    # W=None is the identity, and b=0 the default
    torch.testing.assert_close(loss, l2t_dlf(cos, target, s, torch.eye(C, dtype=torch.float64), 0.0,
                                             reduction="none"))
    # gradient: w_i * dCE_i/dcos, examples are independent so sum-gradients are per-row gradients
    (g_loss,) = torch.autograd.grad(loss.sum(), cos)
    (g_ce,) = torch.autograd.grad(ce.sum(), cos)
    w = (p_y / (1 + p_y) ** 2).detach()
    torch.testing.assert_close(g_loss, w[:, None] * g_ce, rtol=1e-10, atol=1e-14)
    assert (w <= 0.25 + 1e-15).all()
    # monotone in CE: sorting by CE sorts the loss the same way
    order_ce, order_loss = torch.argsort(ce.detach()), torch.argsort(loss.detach())
    assert torch.equal(order_ce, order_loss)


def test_gradcheck_wrt_cos_W_b():
    g = torch.Generator().manual_seed(3)
    N, C = 4, 3
    cos = (torch.rand(N, C, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    target = torch.randint(0, C, (N,), generator=g)
    scale = torch.rand(N, 1, generator=g, dtype=torch.float64) + 1.0
    W = torch.randn(C, C, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: l2t_dlf(c, target, scale, W.detach(), 0.1), (cos,))
    assert torch.autograd.gradcheck(lambda c: l2t_dlf(c, target, 2.0), (cos,))
    assert torch.autograd.gradcheck(lambda c, w, bb: l2t_dlf(c, target, scale, w, bb, reduction="none"),
                                    (cos, W, b))


def test_vmap_over_coefficients():
    g = torch.Generator().manual_seed(4)
    B, N, C = 3, 5, 4
    cos = torch.rand(N, C, generator=g, dtype=torch.float64) * 2 - 1
    target = torch.randint(0, C, (N,), generator=g)
    Ws = torch.randn(B, C, C, generator=g, dtype=torch.float64)
    bs = torch.randn(B, generator=g, dtype=torch.float64)
    out = torch.func.vmap(lambda W, b: l2t_dlf(cos, target, 2.0, W, b))(Ws, bs)
    expected = [np_l2t_loss(cos.numpy(), target.numpy(), 2.0, Ws[k].numpy(), bs[k].item()).mean() for k in range(B)]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    # vmapped over the data too (one batch per model copy)
    cos_b = torch.rand(B, N, C, generator=g, dtype=torch.float64)
    out2 = torch.func.vmap(lambda c, W: l2t_dlf(c, target, 2.0, W, 0.0))(cos_b, Ws)
    expected2 = [np_l2t_loss(cos_b[k].numpy(), target.numpy(), 2.0, Ws[k].numpy(), 0.0).mean() for k in range(B)]
    np.testing.assert_allclose(out2.numpy(), expected2, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# the teacher and the driver's student loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w_form,shape", [("full", (4, 4)), ("diag", (4,)), ("scalar", ())])
def test_teacher_starts_at_default_loss(w_form, shape):
    torch.manual_seed(5)
    teacher = L2TTeacher(4, w_form=w_form, b_init=0.25)
    for _ in range(3):
        W, b = teacher(torch.randn(len(FEATURE_NAMES)) * 3)
        assert W.shape == shape
        expected_W = np.eye(4) if w_form == "full" else np.ones(shape)
        np.testing.assert_array_equal(W.detach().numpy(), expected_W)
        assert b.item() == 0.25
    # a fresh driver's student loss is the default loss -p_y / (1 + p_y)
    drv = L2TDLF(4, w_form=w_form)
    cos, target = torch.rand(8, 4) * 2 - 1, torch.randint(0, 4, (8,))
    p_y = torch.softmax(3.0 * cos.double(), -1)[torch.arange(8), target].numpy()
    assert drv.student_loss(cos, target, 3.0).item() == pytest.approx((-p_y / (1 + p_y)).mean(), rel=1e-5)


def test_student_loss_detaches_teacher():
    torch.manual_seed(6)
    drv = L2TDLF(3)
    for p in drv.teacher.parameters():  # non-trivial teacher
        nn.init.normal_(p, std=0.3)
    cos = (torch.rand(5, 3) * 2 - 1).requires_grad_(True)
    target = torch.randint(0, 3, (5,))
    loss = drv.student_loss(cos, target, 2.0)
    W, b = drv.coefficients()
    expected = np_l2t_loss(cos.detach().double().numpy(), target.numpy(), 2.0, W.double().numpy(), b.item()).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert cos.grad is not None
    assert all(p.grad is None for p in drv.teacher.parameters())


def test_update_state_and_features():
    drv = L2TDLF(10, ema=0.5)
    f0 = drv.features()
    np.testing.assert_allclose(f0.numpy(), [0.0, 1.0, 0.9, 0.9], rtol=1e-6)
    drv.update_state(progress=0.1, train_loss=math.log(10) / 2, train_error=0.4)
    drv.update_state(train_loss=0.0, train_error=0.2, val_error=0.3)
    # first value replaces the chance-level start, then EMA with momentum 0.5
    np.testing.assert_allclose(drv.features().numpy(), [0.1, 0.25, 0.3, 0.3], rtol=1e-6)
    sd = drv.state_dict()
    drv2 = L2TDLF(10, ema=0.5)
    drv2.load_state_dict(sd)
    torch.testing.assert_close(drv2.features(), drv.features())


# ---------------------------------------------------------------------------------------------
# teacher_step
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("measure", ["soft_accuracy", "neg_ce"])
def test_teacher_gradient_matches_finite_differences(measure):
    """d measure(omega') / d theta_teacher from teacher_step == central differences of the numpy
    look-ahead, on a tiny bias-free linear student in float64."""
    torch.manual_seed(7)
    C, d, hidden, lr = 3, 2, 3, 0.7
    teacher = L2TTeacher(C, hidden=hidden).double()
    for p in teacher.parameters():  # away from the zero-initialized output layer
        nn.init.normal_(p, std=0.4)
    drv = L2TDLF(C, teacher=teacher, lr=1e-3, measure=measure)
    student = nn.Linear(d, C, bias=False).double()
    x_tr, y_tr = torch.randn(6, d, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    x_val, y_val = torch.randn(5, d, dtype=torch.float64), torch.tensor([2, 1, 0, 0, 1])
    feats = torch.tensor([0.3, 0.8, 0.5, 0.6], dtype=torch.float64)

    A = student.weight.detach().numpy().copy()
    theta0 = teacher_theta(teacher)
    args = (feats.numpy(), A, x_tr.numpy(), y_tr.numpy(), x_val.numpy(), y_val.numpy(), lr, measure)
    f0 = np_lookahead(theta0, *args)

    eps = 1e-6
    fd = {}
    for name, value in theta0.items():
        grad = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus = {k: v.copy() for k, v in theta0.items()}
            minus = {k: v.copy() for k, v in theta0.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            grad[idx] = (np_lookahead(plus, *args) - np_lookahead(minus, *args)) / (2 * eps)
        fd[name] = grad

    info = drv.teacher_step(student, None, (x_tr, y_tr), (x_val, y_val), feats, student_lr=lr)
    assert info["val_measure"] == pytest.approx(f0, rel=1e-10)
    for name, p in teacher.named_parameters():
        # teacher_step minimizes -measure and leaves that gradient in .grad
        np.testing.assert_allclose(-p.grad.numpy(), fd[name], rtol=1e-5, atol=1e-9, err_msg=name)
    assert sum(np.abs(v).sum() for v in fd.values()) > 1e-3  # the check is not vacuous


def test_teacher_step_leaves_student_untouched_and_moves_teacher():
    torch.manual_seed(8)
    C = 3

    class Student(nn.Module):  # returns (cos, scale), has BatchNorm buffers
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.Tanh())
            self.head = CosineClassifier(8, C, normalize="both", s=8.0)

        def forward(self, x):
            return self.head(self.body(x))

    student = Student().train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    drv = L2TDLF(C, lr=1e-2)
    t_before = [p.detach().clone() for p in drv.teacher.parameters()]
    x, y = blobs(8, C=C, seed=1)
    x, y = x.float(), y
    for _ in range(2):
        info = drv.teacher_step(student, None, (x[:12], y[:12]), (x[12:], y[12:]), student_lr=0.5)
    assert set(info) >= {"val_measure", "student_loss", "teacher_grad_norm", "b", "W_diag_mean"}
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), k  # parameters and BN running stats unchanged
    assert all(p.grad is None for p in student.parameters())
    changed = [not torch.equal(a, p.detach()) for a, p in zip(t_before, drv.teacher.parameters())]
    assert all(changed)


def test_custom_forward_fn():
    """forward_fn(student, params, x) -> (cos, scale) with the student's parameter names."""
    torch.manual_seed(9)
    C = 3
    student = CosineClassifier(2, C, normalize="none")
    calls = []

    def forward_fn(module, params, x):
        calls.append(sorted(params))
        return torch.func.functional_call(module, params, (x,))

    drv = L2TDLF(C)
    x, y = blobs(5, C=C, seed=2)
    info = drv.teacher_step(student, forward_fn, (x.float(), y), (x.float(), y), student_lr=0.1)
    assert calls and calls[0] == ["weight"] and len(calls) == 2
    assert math.isfinite(info["val_measure"]) and info["teacher_grad_norm"] > 0


def test_teacher_steps_increase_lookahead_measure():
    """On a separable toy problem, with the student and batches fixed, Adam steps of the teacher
    increase the look-ahead validation measure (checked with the numpy look-ahead)."""
    torch.manual_seed(10)
    C = 3
    x, y = blobs(10, C=C, seed=3)
    x_tr, y_tr, x_val, y_val = x[:15], y[:15], x[15:], y[15:]
    student = nn.Linear(2, C, bias=False).double()
    drv = L2TDLF(C, teacher=L2TTeacher(C).double(), lr=2e-2)
    feats = torch.tensor([0.0, 1.0, 0.6, 0.6], dtype=torch.float64)
    args = (feats.numpy(), student.weight.detach().numpy(), x_tr.numpy(), y_tr.numpy(),
            x_val.numpy(), y_val.numpy(), 0.5, "soft_accuracy")
    start = np_lookahead(teacher_theta(drv.teacher), *args)
    history = [drv.teacher_step(student, None, (x_tr, y_tr), (x_val, y_val), feats, 0.5)["val_measure"]
               for _ in range(15)]
    end = np_lookahead(teacher_theta(drv.teacher), *args)
    assert history[0] == pytest.approx(start, rel=1e-10)
    assert end > start + 0.01
    assert history[-1] > history[0]


def test_driver_trains_a_separable_student():
    """End to end: student SGD on the teacher's loss, teacher steps on held-out batches."""
    torch.manual_seed(11)
    C, steps, lr = 3, 60, 1.0
    x, y = blobs(40, C=C, seed=4)
    x, x_val, y, y_val = x[:90].float(), x[90:].float(), y[:90], y[90:]
    student = nn.Linear(2, C, bias=False)
    opt = torch.optim.SGD(student.parameters(), lr=lr)
    drv = L2TDLF(C, lr=1e-2)
    for step in range(steps):
        idx = torch.randint(0, len(y), (32,))
        logits = student(x[idx])
        loss = drv.student_loss(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            drv.update_state(progress=step / steps, train_loss=F.cross_entropy(logits, y[idx]).item(),
                             train_error=(logits.argmax(1) != y[idx]).float().mean().item())
        if step % 5 == 0:
            vidx = torch.randint(0, len(y_val), (16,))
            drv.teacher_step(student, None, (x[idx], y[idx]), (x_val[vidx], y_val[vidx]), student_lr=lr)
            with torch.no_grad():
                drv.update_state(val_error=(student(x_val).argmax(1) != y_val).float().mean().item())
    with torch.no_grad():
        acc = (student(x_val).argmax(1) == y_val).float().mean().item()
    assert acc >= 0.95
    assert drv.state["progress"] == pytest.approx((steps - 1) / steps)


# ---------------------------------------------------------------------------------------------
# module form and registry
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [None, "both"])
def test_module_form_matches_functional(normalize):
    torch.manual_seed(12)
    C, d = 4, 6
    loss_mod = L2TDLFLoss(d, C, normalize=normalize, s=10.0)
    assert loss_mod.classifier.normalize == (normalize or "none")
    W, b = torch.randn(C, C), torch.tensor(0.4)
    loss_mod.set_coefficients(W, b)
    emb, labels = torch.randn(5, d), torch.randint(0, C, (5,))
    cos, scale = loss_mod.classifier(emb)
    got = loss_mod(emb, labels)
    torch.testing.assert_close(got, l2t_dlf(cos, labels, scale, W, b))
    expected = np_l2t_loss(cos.detach().double().numpy(), labels.numpy(),
                           torch.as_tensor(scale).detach().double().numpy(), W.double().numpy(), 0.4).mean()
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert loss_mod.classifier.weight.grad is not None
    with pytest.raises(ValueError):
        loss_mod.set_coefficients(torch.ones(C), b)
    # the driver can push its coefficients into the module; fresh teacher -> identity, b = 0
    L2TDLF(C).sync(loss_mod)
    torch.testing.assert_close(loss_mod.W, torch.eye(C))
    assert loss_mod.b.item() == 0.0
    assert "W" in loss_mod.state_dict() and "b" in loss_mod.state_dict()


def test_module_diag_form():
    loss_mod = L2TDLFLoss(3, 5, w_form="diag")
    assert loss_mod.W.shape == (5,)
    emb, labels = torch.randn(4, 3), torch.randint(0, 5, (4,))
    cos, scale = loss_mod.classifier(emb)
    expected = np_l2t_loss(cos.detach().double().numpy(), labels.numpy(), scale.detach().double().numpy(),
                           None, 0.0).mean()
    assert loss_mod(emb, labels).item() == pytest.approx(expected, rel=1e-5)


def test_registry_entry():
    import baselines
    import baselines.l2t_dlf as mod

    entry = baselines.get("l2t_dlf")
    assert entry.name == "l2t_dlf"
    assert entry.fn is mod.l2t_dlf
    assert entry.module is mod.L2TDLFLoss
    assert entry.reference.startswith("Wu et al.")
    assert entry.defaults == {"scale": 1.0, "W": None, "b": 0.0}
    assert "l2t_dlf" in baselines.available()
    cos, target = torch.rand(3, 4) * 2 - 1, torch.tensor([0, 1, 3])
    p_y = torch.softmax(cos.double(), -1)[torch.arange(3), target]
    assert entry.fn(cos, target, **entry.defaults).item() == pytest.approx((-p_y / (1 + p_y)).mean().item(), rel=1e-5)
    loss_mod = baselines.create("l2t_dlf", 6, 4)
    assert isinstance(loss_mod, mod.L2TDLFLoss) and loss_mod.classifier.normalize == "none"
