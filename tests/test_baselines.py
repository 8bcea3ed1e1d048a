"""Tests of the hand-crafted baselines (``baselines/``) against independent closed forms.

Expected values are computed here, in numpy/``math`` (explicit log-sum-exp over all classes,
the textbook target logit, arccos-based psi with an explicit search for k), never with the
code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import baselines
from baselines import (
    ArcFaceLoss,
    CosFaceLoss,
    CrossEntropyLoss,
    CSEAutolossALoss,
    FocalLoss,
    LSoftmaxLoss,
    Poly1Loss,
    SphereFaceLoss,
    arcface,
    cosface,
    cross_entropy,
    cse_autoloss_a,
    focal,
    l_softmax,
    poly1,
    psi,
    sphereface,
    sphereface_lambda,
)
from lfs.heads import HeadLoss

# Every registered loss with a plain functional form (L2T-DLF's needs its teacher's coefficients
# and has its own tests): a new registry entry is tested by every parametrized test below, and
# fails them until it has a closed-form case and its kwargs in the tables.
SIX = [n for n in baselines.available() if n != "l2t_dlf"]
N, C = 7, 5


# --------------------------------------------------------------------------- references


def ref_ce(z: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample ``-log softmax(z)_y`` by an explicit log-sum-exp over all classes."""
    mx = z.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(z - mx).sum(axis=1))
    return lse - z[np.arange(len(target)), target]


def ref_margin(cos, target, scale, target_cos) -> np.ndarray:
    """Per-sample CE of ``scale * cos`` with the target logit ``scale_y * target_cos(cos_y)``
    (``target_cos`` a scalar Python function)."""
    cos = np.asarray(cos, dtype=np.float64)
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), cos.shape)
    z = s * cos
    for i, y in enumerate(target):
        z[i, y] = s[i, y] * target_cos(float(cos[i, y]))
    return ref_ce(z, np.asarray(target))


def ref_poly1(cos, target, scale, epsilon) -> np.ndarray:
    z = np.broadcast_to(np.asarray(scale, dtype=np.float64), np.shape(cos)) * np.asarray(cos, dtype=np.float64)
    ce = ref_ce(z, np.asarray(target))
    return ce + epsilon * (1.0 - np.exp(-ce))


def ref_cse(cos, target, scale, w) -> np.ndarray:
    """-(1 + sin(w)) log p_y from the explicit log-sum-exp; w = p_y = exp(-CE) or 1."""
    z = np.broadcast_to(np.asarray(scale, dtype=np.float64), np.shape(cos)) * np.asarray(cos, dtype=np.float64)
    ce = ref_ce(z, np.asarray(target))
    return (1.0 + np.sin(np.exp(-ce) if w == "p_y" else 1.0)) * ce


def ref_psi(c: float, m: int) -> float:
    """``(-1)^k cos(m theta) - 2k`` with theta = arccos(c) and k found by searching the
    intervals [k pi/m, (k+1) pi/m]."""
    theta = math.acos(max(-1.0, min(1.0, c)))
    for k in range(m):
        if k * math.pi / m <= theta <= (k + 1) * math.pi / m:
            break
    return (-1) ** k * math.cos(m * theta) - 2 * k


def ref_arcface(c: float, m: float, easy_margin: bool = False) -> float:
    """The textbook ArcFace target cosine: cos(theta + m), with insightface's fallbacks."""
    theta = math.acos(max(-1.0, min(1.0, c)))
    if easy_margin:
        return math.cos(theta + m) if c > 0 else c
    return math.cos(theta + m) if theta + m < math.pi else c - m * math.sin(m)


