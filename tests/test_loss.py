"""The unified loss (Eq. 4, 10, 16): identity == CE, stability, gradients, Eq. 14, tau <= 0."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

import lfs
from lfs.loss import log_tau


def random_case(N, C, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    cos = (torch.rand(N, C, generator=g, dtype=dtype) * 2 - 1)
    target = torch.randint(0, C, (N,), generator=g)
    return cos, target


@pytest.mark.parametrize("N,C,s", [(128, 10, 1.0), (128, 10, 30.0), (256, 10575, 1.0), (256, 10575, 64.0)])
def test_identity_theta_equals_cross_entropy_loss_and_gradient(N, C, s):
    cos, target = random_case(N, C)
    cos1 = cos.clone().requires_grad_(True)
    cos2 = cos.clone().requires_grad_(True)
    ours = lfs.am_lfs_loss(cos1, target, lfs.identity_theta(6), scale=s)
    ref = F.cross_entropy(s * cos2, target)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cos1.grad, cos2.grad, rtol=1e-6, atol=1e-6)


def test_identity_equals_ce_with_unnormalized_scale_tensor():
    cos, target = random_case(64, 10, seed=3)
    g = torch.Generator().manual_seed(4)
    scale = torch.rand(64, 10, generator=g) * 20  # ||W_j|| ||x_i||
    per = lfs.am_lfs_loss(cos, target, lfs.identity_theta(6), scale=scale, reduction="none")
    torch.testing.assert_close(per, F.cross_entropy(scale * cos, target, reduction="none"), rtol=1e-6, atol=1e-6)


def test_stable_where_p_underflows_float32():
    """With s = 64 and 10,575 classes the target probability underflows float32 (log p < -104):
    a naive -log(clamp(tau(p))) saturates; ours still equals cross entropy exactly."""
    cos, target = random_case(256, 10575, seed=5)
    cos = cos.clone()
    cos[torch.arange(256), target] = -1.0  # hard targets
    s = 64.0
    ce = F.cross_entropy(s * cos, target, reduction="none")
    assert (ce > 104).all(), "the case must reach p < float32's smallest normal"
    naive = -torch.log(torch.clamp(torch.exp(-ce), min=1e-30))
    assert (naive - ce).abs().max() > 1.0  # the naive form is wrong here
    ours = lfs.am_lfs_loss(cos, target, lfs.identity_theta(6), scale=s, reduction="none")
    torch.testing.assert_close(ours, ce, rtol=1e-6, atol=1e-6)


def closed_form(cos, target, theta, s):
    """Eq. 10 and 16 written out in float64 with explicit sums over classes."""
    M = theta.numel() // 4
    a_t, b_t, a_tau, b_tau = theta[:M], theta[M:2 * M], theta[2 * M:3 * M], theta[3 * M:]
    out = []
    for i in range(cos.shape[0]):
        y = int(target[i])
        x = float(cos[i, y])
        k = min(int((x + 1) / 2 * M), M - 1)
        t = float(a_t[k]) * x + float(b_t[k])
        others = sum(math.exp(s * float(cos[i, j])) for j in range(cos.shape[1]) if j != y)
        p = math.exp(s * t) / (math.exp(s * t) + others)
        kp = min(int(p * M), M - 1)
        out.append(-math.log(float(a_tau[kp]) * p + float(b_tau[kp])))
    return torch.tensor(out, dtype=torch.float64)


def test_random_theta_matches_closed_form():
    cos, target = random_case(40, 7, seed=6, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    theta = lfs.identity_theta(6, dtype=torch.float64) + 0.3 * torch.randn(24, generator=g, dtype=torch.float64)
    theta[18:] = theta[18:].abs() + 0.01  # tau biases > 0 and ...
    theta[12:18] = theta[12:18].abs() + 0.1  # ... slopes > 0: tau > 0 everywhere
    ours = lfs.am_lfs_loss(cos, target, theta, scale=3.0, reduction="none")
    torch.testing.assert_close(ours, closed_form(cos, target, theta, 3.0), rtol=1e-10, atol=1e-10)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(8)
    cos = (torch.rand(6, 5, generator=g, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    theta = lfs.identity_theta(6, dtype=torch.float64) + 0.2 * torch.randn(24, generator=g, dtype=torch.float64)
    theta[18:] = theta[18:].abs() + 0.05
    theta[12:18] = theta[12:18].abs() + 0.1
    # keep target cosines and probabilities off the interval end points (t, tau are discontinuous there)
    assert torch.autograd.gradcheck(lambda c: lfs.am_lfs_loss(c, target, theta, scale=2.0, reduction="none"), (cos,))
    scale = torch.rand(6, 5, generator=g, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda c: lfs.am_lfs_loss(c, target, theta, scale=scale), (cos,))


def test_eq14_gradient_ratio_equals_t_prime():
    """Normalized head, tau = identity: (|dL/df_y| / |dL/df_j|) under t, divided by the same
    ratio under the identity, equals t'(f_y) (Eq. 8-14)."""
    g = torch.Generator().manual_seed(9)
    N, C = 32, 6
    f, target = random_case(N, C, seed=10, dtype=torch.float64)
    theta = lfs.identity_theta(6, dtype=torch.float64)
    theta[:6] = 0.5 + torch.rand(6, generator=g, dtype=torch.float64) * 2  # slopes a_t
    theta[6:12] = 0.3 * torch.randn(6, generator=g, dtype=torch.float64)  # biases b_t

    def grads(th):
        x = f.clone().requires_grad_(True)
        lfs.am_lfs_loss(x, target, th, scale=1.0, reduction="sum").backward()
        return x.grad

    g_t, g_o = grads(theta), grads(lfs.identity_theta(6, dtype=torch.float64))
    rows = torch.arange(N)
    j = (target + 1) % C  # any non-target class
    r_t = g_t[rows, target].abs() / g_t[rows, j].abs()
    r_o = g_o[rows, target].abs() / g_o[rows, j].abs()
    fy = f[rows, target]
    torch.testing.assert_close(r_t / r_o, lfs.t_derivative(fy, theta), rtol=1e-9, atol=1e-12)


