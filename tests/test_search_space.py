"""Eq. 17: the piecewise-linear t and tau."""
import pytest
import torch
from torch.func import vmap

import lfs
from lfs.search_space import interval_index, split_theta


def reference_piecewise(x: float, a, b, lo: float, hi: float) -> float:
    """Textbook evaluation: walk the end points zeta_0 < ... < zeta_M."""
    M = len(a)
    width = (hi - lo) / M
    i = 0
    while i < M - 1 and x >= lo + (i + 1) * width:
        i += 1
    return float(a[i]) * x + float(b[i])


def test_identity_theta_layout_and_values():
    th = lfs.identity_theta(6)
    assert th.shape == (24,)
    a_t, b_t, a_tau, b_tau = split_theta(th)
    assert torch.equal(a_t, torch.ones(6)) and torch.equal(b_t, torch.zeros(6))
    assert torch.equal(a_tau, torch.ones(6)) and torch.equal(b_tau, torch.zeros(6))
    x = torch.linspace(-1, 1, 101)
    p = torch.linspace(0, 1, 101)
    assert torch.equal(lfs.t_transform(x, th), x)
    assert torch.equal(lfs.tau_transform(p, th), p)


@pytest.mark.parametrize("M", [1, 3, 6, 10])
def test_piecewise_matches_reference(M):
    g = torch.Generator().manual_seed(M)
    th = torch.randn(4 * M, generator=g, dtype=torch.float64)
    a_t, b_t, a_tau, b_tau = split_theta(th)
    x = torch.rand(200, generator=g, dtype=torch.float64) * 2 - 1
    p = torch.rand(200, generator=g, dtype=torch.float64)
    t = lfs.t_transform(x, th)
    tau = lfs.tau_transform(p, th)
    for k in range(200):
        assert t[k].item() == pytest.approx(reference_piecewise(x[k].item(), a_t, b_t, -1.0, 1.0), abs=1e-12)
        assert tau[k].item() == pytest.approx(reference_piecewise(p[k].item(), a_tau, b_tau, 0.0, 1.0), abs=1e-12)


def test_interval_index_edges_and_out_of_domain():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 1.2])
    assert interval_index(x, 4, (-1.0, 1.0)).tolist() == [0, 0, 1, 2, 3, 3, 3]


def test_t_derivative_is_the_slope_of_its_interval():
    g = torch.Generator().manual_seed(0)
    th = torch.randn(24, generator=g, dtype=torch.float64)
    # stay away from the end points, where t is discontinuous
    x = (torch.arange(6, dtype=torch.float64) + 0.37) / 3 - 1
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(lfs.t_transform(x, th).sum(), x)
    assert torch.allclose(grad, lfs.t_derivative(x.detach(), th))
    assert torch.allclose(lfs.t_derivative(x.detach(), th), split_theta(th)[0])
    p = (torch.arange(6, dtype=torch.float64) + 0.5) / 6
    assert torch.allclose(lfs.tau_derivative(p, th), split_theta(th)[2])


def test_works_under_vmap_with_one_theta_per_copy():
    g = torch.Generator().manual_seed(1)
    thetas = torch.randn(5, 24, generator=g)
    x = torch.rand(5, 50, generator=g) * 2 - 1
    batched = vmap(lfs.t_transform)(x, thetas)
    looped = torch.stack([lfs.t_transform(x[i], thetas[i]) for i in range(5)])
    assert torch.equal(batched, looped)


def test_bad_theta_length_and_M_raise():
    with pytest.raises(ValueError, match="4\\*M"):
        lfs.t_transform(torch.zeros(3), torch.zeros(10))
    with pytest.raises(ValueError, match="M"):
        lfs.identity_theta(0)


def test_in_search_space_by_hand():
    from lfs.search_space import in_search_space

    th = lfs.identity_theta(2, dtype=torch.float64)  # [a_t(2), b_t(2), a_tau(2), b_tau(2)]
    assert in_search_space(th) and in_search_space(th, "none")
    bad = th.clone()
    bad[0] = -0.1  # a t slope <= 0
    assert not in_search_space(bad)
    bad = th.clone()
    bad[6] = -0.01  # b_0^tau < 0: tau(0) < 0
    assert not in_search_space(bad)
    bad = th.clone()
    bad[5], bad[7] = 1.0, -0.5  # second tau piece: 1 * 0.5 - 0.5 = 0 at its left end
    assert not in_search_space(bad)
    ok = th.clone()
    ok[7] = -0.49  # positive on [0.5, 1]: 0.01 at the left end
    assert in_search_space(ok)
    batch = torch.stack([th, bad, ok])
    assert in_search_space(batch).tolist() == [True, False, True]
    assert in_search_space(bad, "none")
    with pytest.raises(ValueError, match="constraint"):
        in_search_space(th, "strict")
