"""The Gaussian REINFORCE searcher (AM-LFS, Section 3.4, Eq. 19-20; Algorithm 1's outer level).

Candidates are vectors of a :class:`~lfs.family.ParametricFamily` drawn from ``N(mu, sigma I)``
(:class:`~lfs.policy.GaussianPolicy`), restricted to the family's space (``constraint``): by the
truncated normal's inverse CDF where the space is a box (the family's ``box``), else by
rejection (its ``in_space``). ``mu`` starts at the family's initial mean (the cross-entropy
candidate). The update uses the Gaussian's score ``(theta - mu) / var``; the truncation's
normalizer adds a term that does not depend on the draw, which zero-mean normalized rewards cancel.

Modes (the paper's method and its controls, options of one searcher rather than branches of the
loop):

* ``learn``: AM-LFS. B draws per epoch; after the epoch mu takes one REINFORCE step on the
  normalized rewards (Eq. 20); the best copy is broadcast.
* ``fixed``: the fixed-distribution ablation (Section 4.6): B fresh draws per epoch from the
  initial distribution, mu never updated, best broadcast.
* ``random``: random search over static losses: B draws once, each copy trained with its own for
  the whole schedule (no broadcast); the best at the end wins.
* ``select``: the control: B copies trained with the family's cross-entropy candidate, best
  broadcast each epoch (best-of-B without loss diversity).

Failed samples (non-finite loss, parameters or reward) take the lowest finite reward of the
epoch in the update (``failed_reward="min"``) or are left out of it (``"drop"``).

A mean that leaves the space never ends a search: when rejection finds fewer than B draws inside
the space, the rest are taken from the raw Gaussian (the loss's ``invalid_tau`` handles tau <= 0),
a warning is logged, the epoch record counts them (``outside_space``) and so does the row
(``samples_outside_space``).
"""
from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from ..family import ParametricFamily
from ..policy import OPTIMIZERS, SIGMA_IS, GaussianPolicy, normalize_rewards
from ..searcher import Searcher, register_searcher

log = logging.getLogger(__name__)

MODES = ("learn", "fixed", "random", "select")
FAILED_REWARD = ("min", "drop")