def test_log_tau_against_float64_direct_evaluation():
    g = torch.Generator().manual_seed(11)
    p = torch.rand(2000, generator=g, dtype=torch.float64) * 0.999 + 1e-4
    theta = torch.randn(24, generator=g, dtype=torch.float64)
    got = log_tau(p.log(), theta, invalid_tau="nan")
    tau = lfs.tau_transform(p, theta)
    valid = tau > 0
    assert valid.any() and (~valid).any()
    torch.testing.assert_close(got[valid], tau[valid].log(), rtol=1e-9, atol=1e-9)
    assert torch.isnan(got[~valid]).all()


def test_invalid_tau_ignore_gives_constant_loss_and_zero_gradient():
    cos, target = random_case(64, 10, seed=12, dtype=torch.float64)
    theta = lfs.identity_theta(6, dtype=torch.float64)
    theta[18] = -0.05  # b_0^tau < 0: tau(p) <= 0 for p <= 0.05
    x = cos.clone().requires_grad_(True)
    loss = lfs.am_lfs_loss(x, target, theta, scale=5.0, reduction="none", tau_floor=1e-12)
    p = torch.exp(-F.cross_entropy(5.0 * cos, target, reduction="none"))
    dead = p <= 0.05
    assert dead.any() and (~dead).any()
    torch.testing.assert_close(loss[dead], torch.full_like(loss[dead], -math.log(1e-12)))
    tau = torch.where(p < 1 / 6, p - 0.05, p)  # b_0 only acts on the first interval [0, 1/6)
    torch.testing.assert_close(loss[~dead], -torch.log(tau[~dead]))
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[dead] == 0).all() and (x.grad[~dead] != 0).any()
    nan_loss = lfs.am_lfs_loss(cos, target, theta, scale=5.0, reduction="none", invalid_tau="nan")
    assert torch.isnan(nan_loss[dead]).all() and torch.isfinite(nan_loss[~dead]).all()


def test_no_nan_gradient_when_tau_terms_cancel_exactly():
    # a p + b == 0 exactly: tau = 0 (invalid) must give a zero, not NaN, gradient.
    theta = lfs.identity_theta(1, dtype=torch.float64)
    theta[3] = -0.5  # tau(p) = p - 0.5
    logp = torch.tensor([math.log(0.5), math.log(0.7)], dtype=torch.float64, requires_grad=True)
    out = log_tau(logp, theta)
    out.sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert out[1].item() == pytest.approx(math.log(0.2))


def test_vmap_over_thetas_equals_loop():
    cos, target = random_case(16, 5, seed=13)
    g = torch.Generator().manual_seed(14)
    thetas = lfs.identity_theta(6) + 0.3 * torch.randn(4, 24, generator=g)
    batched = vmap(lambda th: lfs.am_lfs_loss(cos, target, th, 4.0))(thetas)
    looped = torch.stack([lfs.am_lfs_loss(cos, target, th, 4.0) for th in thetas])
    torch.testing.assert_close(batched, looped)


def test_reduction_and_options_are_validated():
    cos, target = random_case(4, 3)
    with pytest.raises(ValueError, match="reduction"):
        lfs.am_lfs_loss(cos, target, lfs.identity_theta(6), reduction="avg")
    with pytest.raises(ValueError, match="invalid_tau"):
        lfs.am_lfs_loss(cos, target, lfs.identity_theta(6), invalid_tau="clip")
    per = lfs.am_lfs_loss(cos, target, lfs.identity_theta(6), reduction="none")
    torch.testing.assert_close(lfs.am_lfs_loss(cos, target, lfs.identity_theta(6), reduction="sum"), per.sum())


@pytest.mark.parametrize("normalize", ["both", "weights", "none"])
def test_module_form(normalize):
    torch.manual_seed(0)
    head = lfs.AMLFSLoss(8, 5, M=6, normalize=normalize, s=10.0)
    emb = torch.randn(12, 8)
    y = torch.randint(0, 5, (12,))
    # identity theta: cross entropy on the head's logits
    torch.testing.assert_close(head(emb, y), F.cross_entropy(head.logits(emb), y), rtol=1e-5, atol=1e-6)
    theta = lfs.identity_theta(6) + 0.1
    head.theta = theta.clone()  # plain attribute assignment works (buffer)
    cos, scale = head.classifier(emb)
    torch.testing.assert_close(head(emb, y), lfs.am_lfs_loss(cos, y, theta, scale))
    head.set_theta(lfs.identity_theta(6))
    assert torch.equal(head.theta, lfs.identity_theta(6))
    assert "theta" in head.state_dict()
    with pytest.raises(ValueError, match="theta must have shape"):
        head.set_theta(torch.zeros(10))
    if normalize == "none":  # unnormalized head: cos * scale is the plain linear layer
        torch.testing.assert_close(head.logits(emb), emb @ head.classifier.weight.T, rtol=1e-5, atol=1e-5)


def test_head_rejects_bad_options():
    with pytest.raises(ValueError, match="normalize"):
        lfs.CosineClassifier(4, 3, normalize="x")
    with pytest.raises(ValueError, match="scale s"):
        lfs.CosineClassifier(4, 3, normalize="both", s=0)
