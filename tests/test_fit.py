"""Figure 1: the search space approximates the hand-crafted losses, better as M grows.

Errors are ``max |L_fit - L| / (max L - min L)`` over the loss curve (lfs.fit.loss_curve: margin
losses vs. the target cosine with s = 16 and C = 10; focal vs. p in [1e-3, 1]). Measured at M = 6
(lstsq): CE 4e-16, CosFace 4e-16, SphereFace 0.073, ArcFace 0.095; focal (interpolate) 0.077.
"""
import pytest
import torch

import lfs
from lfs.fit import (KNOWN_LOSSES, approximation_error, arcface_t, fit_known_loss, fit_theta, focal_tau,
                     sphereface_psi)


def test_cross_entropy_and_cosface_are_exactly_in_the_space():
    assert torch.allclose(fit_known_loss("cross_entropy", 6), lfs.identity_theta(6, dtype=torch.float64), atol=1e-12)
    theta = fit_known_loss("cosface", 6)
    assert torch.allclose(theta[:6], torch.ones(6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(theta[6:12], torch.full((6,), -0.35, dtype=torch.float64), atol=1e-12)
    assert approximation_error("cross_entropy", 6) < 1e-12
    assert approximation_error("cosface", 6) < 1e-12


@pytest.mark.parametrize("name,method,bound_at_6", [("sphereface", "lstsq", 0.08), ("arcface", "lstsq", 0.10),
                                                    ("focal", "interpolate", 0.08)])
def test_error_at_M6_and_shrinks_with_M(name, method, bound_at_6):
    errors = [approximation_error(name, M, method) for M in (3, 6, 10, 20, 40)]
    assert errors[1] < bound_at_6
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_least_squares_tau_for_focal_goes_negative_near_zero():
    """Documented limitation: the least-squares line of p^((1-p)^2) on [0, 1/6] has a negative
    intercept, so tau(p) <= 0 for tiny p; the interpolating fit keeps tau > 0."""
    assert fit_known_loss("focal", 6, "lstsq")[18] < 0
    theta = fit_known_loss("focal", 6, "interpolate")
    p = torch.linspace(1e-6, 1, 1000, dtype=torch.float64)
    assert (lfs.tau_transform(p, theta) > 0).all()


def test_fitted_transforms_match_closed_forms_at_interval_midpoints():
    # ArcFace t is smooth inside each interval: the fit is close at the midpoints
    theta = fit_theta(arcface_t(0.5), M=20)
    x = torch.linspace(-0.95, 0.95, 20, dtype=torch.float64)
    assert (lfs.t_transform(x, theta) - arcface_t(0.5)(x)).abs().max() < 0.02
    psi = sphereface_psi(4)
    assert psi(torch.tensor([1.0], dtype=torch.float64)).item() == pytest.approx(1.0)
    assert psi(torch.tensor([-1.0], dtype=torch.float64)).item() == pytest.approx(-7.0)
    p = torch.tensor([0.3], dtype=torch.float64)
    assert focal_tau(2.0)(p).log().item() == pytest.approx(0.49 * torch.log(p).item())


def test_unknown_loss_and_method_raise():
    with pytest.raises(ValueError, match="unknown loss"):
        fit_known_loss("hinge")
    with pytest.raises(ValueError, match="method"):
        fit_theta(M=3, method="spline")
    assert set(KNOWN_LOSSES) == {"cross_entropy", "sphereface", "cosface", "arcface", "focal"}