def ref_focal(cos, target, scale, gamma, alpha=None) -> np.ndarray:
    z = np.broadcast_to(np.asarray(scale, dtype=np.float64), cos.shape) * np.asarray(cos, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    rows = np.arange(len(target))
    p = e[rows, target] / e.sum(axis=1)
    # 1 - p as the sum over the other classes: no cancellation when p -> 1
    one_minus_p = np.array([sum(e[i, j] for j in range(e.shape[1]) if j != y) for i, y in enumerate(target)])
    one_minus_p = one_minus_p / e.sum(axis=1)
    loss = -(one_minus_p**gamma) * np.log(p)
    if alpha is not None:
        loss = loss * (np.asarray(alpha)[target] if np.ndim(alpha) else alpha)
    return loss


# Per loss: functional, kwargs, and the per-sample reference (cos, target, scale) -> np array.
CASES = {
    "cross_entropy": (cross_entropy, {}, lambda c, t, s: ref_margin(c, t, s, lambda x: x)),
    "cosface": (cosface, {"m": 0.35}, lambda c, t, s: ref_margin(c, t, s, lambda x: x - 0.35)),
    "cosface_m04": (cosface, {"m": 0.4}, lambda c, t, s: ref_margin(c, t, s, lambda x: x - 0.4)),
    "arcface": (arcface, {"m": 0.5}, lambda c, t, s: ref_margin(c, t, s, lambda x: ref_arcface(x, 0.5))),
    "arcface_easy": (arcface, {"m": 0.5, "easy_margin": True},
                     lambda c, t, s: ref_margin(c, t, s, lambda x: ref_arcface(x, 0.5, True))),
    "l_softmax": (l_softmax, {"m": 4}, lambda c, t, s: ref_margin(c, t, s, lambda x: ref_psi(x, 4))),
    "l_softmax_m2": (l_softmax, {"m": 2}, lambda c, t, s: ref_margin(c, t, s, lambda x: ref_psi(x, 2))),
    "l_softmax_lam": (l_softmax, {"m": 3, "lambda_": 2.0},
                      lambda c, t, s: ref_margin(c, t, s, lambda x: (2.0 * x + ref_psi(x, 3)) / 3.0)),
    "sphereface": (sphereface, {"m": 4}, lambda c, t, s: ref_margin(c, t, s, lambda x: ref_psi(x, 4))),
    "sphereface_lam": (sphereface, {"m": 4, "lambda_": 5.0},
                       lambda c, t, s: ref_margin(c, t, s, lambda x: (5.0 * x + ref_psi(x, 4)) / 6.0)),
    "focal": (focal, {"gamma": 2.0}, lambda c, t, s: ref_focal(c, t, s, 2.0)),
    "focal_g05_alpha": (focal, {"gamma": 0.5, "alpha": 0.25}, lambda c, t, s: ref_focal(c, t, s, 0.5, 0.25)),
    "focal_class_alpha": (focal, {"gamma": 1.5, "alpha": [0.1, 0.2, 0.3, 0.4, 0.5]},
                          lambda c, t, s: ref_focal(c, t, s, 1.5, [0.1, 0.2, 0.3, 0.4, 0.5])),
    # Poly-1 (Leng et al., Eq. 3): CE + epsilon (1 - p_t), p_t from the explicit log-sum-exp
    "poly1": (poly1, {"epsilon": 1.0}, lambda c, t, s: ref_poly1(c, t, s, 1.0)),
    "poly1_eps_neg": (poly1, {"epsilon": -0.5}, lambda c, t, s: ref_poly1(c, t, s, -0.5)),
    # CSE-Autoloss-A (Liu et al., ICLR 2021): -(1 + sin(w)) log p_y, w = p_y or 1
    "cse_autoloss_a": (cse_autoloss_a, {"w": "p_y"}, lambda c, t, s: ref_cse(c, t, s, "p_y")),
    "cse_autoloss_a_one": (cse_autoloss_a, {"w": "one"}, lambda c, t, s: ref_cse(c, t, s, "one")),
}


def test_every_registered_loss_has_a_closed_form_case():
    assert set(SIX) <= {fn.__name__ for fn, _, _ in CASES.values()}


def rand_inputs(seed: int, n: int = N, c: int = C, lo: float = -0.99, hi: float = 0.99):
    g = torch.Generator().manual_seed(seed)
    cos = lo + (hi - lo) * torch.rand(n, c, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n,), generator=g)
    return cos, target, g


def make_scale(kind: str, n: int, c: int, g: torch.Generator):
    if kind == "number":
        return 3.5
    if kind == "Nx1":
        return 0.5 + 4.0 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return 0.5 + 4.0 * torch.rand(n, c, generator=g, dtype=torch.float64)