@register_searcher("gaussian")
class GaussianSearcher(Searcher):
    """REINFORCE on the mean of ``N(mu, sigma I)`` (see the module docstring).

    Args:
        mode: ``learn``, ``fixed``, ``random`` or ``select``.
        sigma, sigma_is: the Gaussian's sigma and its reading ("variance": Eq. 19's covariance
            sigma I; "std").
        lr, policy_optimizer: the mu optimizer ("adam", the paper's implementation; "sgd", Eq. 20 as
            printed; "natural", our choice, not the paper's: SGD on the natural gradient ``var g``,
            whose step is ``lr`` times the sampling std times the rewards' correlation with the
            draws, so that it scales with sigma and shrinks when the rewards carry no signal,
            where Adam moves mu by ~lr per coordinate per epoch whatever sigma and the rewards are;
            see :mod:`lfs.policy`).
        constraint: the family's space restriction for sampling (``"none"``: the raw Gaussian).
        failed_reward: ``"min"`` or ``"drop"`` (see the module docstring).
        mu0: the initial mean (default: the family's :meth:`initial_mean`).
    """

    def __init__(self, mode: str = "learn", sigma: float = 0.2, sigma_is: str = "variance", lr: float = 0.05,
                 policy_optimizer: str = "adam", constraint: str = "positive", failed_reward: str = "min",
                 mu0: list[float] | None = None):
        def need(ok: bool, key: str, what: str, value):
            if not ok:
                raise ValueError(f"search.{key} {what}, got {value!r}")

        need(mode in MODES, "mode", f"must be one of {MODES}", mode)
        need(isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma), "sigma", "must be > 0", sigma)
        need(sigma_is in SIGMA_IS, "sigma_is", f"must be one of {SIGMA_IS}", sigma_is)
        need(isinstance(lr, (int, float)) and lr > 0, "lr", "must be > 0", lr)
        need(policy_optimizer in OPTIMIZERS, "policy_optimizer", f"must be one of {OPTIMIZERS}", policy_optimizer)
        need(failed_reward in FAILED_REWARD, "failed_reward", f"must be one of {FAILED_REWARD}", failed_reward)
        self.mode, self.sigma, self.sigma_is, self.lr = mode, float(sigma), sigma_is, float(lr)
        self.policy_optimizer, self.constraint, self.failed_reward = policy_optimizer, constraint, failed_reward
        self.mu0 = None if mu0 is None else [float(v) for v in mu0]
        self.policy: GaussianPolicy | None = None
        self.static: Tensor | None = None  # random mode: the B losses drawn once
        self._mu_sampled: list[float] = []
        self.relaxed = 0  # samples drawn outside the space because mu had left it (never fatal)
        self._relaxed_now = 0  # the same, this epoch

    def setup(self, family: ParametricFamily) -> None:
        if not isinstance(family, ParametricFamily):
            raise TypeError(f"the gaussian searcher needs a family of real vectors (ParametricFamily); "
                            f"got {type(family).__name__}")
        super().setup(family)
        family.in_space(family.initial_mean()[None], self.constraint)  # an unknown constraint fails here
        mu = family.initial_mean() if self.mu0 is None else torch.tensor(self.mu0, dtype=torch.float64)
        if mu.shape != (family.dim,):
            raise ValueError(f"search.mu0 must have {family.dim} entries for {family!r}, got {tuple(mu.shape)}")
        self.policy = GaussianPolicy(getattr(family, "M", 6), self.sigma, self.sigma_is, self.lr,
                                     self.policy_optimizer, mu=mu)

    @property
    def broadcast(self) -> bool:
        return self.mode != "random"

    @property
    def mu(self) -> Tensor:
        return self.policy.mu.detach()

    def _sample(self, B: int, generator: torch.Generator) -> Tensor:
        box = self.family.bounds(self.constraint)
        if box is not None:  # a box: the truncated Gaussian, exactly (never fails)
            return self.policy.sample_truncated(B, generator, *box)
        thetas = self.policy.sample(B, generator, constraint=lambda c: self.family.in_space(c, self.constraint),
                                    on_empty="relax")
        if self.policy.last_relaxed:
            self._relaxed_now = self.policy.last_relaxed
            self.relaxed += self.policy.last_relaxed
            log.warning("mu has left the search space (%s): %d of %d samples drawn outside it this epoch "
                        "(the loss's invalid_tau handles them); the search goes on", self.constraint,
                        self.policy.last_relaxed, B)
        return thetas

    def propose(self, B: int, generator: torch.Generator) -> Tensor:
        self._mu_sampled, self._relaxed_now = self.mu.tolist(), 0
        if self.mode == "select":
            return self.family.stack([self.family.identity()] * B).to(torch.float64)
        if self.mode == "random":
            if self.static is None:
                self.static = self._sample(B, generator)
            return self.static
        return self._sample(B, generator)

    def observe(self, candidates: Tensor, rewards: Tensor, failed: Tensor) -> dict:
        normalized: list[float] = []
        if self.mode == "learn":
            if self.failed_reward == "min":
                r = torch.where(failed, rewards[~failed].min().expand_as(rewards), rewards)
                update = candidates
            else:
                r, update = rewards[~failed], candidates[~failed]
            normalized = normalize_rewards(r).tolist()
            self.policy.update(update, r)
        record = {"mu": self._mu_sampled, "mu_next": self.mu.tolist(), "normalized_rewards": normalized}
        if self._relaxed_now:  # only where it happened: other records keep their shape
            record["outside_space"] = self._relaxed_now
        return record

    def tensors(self) -> list[Tensor]:
        return self.policy.tensors()

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "static": self.static, "relaxed": self.relaxed}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.static = state["static"]
        self.relaxed = state.get("relaxed", 0)

    def summary(self) -> dict:
        """``final_mu``: the learned mean (None where mu is not learned); ``samples_outside_space``
        where mu left the space and samples were drawn outside it (absent otherwise)."""
        out = {"final_mu": self.mu.tolist() if self.mode == "learn" else None}
        if self.relaxed:
            out["samples_outside_space"] = self.relaxed
        return out

    def config(self) -> dict:
        return {"mode": self.mode, "sigma": self.sigma, "sigma_is": self.sigma_is, "lr": self.lr,
                "policy_optimizer": self.policy_optimizer, "constraint": self.constraint,
                "failed_reward": self.failed_reward, "mu0": self.mu0}
