"""The Gaussian policy over theta and its REINFORCE update (Section 3.4, Eq. 19-20).

``theta ~ N(mu, sigma I)`` (Eq. 19). The paper writes ``sigma I`` as the covariance and sets
``sigma = 0.2``; many readers take sigma as the standard deviation instead. Both readings are
supported through ``sigma_is``:

* ``sigma_is="variance"`` (default, the paper's Eq. 19 literally): std = sqrt(0.2) ~ 0.447,
* ``sigma_is="std"``: std = 0.2.

Only mu is learned (sigma is fixed, "to simplify the problem"). Samples can be restricted to
the search space of Section 3.3 (positive slopes, tau > 0) by rejection: ``sample(...,
constraint="positive")``; the REINFORCE step keeps the Gaussian's score (theta - mu) / var, i.e.
ignores the truncation's normalizer, as is usual for rejection-sampled policies. With rewards ``R_i`` normalized
to zero mean and unit variance over the B samples (Section 4.1), the REINFORCE gradient is

    g = 1/B sum_i R_i grad_mu log g(theta_i; mu, sigma) = 1/B sum_i R_i (theta_i - mu) / var   (Eq. 20)

Eq. 20 as printed is the plain ascent step ``mu <- mu + eta g`` (``optimizer="sgd"``); the
paper's implementation details use Adam with lr 0.05 (``optimizer="adam"``, the default), which
is fed ``-g`` as the gradient of the objective to minimize.

``optimizer="natural"`` is our option, not the paper's: plain SGD on the natural gradient of the
mean, ``var g`` (the Fisher information of a Gaussian's mean is ``I / var``), i.e.

    mu <- mu + eta 1/B sum_i R_i (theta_i - mu) = mu + eta std 1/B sum_i R_i eps_i,   eps_i = (theta_i - mu) / std

The step is in units of the sampling std, and its size follows the signal: ``1/B sum_i R_i
eps_ij`` is the (uncentred) correlation of the rewards with the draws' j-th coordinate, at most
``sqrt(mean_i eps_ij^2)`` ~ 1 in magnitude (Cauchy-Schwarz, R having unit mean square), and of
size ~ 1/sqrt(B) when the rewards carry no signal. Adam instead rescales each coordinate's
gradient to about unit size, so that mu moves ~ lr per coordinate per epoch whatever the rewards
say, however narrow or wide the Gaussian (REPRODUCE.md, `+table=ablation_scale`).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from .search_space import identity_theta, in_search_space

SIGMA_IS = ("variance", "std")
OPTIMIZERS = ("adam", "sgd", "natural")


def normalize_rewards(rewards: Tensor, eps: float = 1e-12) -> Tensor:
    """Rewards shifted to zero mean and scaled to unit variance over the B samples.

    The population variance (divide by B) is used. If all rewards are equal (variance 0) the
    result is all zeros: the samples carry no signal and mu does not move.
    """
    rewards = rewards.to(torch.float64)
    centered = rewards - rewards.mean()
    std = centered.pow(2).mean().sqrt()
    if std <= eps:
        return torch.zeros_like(centered)
    return centered / std


class GaussianPolicy:
    """``N(mu, sigma I)`` over theta (4M values), mu initialized at the identity (cross entropy).

    Args:
        M: number of intervals of the search space (sets mu's default; ignored when ``mu`` is given).
        sigma: the paper's sigma (0.2).
        sigma_is: "variance" (Eq. 19 literally: covariance sigma I) or "std".
        lr: learning rate of the mu optimizer (0.05).
        optimizer: "adam" (the paper's implementation), "sgd" (Eq. 20 literally) or "natural" (ours:
            SGD on ``var g``, a step of ``lr`` in units of the sampling std; see the module docstring).
        mu: initial mean (defaults to the identity theta); any vector (another family's space).
    """

    def __init__(self, M: int = 6, sigma: float = 0.2, sigma_is: str = "variance", lr: float = 0.05,
                 optimizer: str = "adam", mu: Tensor | None = None):
        if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        if sigma_is not in SIGMA_IS:
            raise ValueError(f"sigma_is must be one of {SIGMA_IS}, got {sigma_is!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.M, self.sigma, self.sigma_is = int(M), float(sigma), sigma_is
        if mu is None:
            init = identity_theta(M, dtype=torch.float64)
        else:  # any vector: the Gaussian searcher gives a loss family's initial mean
            init = torch.as_tensor(mu, dtype=torch.float64)
            if init.ndim != 1 or init.numel() < 1:
                raise ValueError(f"mu must be a non-empty vector, got shape {tuple(init.shape)}")
        # mu is kept in float64: it accumulates many small Adam steps.
        self.mu = init.clone().requires_grad_(True)
        self.last_relaxed = 0  # draws of the last sample() taken outside the space (on_empty="relax")
        self.lr, self.optimizer_name = float(lr), optimizer
        opt = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD  # natural: SGD on var g
        self.optimizer = opt([self.mu], lr=self.lr)

    @property
    def variance(self) -> float:
        return self.sigma if self.sigma_is == "variance" else self.sigma ** 2

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def dim(self) -> int:
        return self.mu.numel()

    def sample(self, B: int, generator: torch.Generator | None = None, constraint="none",
               max_draws: int = 100_000, on_empty: str = "raise") -> Tensor:
        """B thetas (B x dim, float64) drawn from ``N(mu, sigma I)``, restricted to the search
        space by rejection: ``constraint`` is a name of :func:`lfs.search_space.in_search_space`
        (``"positive"``: AM-LFS's space) or a function ``draws (n x dim) -> bool mask (n,)`` (a
        loss family's ``in_space``). Draws outside the space are discarded and redrawn, i.e. the
        Gaussian truncated to the space.

        When mu has left the space, fewer than B of ``max_draws`` draws may lie in it:
        ``on_empty="raise"`` raises ``ValueError``; ``"relax"`` completes the B samples with the
        last raw draws (outside the space; the loss's ``invalid_tau`` handles them) and counts them
        in :attr:`last_relaxed`, so that a search goes on and can say so.
        """
        if on_empty not in ("raise", "relax"):
            raise ValueError(f"on_empty must be 'raise' or 'relax', got {on_empty!r}")
        in_space = constraint if callable(constraint) else (lambda c: in_search_space(c, constraint))
        out, drawn, self.last_relaxed = [], 0, 0
        while sum(len(o) for o in out) < B:
            n = max(B, 64)
            noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
            cand = self.mu.detach() + self.std * noise
            inside = in_space(cand)
            out.append(cand[inside])
            drawn += n
            have = sum(len(o) for o in out)
            if drawn >= max_draws and have < B:
                if on_empty == "raise":
                    raise ValueError(f"fewer than {B} of {drawn} draws of N(mu, sigma I) lie in the search space "
                                     f"({getattr(constraint, '__qualname__', constraint)!r}): mu has left it; lower "
                                     "sigma or use constraint='none'")
                self.last_relaxed = B - have
                out.append(cand[~inside][: B - have])
        return torch.cat(out)[:B]

    def sample_truncated(self, B: int, generator: torch.Generator | None, low: Tensor, high: Tensor) -> Tensor:
        """B draws (B x dim, float64) of ``N(mu, sigma I)`` truncated to the box ``[low, high]``
        (per entry; ``-inf`` / ``inf`` for an open side), by the inverse CDF: exact, one uniform per
        entry, and it never fails, however far mu has moved from the box. (An isotropic Gaussian
        truncated to a box is a product of one-dimensional truncated normals, so the entries are
        drawn independently.) A side-less entry is the plain Gaussian.

        With only a lower bound, the draw is taken from the upper tail's survival function
        (``x = mu - sigma ndtri(u S(alpha))``, S from ``log_ndtr``), which keeps its precision where
        mu lies many sigmas below the bound; past ~37 sigmas, where S underflows, the tail's
        exponential limit ``low + Exp(alpha / sigma)``.
        """
        low = torch.as_tensor(low, dtype=torch.float64).expand(self.dim)
        high = torch.as_tensor(high, dtype=torch.float64).expand(self.dim)
        mu, std = self.mu.detach(), self.std
        u = 1.0 - torch.rand(B, self.dim, generator=generator, dtype=torch.float64)  # in (0, 1]
        alpha, beta = (low - mu) / std, (high - mu) / std
        lower_only = torch.isinf(high) & torch.isfinite(low)
        # lower bound only: x = mu + sigma Phi^-1(1 - u S(alpha)), S = 1 - Phi
        tail = mu - std * torch.special.ndtri(u * torch.exp(torch.special.log_ndtr(-alpha)))
        # past ~37 sigmas S(alpha) underflows: the tail is then exponential, low + Exp(alpha / sigma)
        far = low - std / alpha.clamp_min(1.0) * torch.log(u)
        tail = torch.where(torch.isfinite(tail), tail, far)
        # both (or no) bounds: x = mu + sigma Phi^-1(Phi(alpha) + u (Phi(beta) - Phi(alpha)))
        fa, fb = torch.special.ndtr(alpha), torch.special.ndtr(beta)
        p = (fa + u * (fb - fa)).clamp(torch.finfo(torch.float64).tiny, 1.0 - torch.finfo(torch.float64).eps)
        box = mu + std * torch.special.ndtri(p)
        return torch.where(lower_only, tail, box).clamp(low, high)

    def log_prob(self, thetas: Tensor) -> Tensor:
        """``log g(theta; mu, sigma)`` per sample (differentiable w.r.t. mu)."""
        diff = thetas.to(torch.float64) - self.mu
        var = self.variance
        return -0.5 * (diff.pow(2).sum(-1) / var + self.dim * math.log(2 * math.pi * var))

    def reinforce_gradient(self, thetas: Tensor, rewards: Tensor) -> Tensor:
        """``1/B sum_i R_i grad_mu log g(theta_i)`` with R the normalized rewards (Eq. 20)."""
        R = normalize_rewards(torch.as_tensor(rewards))
        diff = thetas.to(torch.float64) - self.mu.detach()
        return (R[:, None] * diff).mean(0) / self.variance

    def update(self, thetas: Tensor, rewards: Tensor) -> Tensor:
        """One REINFORCE step on mu (ascent on the expected normalized reward); returns mu."""
        thetas, rewards = torch.as_tensor(thetas), torch.as_tensor(rewards)
        if thetas.ndim != 2 or thetas.shape[1] != self.dim or rewards.shape != (thetas.shape[0],):
            raise ValueError(f"expected thetas (B, {self.dim}) and rewards (B,), got "
                             f"{tuple(thetas.shape)} and {tuple(rewards.shape)}")
        if not torch.isfinite(rewards).all():
            raise ValueError("rewards must be finite (floor failed samples before the update)")
        self.optimizer.zero_grad(set_to_none=True)
        grad = -self.reinforce_gradient(thetas, rewards)
        if self.optimizer_name == "natural":  # the natural gradient of the mean: var g (Fisher I / var)
            grad = grad * self.variance
        self.mu.grad = grad
        self.optimizer.step()
        return self.mu.detach().clone()

    def tensors(self) -> list[Tensor]:
        """mu and every tensor of its optimizer's state (what must agree across processes)."""
        state = [v for st in self.optimizer.state.values() for v in st.values() if isinstance(v, Tensor)]
        return [self.mu] + state

    def state_dict(self) -> dict:
        return {"mu": self.mu.detach().clone(), "sigma": self.sigma, "sigma_is": self.sigma_is,
                "lr": self.lr, "optimizer_name": self.optimizer_name,
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        for key in ("sigma", "sigma_is", "optimizer_name"):
            if state[key] != getattr(self, key):
                raise ValueError(f"policy state has {key}={state[key]!r}, this policy has {getattr(self, key)!r}")
        with torch.no_grad():
            self.mu.copy_(state["mu"])
        # deep copy: load_state_dict would otherwise share (and mutate) the caller's Adam moments
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    def __repr__(self) -> str:
        return (f"GaussianPolicy(M={self.M}, sigma={self.sigma}, sigma_is={self.sigma_is!r}, "
                f"lr={self.lr}, optimizer={self.optimizer_name!r})")