def np_scale(scale):
    return scale.numpy() if isinstance(scale, torch.Tensor) else scale


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("scale_kind", ["number", "Nx1", "NxC"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_closed_form(case, scale_kind):
    fn, kwargs, ref = CASES[case]
    cos, target, g = rand_inputs(sum(map(ord, case + scale_kind)))
    scale = make_scale(scale_kind, N, C, g)
    expected = ref(cos.numpy(), target.numpy(), np_scale(scale))
    got = fn(cos, target, scale, **kwargs, reduction="none")
    assert got.shape == (N,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fn(cos, target, scale, **kwargs).item(), expected.mean(), rtol=1e-10)
    np.testing.assert_allclose(fn(cos, target, scale, **kwargs, reduction="sum").item(), expected.sum(), rtol=1e-10)


EDGE_COS = [1.0, -1.0, 1.0 - 1e-12, -1.0 + 1e-12, 0.0, 1e-12, -0.5]


@pytest.mark.parametrize("case", sorted(CASES))
def test_edge_target_cosines_match_closed_form(case):
    fn, kwargs, ref = CASES[case]
    cos, target, _ = rand_inputs(99, n=len(EDGE_COS))
    cos[torch.arange(len(EDGE_COS)), target] = torch.tensor(EDGE_COS, dtype=torch.float64)
    cos.requires_grad_(True)
    got = fn(cos, target, 3.0, **kwargs, reduction="none")
    expected = ref(cos.detach().numpy(), target.numpy(), 3.0)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-9, atol=1e-12)
    got.sum().backward()
    assert torch.isfinite(cos.grad).all()


@pytest.mark.parametrize("name", SIX)
def test_bad_reduction_raises(name):
    cos, target, _ = rand_inputs(0)
    with pytest.raises(ValueError, match="reduction"):
        baselines.get(name).fn(cos, target, reduction="avg")


def test_cross_entropy_is_torch_cross_entropy():
    cos, target, g = rand_inputs(1, n=9, c=11)
    for scale in (1.0, 30.0, make_scale("NxC", 9, 11, g)):
        torch.testing.assert_close(cross_entropy(cos, target, scale), F.cross_entropy(scale * cos, target))
    # default scale is 1
    torch.testing.assert_close(cross_entropy(cos, target), F.cross_entropy(cos, target))


@pytest.mark.parametrize("fn", [cosface, arcface])
def test_zero_margin_is_scaled_cross_entropy(fn):
    cos, target, _ = rand_inputs(2)
    cos[0, target[0]] = -1.0  # the arcface fallback threshold is cos(pi) = -1: still no margin
    cos[1, target[1]] = 1.0
    for s in (64.0, 3.0):
        expected = F.cross_entropy(s * cos, target, reduction="none")
        torch.testing.assert_close(fn(cos, target, s, m=0.0, reduction="none"), expected)
    # default scale 64
    torch.testing.assert_close(fn(cos, target, m=0.0), F.cross_entropy(64.0 * cos, target))


@pytest.mark.parametrize("fn", [l_softmax, sphereface])
def test_unit_margin_is_cross_entropy(fn):
    cos, target, g = rand_inputs(3, lo=-1.0, hi=1.0)
    cos[0, target[0]], cos[1, target[1]] = -1.0, 1.0
    scale = make_scale("NxC", N, C, g)
    expected = ref_ce(scale.numpy() * cos.numpy(), target.numpy())
    np.testing.assert_allclose(fn(cos, target, scale, m=1, reduction="none").numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(fn(cos, target, scale, m=1, lambda_=3.0, reduction="none").numpy(), expected,
                               rtol=1e-12)


def test_focal_gamma_zero_is_cross_entropy():
    cos, target, _ = rand_inputs(4)
    torch.testing.assert_close(focal(cos, target, 10.0, gamma=0.0, reduction="none"),
                               F.cross_entropy(10.0 * cos, target, reduction="none"))


def test_focal_is_stable_for_tiny_and_certain_probabilities():
    # p_y ~ exp(-128) underflows nothing in log space; p_y = 1 in float32 gives loss 0.
    cos = torch.tensor([[-1.0, 1.0, 1.0], [1.0, -1.0, -1.0]], dtype=torch.float32, requires_grad=True)
    target = torch.tensor([0, 0])
    loss = focal(cos, target, 64.0, gamma=0.5, reduction="none")
    assert torch.isfinite(loss).all()
    assert loss[0].item() == pytest.approx(128.0 + math.log(2.0), rel=1e-5)  # (1-p)^g = 1, -log p
    assert loss[1].item() == pytest.approx(0.0, abs=1e-6)
    loss.sum().backward()
    assert torch.isfinite(cos.grad).all()
    assert cos.grad[0, 0].item() == pytest.approx(-64.0, rel=1e-5)  # d(-log p)/dz_y = p - 1 = -1


def test_focal_accurate_when_confident():
    # p_y = 1 - ~1e-10: the loss (~1e-21) keeps its relative accuracy; log_softmax's absolute
    # error (~eps |z|) bounds it at ~1e-6 relative
    cos = torch.tensor([[1.0, -1.0, -1.0], [0.9, -0.95, -0.8]], dtype=torch.float64)
    target = torch.tensor([0, 0])
    for gamma in (1.0, 2.0):
        got = focal(cos, target, 12.0, gamma=gamma, reduction="none").numpy()
        expected = ref_focal(cos.numpy(), target.numpy(), 12.0, gamma)
        assert expected[0] < 1e-9
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_cosface_defaults():
    cos, target, _ = rand_inputs(5)
    expected = ref_margin(cos.numpy(), target.numpy(), 64.0, lambda x: x - 0.35)
    np.testing.assert_allclose(cosface(cos, target, reduction="none").numpy(), expected, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- ArcFace edges


def test_arcface_defaults_and_fallback_branch_near_pi():
    m = 0.5
    # theta_y in (pi - m, pi): the fallback target cosine cos - m sin(m), not cos(theta + m)
    theta = torch.linspace(math.pi - m + 0.02, math.pi - 1e-6, N, dtype=torch.float64)
    cos, target, _ = rand_inputs(6)
    cos[torch.arange(N), target] = torch.cos(theta)
    got = arcface(cos, target, reduction="none")  # defaults s = 64, m = 0.5
    fallback = ref_margin(cos.numpy(), target.numpy(), 64.0, lambda x: x - m * math.sin(m))
    naive = ref_margin(cos.numpy(), target.numpy(), 64.0, lambda x: math.cos(math.acos(x) + m))
    np.testing.assert_allclose(got.numpy(), fallback, rtol=1e-10)
    assert np.all(np.abs(got.numpy() - naive) > 1e-3)  # the branch matters here
    # just below the threshold, the margin branch: cos(theta + m) exactly
    below = torch.linspace(math.pi - m - 0.3, math.pi - m - 1e-6, N, dtype=torch.float64)
    cos[torch.arange(N), target] = torch.cos(below)
    np.testing.assert_allclose(
        arcface(cos, target, reduction="none").numpy(),
        ref_margin(cos.numpy(), target.numpy(), 64.0, lambda x: math.cos(math.acos(x) + m)), rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("easy_margin", [False, True])
def test_arcface_finite_gradient_at_plus_minus_one(dtype, easy_margin):
    m, s = 0.5, 4.0  # a small s keeps the target probability away from 1 (loss not ~0)
    cos = torch.tensor([[1.0, 0.2, -0.3], [-1.0, 0.1, 0.4], [0.3, 1.0, -1.0]], dtype=dtype, requires_grad=True)
    target = torch.tensor([0, 0, 2])
    loss = arcface(cos, target, s, m, easy_margin=easy_margin, reduction="none")
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(cos.grad).all()
    c = cos.detach().double().numpy()
    expected = ref_margin(c, [0, 0, 2], s, lambda x: ref_arcface(x, m, easy_margin))
    np.testing.assert_allclose(loss.detach().double().numpy(), expected, rtol=1e-5 if dtype == torch.float32 else 1e-12)
    if not easy_margin:
        # at cos = 1 the target logit is s cos(m); at cos = -1 it is s (-1 - m sin m)
        z0 = np.array([s * math.cos(m), s * 0.2, s * -0.3])
        assert loss[0].item() == pytest.approx(ref_ce(z0[None], np.array([0]))[0], rel=1e-5)
        z1 = np.array([s * (-1 - m * math.sin(m)), s * 0.1, s * 0.4])
        assert loss[1].item() == pytest.approx(ref_ce(z1[None], np.array([0]))[0], rel=1e-5)


def test_arcface_easy_margin_branch():
    m, s = 0.5, 10.0
    cos, target, _ = rand_inputs(7)
    cos[:4, :] = cos[:4, :].abs() * -1  # rows 0-3: negative target cosine -> no margin
    cos[4:, :] = cos[4:, :].abs()  # rows 4-6: positive -> cos(theta + m)
    got = arcface(cos, target, s, m, easy_margin=True, reduction="none").numpy()
    plain = ref_ce(s * cos.numpy(), target.numpy())
    np.testing.assert_allclose(got[:4], plain[:4], rtol=1e-12)
    margin = ref_margin(cos.numpy(), target.numpy(), s, lambda x: math.cos(math.acos(x) + m))
    np.testing.assert_allclose(got[4:], margin[4:], rtol=1e-12)
    assert np.all(got[4:] > plain[4:])
    # the hard-margin form differs on the negative rows
    hard = arcface(cos, target, s, m, reduction="none").numpy()
    assert np.all(hard[:4] > got[:4] + 1e-6)


# --------------------------------------------------------------------------- psi (L-Softmax, SphereFace)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_psi_every_branch(m):
    g = torch.Generator().manual_seed(m)
    thetas = []
    for k in range(m):
        lo, hi = k * math.pi / m, (k + 1) * math.pi / m
        thetas += [lo + (hi - lo) * u for u in (0.05, 0.5, 0.95)]
        thetas += (lo + (hi - lo) * torch.rand(4, generator=g, dtype=torch.float64)).tolist()
    c = torch.cos(torch.tensor(thetas, dtype=torch.float64))
    expected = [ref_psi(x, m) for x in c.tolist()]
    np.testing.assert_allclose(psi(c, m).numpy(), expected, rtol=1e-10, atol=1e-10)
    # explicitly: the branch k term -2k is there (psi in [-(2k+1), -(2k-1)] on branch k)
    for k in range(m):
        mid = torch.tensor([math.cos((k + 0.5) * math.pi / m)], dtype=torch.float64)
        assert psi(mid, m).item() == pytest.approx(-2 * k, abs=1e-9)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_psi_continuous_at_branch_boundaries(m):
    for k in range(1, m):
        b = k * math.pi / m
        at = psi(torch.tensor([math.cos(b)], dtype=torch.float64), m).item()
        assert at == pytest.approx(-(2 * k - 1) if k % 2 else -(2 * k - 1), abs=1e-9)  # = -2k + (-1)^k cos(k pi)
        for eps in (1e-4, 1e-7):
            left = psi(torch.tensor([math.cos(b - eps)], dtype=torch.float64), m).item()
            right = psi(torch.tensor([math.cos(b + eps)], dtype=torch.float64), m).item()
            assert left == pytest.approx(at, abs=10 * m * m * eps**2 + 1e-9)
            assert right == pytest.approx(at, abs=10 * m * m * eps**2 + 1e-9)
            assert left > at > right


@pytest.mark.parametrize("m", [1, 2, 3, 4, 6])
def test_psi_monotone_and_end_values(m):
    theta = torch.linspace(0.0, math.pi, 4001, dtype=torch.float64)
    values = psi(torch.cos(theta), m)
    assert torch.all(values[1:] < values[:-1])
    assert psi(torch.tensor([1.0], dtype=torch.float64), m).item() == pytest.approx(1.0, abs=1e-12)
    assert psi(torch.tensor([-1.0], dtype=torch.float64), m).item() == pytest.approx(-(2 * m - 1), abs=1e-12)
    # slightly outside [-1, 1] (rounding): still the end branches, no NaN
    out = psi(torch.tensor([1.0 + 1e-7, -1.0 - 1e-7], dtype=torch.float64), m)
    assert torch.isfinite(out).all()
    assert out[0].item() == pytest.approx(1.0, abs=1e-4) and out[1].item() == pytest.approx(1 - 2 * m, abs=1e-4)


def test_psi_gradient_matches_closed_form_and_is_finite_at_ends():
    m = 4
    theta = torch.tensor([0.1, 0.5, 1.0, 1.4, 2.0, 2.5, 3.0], dtype=torch.float64)
    c = torch.cos(theta).requires_grad_(True)
    psi(c, m).sum().backward()
    k = torch.floor(theta * m / math.pi)
    # d/dc [(-1)^k cos(m arccos c)] = (-1)^k m sin(m theta) / sin(theta)
    expected = (-1.0) ** k * m * torch.sin(m * theta) / torch.sin(theta)
    torch.testing.assert_close(c.grad, expected)
    ends = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    psi(ends, m).sum().backward()
    # T_m'(1) = m^2; at theta = pi, (-1)^(m-1) T_m'(-1) = (-1)^(m-1) (-1)^(m-1) m^2 = m^2
    torch.testing.assert_close(ends.grad, torch.tensor([m * m, m * m], dtype=torch.float64))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_psi_rejects_non_integer_margin(bad):
    cos, target, _ = rand_inputs(8)
    with pytest.raises(ValueError, match="integer"):
        l_softmax(cos, target, m=bad)
    with pytest.raises(ValueError, match="integer"):
        psi(cos, bad)


def test_sphereface_lambda_schedule():
    assert sphereface_lambda(0) == 1000.0
    assert sphereface_lambda(100) == pytest.approx(1000.0 / 13.0)
    assert sphereface_lambda(10**6) == 5.0
    assert sphereface_lambda(10, base=100.0, gamma=0.1, power=2.0, lambda_min=0.0) == pytest.approx(25.0)
    # crossover: base/(1 + gamma it) = 5 at it = (200 - 1)/0.12
    assert sphereface_lambda(1650) > 5.0 and sphereface_lambda(1660) == 5.0
    values = [sphereface_lambda(it) for it in range(0, 3000, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_sphereface_module_counter_and_lambda():
    torch.manual_seed(0)
    loss_fn = SphereFaceLoss(6, C).double()
    assert loss_fn.classifier.normalize == "weights"
    x = torch.randn(N, 6, dtype=torch.float64)
    y = torch.randint(0, C, (N,))
    assert int(loss_fn.iteration) == 0
    cos, scale = loss_fn.classifier(x)

    def expected(lam):
        return ref_margin(cos.detach().numpy(), y.numpy(), scale.detach().numpy(),
                          lambda c: (lam * c + ref_psi(c, 4)) / (1 + lam)).mean()

    assert loss_fn(x, y).item() == pytest.approx(expected(1000.0), rel=1e-10)  # iteration 0
    assert int(loss_fn.iteration) == 1
    assert loss_fn(x, y).item() == pytest.approx(expected(1000.0 / 1.12), rel=1e-10)  # iteration 1
    assert int(loss_fn.iteration) == 2
    loss_fn.eval()
    e1 = loss_fn(x, y).item()
    e2 = loss_fn(x, y).item()
    assert int(loss_fn.iteration) == 2 and e1 == e2
    assert e1 == pytest.approx(expected(1000.0 / 1.24), rel=1e-10)
    loss_fn.train()
    loss_fn(x, y)
    assert int(loss_fn.iteration) == 3
    assert "iteration" in loss_fn.state_dict()
    with torch.no_grad():
        loss_fn.iteration.fill_(10**6)
    assert loss_fn.current_lambda() == 5.0
    assert loss_fn(x, y).item() == pytest.approx(expected(5.0), rel=1e-10)
    fixed = SphereFaceLoss(6, C, lambda_=0.0)
    assert fixed.current_lambda() == 0.0


# --------------------------------------------------------------------------- autograd / vmap


def _away_from_boundaries(case: str, seed: int):
    """Random cos (float64) whose target entries avoid the branch boundaries of ``case``."""
    cos, target, g = rand_inputs(seed, n=4, c=4)
    if case in ("l_softmax", "sphereface"):
        m = 4
        k = torch.randint(0, m, (4,), generator=g).double()
        theta = (k + 0.2 + 0.6 * torch.rand(4, generator=g, dtype=torch.float64)) * math.pi / m
        cos[torch.arange(4), target] = torch.cos(theta)
    elif case == "arcface":
        # two rows on each side of the fallback threshold cos(pi - 0.5) ~ -0.878, none at +-1
        cos[torch.arange(4), target] = torch.tensor([0.7, -0.2, -0.93, -0.97], dtype=torch.float64)
    return cos, target


GRAD_KWARGS = {
    "cross_entropy": {"scale": 2.0},
    "cosface": {"scale": 4.0},
    "arcface": {"scale": 4.0},
    "l_softmax": {"scale": 1.5},
    "sphereface": {"scale": 1.5, "lambda_": 2.0},
    "focal": {"scale": 3.0, "gamma": 2.0},
    "poly1": {"scale": 3.0, "epsilon": 2.0},
    "cse_autoloss_a": {"scale": 3.0, "w": "one"},  # w = p_y is a weight that is not differentiated (its own test)
}


@pytest.mark.parametrize("name", SIX)
def test_gradcheck(name):
    fn = baselines.get(name).fn
    cos, target = _away_from_boundaries(name, 11)
    cos.requires_grad_(True)
    kwargs = GRAD_KWARGS[name]
    assert torch.autograd.gradcheck(lambda c: fn(c, target, **kwargs, reduction="none"), (cos,))
    # also w.r.t. an N x 1 scale tensor
    scale = torch.full((4, 1), kwargs["scale"], dtype=torch.float64) + torch.arange(4.0, dtype=torch.float64)[:, None] / 4
    scale.requires_grad_(True)
    rest = {k: v for k, v in kwargs.items() if k != "scale"}
    assert torch.autograd.gradcheck(lambda c, s: fn(c, target, s, **rest), (cos, scale))


def test_gradcheck_focal_small_gamma():
    cos, target = _away_from_boundaries("focal", 12)
    cos.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: focal(c, target, 2.0, gamma=0.5, alpha=[1, 2, 3, 4], reduction="none"),
                                    (cos,))


VMAP_KWARGS = {
    "cross_entropy": {"scale": 5.0},
    "cosface": {},
    "arcface": {"scale": 8.0},
    "l_softmax": {"lambda_": 1.0},
    "sphereface": {"scale": 2.0},
    "focal": {"scale": 4.0, "alpha": [0.5, 1.0, 1.5, 2.0, 2.5]},
    "poly1": {"scale": 4.0, "epsilon": 1.5},
    "cse_autoloss_a": {"scale": 4.0, "w": "p_y"},
}


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name", SIX)
def test_vmap_matches_loop(name, reduction):
    fn = baselines.get(name).fn
    kwargs = VMAP_KWARGS[name]
    g = torch.Generator().manual_seed(13)
    cos = -1 + 2 * torch.rand(3, N, C, generator=g)
    cos[0, 0, :] = 1.0  # an edge value inside the batch
    cos[1, 1, :] = -1.0
    target = torch.randint(0, C, (N,), generator=g)
    targets = torch.randint(0, C, (3, N), generator=g)
    scales = 0.5 + torch.rand(3, N, C, generator=g)

    out = torch.func.vmap(lambda c: fn(c, target, **kwargs, reduction=reduction))(cos)
    loop = torch.stack([fn(cos[i], target, **kwargs, reduction=reduction) for i in range(3)])
    torch.testing.assert_close(out, loop)

    rest = {k: v for k, v in kwargs.items() if k != "scale"}
    out = torch.func.vmap(lambda c, t, s: fn(c, t, s, **rest, reduction=reduction))(cos, targets, scales)
    loop = torch.stack([fn(cos[i], targets[i], scales[i], **rest, reduction=reduction) for i in range(3)])
    torch.testing.assert_close(out, loop)

    if reduction != "mean":
        return
    # gradients through vmap as well (as the vectorized executor uses them)
    grads = torch.func.vmap(torch.func.grad(lambda c: fn(c, target, **kwargs)))(cos)
    for i in range(3):
        c = cos[i].clone().requires_grad_(True)
        fn(c, target, **kwargs).backward()
        torch.testing.assert_close(grads[i], c.grad)
    assert torch.isfinite(grads).all()


# --------------------------------------------------------------------------- module forms


MODULES = {
    "cross_entropy": (CrossEntropyLoss, "none", {}),
    "l_softmax": (LSoftmaxLoss, "none", {"m": 3, "lambda_": 0.5}),
    "sphereface": (SphereFaceLoss, "weights", {"lambda_": 2.0}),
    "cosface": (CosFaceLoss, "both", {"m": 0.4}),
    "arcface": (ArcFaceLoss, "both", {"m": 0.3, "easy_margin": True}),
    "focal": (FocalLoss, "none", {"gamma": 1.0, "alpha": 0.5}),
    "poly1": (Poly1Loss, "none", {"epsilon": 0.5}),
    "cse_autoloss_a": (CSEAutolossALoss, "none", {"w": "p_y"}),
}


@pytest.mark.parametrize("name", SIX)
def test_module_forward_equals_functional(name):
    cls, default_normalize, kwargs = MODULES[name]
    assert issubclass(cls, HeadLoss) and cls.default_normalize == default_normalize
    torch.manual_seed(1)
    module = cls(6, C, **kwargs)
    assert module.classifier.normalize == default_normalize
    x = torch.randn(N, 6)
    y = torch.randint(0, C, (N,))
    cos, scale = module.classifier(x)
    fkwargs = {k: v for k, v in kwargs.items()}
    loss = module(x, y)
    torch.testing.assert_close(loss, baselines.get(name).fn(cos, y, scale, **fkwargs))
    assert loss.shape == ()
    loss.backward()
    assert module.classifier.weight.grad is not None and torch.isfinite(module.classifier.weight.grad).all()
    # logits: the unmodified scale * cos, N x C
    logits = module.logits(x)
    assert logits.shape == (N, C)
    torch.testing.assert_close(logits, (cos * scale).detach(), check_dtype=False)
    if default_normalize == "none":
        torch.testing.assert_close(logits, x @ module.classifier.weight.T)
    # reduction="none" and an explicit head choice
    per_sample = cls(6, C, normalize="both", s=16.0, reduction="none", **kwargs)
    cos2, scale2 = per_sample.classifier(x)
    assert float(scale2) == 16.0
    torch.testing.assert_close(per_sample(x, y), baselines.get(name).fn(cos2, y, 16.0, **fkwargs, reduction="none"))


def test_margin_module_defaults():
    cf, af = CosFaceLoss(4, 3), ArcFaceLoss(4, 3)
    assert (cf.classifier.s, cf.m) == (64.0, 0.35)
    assert (af.classifier.s, af.m, af.easy_margin) == (64.0, 0.5, False)
    sf, ls, fl = SphereFaceLoss(4, 3), LSoftmaxLoss(4, 3), FocalLoss(4, 3)
    assert (sf.m, sf.base, sf.gamma, sf.power, sf.lambda_min) == (4, 1000.0, 0.12, 1.0, 5.0)
    assert (ls.m, ls.lambda_) == (4, 0.0)
    assert (fl.gamma, fl.alpha) == (2.0, None)


def test_l_softmax_module_uses_unnormalized_scale():
    torch.manual_seed(2)
    module = LSoftmaxLoss(6, C, m=2, reduction="none").double()
    x = torch.randn(N, 6, dtype=torch.float64)
    y = torch.randint(0, C, (N,))
    W = module.classifier.weight.detach().numpy()
    xn = x.numpy()
    norms = np.linalg.norm(xn, axis=1)[:, None] * np.linalg.norm(W, axis=1)[None, :]
    cos = (xn @ W.T) / norms
    expected = ref_margin(cos, y.numpy(), norms, lambda c: ref_psi(c, 2))
    np.testing.assert_allclose(module(x, y).detach().numpy(), expected, rtol=1e-9)


# --------------------------------------------------------------------------- registry


def test_registry_lists_and_gets():
    names = baselines.available()
    assert set(SIX) <= set(names) and names == sorted(names)
    fns = {"cross_entropy": cross_entropy, "l_softmax": l_softmax, "sphereface": sphereface,
           "cosface": cosface, "arcface": arcface, "focal": focal, "poly1": poly1, "cse_autoloss_a": cse_autoloss_a}
    for name in SIX:
        entry = baselines.get(name)
        assert isinstance(entry, baselines.BaselineLoss)
        assert entry.name == name and entry.fn is fns[name] and entry.module is MODULES[name][0]
        assert entry.description and isinstance(entry.reference, str)
        assert "reduction" not in entry.defaults and "cos" not in entry.defaults
        with pytest.raises(Exception):
            entry.name = "other"  # frozen
    assert baselines.get("cosface").defaults == {"scale": 64.0, "m": 0.35}
    assert baselines.get("arcface").defaults == {"scale": 64.0, "m": 0.5, "easy_margin": False}
    assert baselines.get("focal").defaults == {"scale": 1.0, "gamma": 2.0, "alpha": None}
    assert "2018" in baselines.get("cosface").reference and "2019" in baselines.get("arcface").reference
    module = baselines.create("arcface", 8, 4, m=0.2)
    assert isinstance(module, ArcFaceLoss) and module.m == 0.2


def test_registry_unknown_name():
    with pytest.raises(ValueError) as info:
        baselines.get("softmaxx")
    msg = str(info.value)
    assert "\n" not in msg and "'softmaxx'" in msg and "available" in msg
    assert msg.startswith("unknown baseline loss 'softmaxx'; available: ")
    assert msg.split("available: ")[1].split(", ") == baselines.available()


def test_register_rejects_duplicate_name_and_returns_object():
    from baselines import registry

    def other(cos, target, scale=1.0, reduction="mean"):
        """Another loss."""
        return cross_entropy(cos, target, scale, reduction)

    with pytest.raises(ValueError, match="already registered"):
        registry.register("cosface")(other)
    try:
        assert registry.register("_test_tmp", reference="none")(other) is other
        entry = baselines.get("_test_tmp")
        assert entry.fn is other and entry.module is None and entry.defaults == {"scale": 1.0}
        assert entry.description == "Another loss."
        with pytest.raises(ValueError, match="no module form"):
            entry.create(3, 2)
        assert registry.register("_test_tmp2", other, module=CosFaceLoss, defaults={"m": 1.0}) is other
        entry = baselines.get("_test_tmp2")
        assert entry.fn is other and entry.module is CosFaceLoss and entry.defaults == {"m": 1.0}
    finally:
        registry._REGISTRY.pop("_test_tmp", None)
        registry._REGISTRY.pop("_test_tmp2", None)
    assert "_test_tmp" not in baselines.available() and "_test_tmp2" not in baselines.available()


# --------------------------------------------------------------------------- PolyLoss


def test_poly1_epsilon_zero_is_cross_entropy_and_grid_moves_it():
    cos, target, _ = rand_inputs(5)
    torch.testing.assert_close(poly1(cos, target, 8.0, epsilon=0.0), F.cross_entropy(8.0 * cos, target), rtol=1e-15, atol=0)
    p_t = torch.softmax(8.0 * cos, dim=-1).gather(1, target[:, None]).squeeze(1)
    for eps in (-1.0, 0.5, 2.0):
        expected = F.cross_entropy(8.0 * cos, target, reduction="none") + eps * (1 - p_t)
        torch.testing.assert_close(poly1(cos, target, 8.0, epsilon=eps, reduction="none"), expected)


def test_training_loss_binds_hyper_parameters_and_rejects_unknown_ones():
    cos, target, _ = rand_inputs(6)
    loss = baselines.get("cosface").training_loss(m=0.2)
    torch.testing.assert_close(loss(cos, target, 10.0), cosface(cos, target, 10.0, m=0.2))
    with pytest.raises(ValueError, match="no hyper-parameter 'margin'.*it has: m"):
        baselines.get("cosface").training_loss(margin=0.2)


def test_sphereface_training_loss_anneals_lambda_per_call():
    cos, target, _ = rand_inputs(7)
    loss = baselines.get("sphereface").training_loss()
    for it in range(3):
        expected = sphereface(cos, target, 2.0, lambda_=sphereface_lambda(it))
        torch.testing.assert_close(loss(cos, target, 2.0), expected)


def test_cse_autoloss_a_weights_by_a_p_y_it_does_not_differentiate_and_w_one_is_scaled_ce():
    cos, target, _ = rand_inputs(5)
    cos.requires_grad_(True)
    loss = cse_autoloss_a(cos, target, 7.0, w="p_y", reduction="sum")
    (grad,) = torch.autograd.grad(loss, cos)
    logp = torch.log_softmax(7.0 * cos, -1).gather(1, target[:, None])[:, 0]
    w = 1.0 + torch.sin(logp.detach().exp())
    (expected,) = torch.autograd.grad(-(w * logp).sum(), cos)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cse_autoloss_a(cos, target, 7.0, w="one"),
                               (1.0 + math.sin(1.0)) * cross_entropy(cos, target, 7.0))
    with pytest.raises(ValueError, match="cse_autoloss_a: w must be one of p_y, one, got 'iou'"):
        cse_autoloss_a(cos, target, 7.0, w="iou")
