"""Figure 1: the search space approximates the hand-crafted losses, better as M grows.

The transforms are the baselines' own (``baselines.get(name).transforms()``: what training uses,
ArcFace's fallback included). Errors are ``max |L_fit - L| / (max L - min L)`` over the loss curve
(lfs.fit.loss_curve: margin losses vs. the target cosine with s = 16 and C = 10; focal and Poly-1
vs. p in [1e-3, 1]).
"""
import math

import pytest
import torch

import baselines
import lfs
from benchmarks.runner import fit_spec
from lfs.fit import approximation_error, curve_kind, fit_theta, identity, loss_curve

WITH_FORM = [n for n in baselines.available() if baselines.get(n).transform is not None]


def error(name, M):
    t, tau, method = fit_spec(name)
    return approximation_error(t, tau, M, method)


def test_cross_entropy_and_cosface_are_exactly_in_the_space():
    t, tau, _ = fit_spec("cross_entropy")
    assert torch.allclose(fit_theta(t, tau, 6), lfs.identity_theta(6, dtype=torch.float64), atol=1e-12)
    t, tau, _ = fit_spec("cosface")
    theta = fit_theta(t, tau, 6)
    assert torch.allclose(theta[:6], torch.ones(6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(theta[6:12], torch.full((6,), -0.35, dtype=torch.float64), atol=1e-12)
    assert error("cross_entropy", 6) < 1e-12 and error("cosface", 6) < 1e-12


@pytest.mark.parametrize("name", [n for n in WITH_FORM if n not in ("cross_entropy", "cosface", "arcface")])
def test_error_shrinks_with_M(name):
    errors = [error(name, M) for M in (3, 6, 10, 20, 40)]
    assert errors[1] < 0.12
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


@pytest.mark.parametrize("name", WITH_FORM)
def test_every_form_is_the_training_loss(name):
    """-log tau(p^t) from the registered (t, tau) equals the functional form on random cosines."""
    t, tau = baselines.get(name).transforms()
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(64, 5, generator=g, dtype=torch.float64) * 1.9 - 0.95
    y = torch.randint(0, 5, (64,), generator=g)
    nll = lfs.loss.margin_cross_entropy(cos, y, 3.0, t, reduction="none")
    unified = -torch.log(tau(torch.exp(-nll)))
    torch.testing.assert_close(unified, baselines.get(name).fn(cos, y, scale=3.0, reduction="none"))


def test_arcface_fit_uses_the_trained_fallback_whose_jump_bounds_the_error():
    t, _ = baselines.get("arcface").transforms()
    x = torch.tensor([-0.95], dtype=torch.float64)  # theta > pi - m: the fallback cos - m sin(m)
    assert float(t(x)) == pytest.approx(-0.95 - 0.5 * math.sin(0.5))
    # the fallback makes t jump at cos(pi - m) (insightface's form), so equal intervals cannot
    # fit it ever better: the error levels off instead of shrinking to 0 as for SphereFace
    edge = math.cos(math.pi - 0.5)
    jump = float(t(torch.tensor([edge + 1e-9], dtype=torch.float64)) - t(torch.tensor([edge - 1e-9], dtype=torch.float64)))
    assert jump == pytest.approx(-1 + math.cos(0.5) + 0.5 * math.sin(0.5), abs=1e-6)  # cos(pi) - (cos(pi - m) - m sin m)
    errors = [error("arcface", M) for M in (6, 20, 40)]
    assert errors[0] < 0.08 and 0.04 < errors[2] < errors[0]


def test_least_squares_tau_for_focal_goes_negative_near_zero():
    """Documented limitation: the least-squares line of p^((1-p)^2) on [0, 1/6] has a negative
    intercept, so tau(p) <= 0 for tiny p; the interpolating fit keeps tau > 0."""
    t, tau, method = fit_spec("focal")
    assert method == "interpolate" and curve_kind(t, tau) == "tau"
    assert fit_theta(t, tau, 6, "lstsq")[18] < 0
    p = torch.linspace(1e-6, 1, 1000, dtype=torch.float64)
    assert (lfs.tau_transform(p, fit_theta(t, tau, 6, "interpolate")) > 0).all()


def test_loss_curves_and_errors():
    x, loss = loss_curve(identity, identity)
    assert x[0] == -1 and x[-1] == 1 and (loss[1:] < loss[:-1]).all()  # CE falls as the target cosine grows
    with pytest.raises(ValueError, match="method"):
        fit_theta(M=3, method="spline")
    with pytest.raises(ValueError, match="no \\(t, tau\\) form"):
        baselines.get("l2t_dlf").transforms()
