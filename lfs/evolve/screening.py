"""Screening a candidate loss before (or instead of) training with it: the checks of AutoLoss-Zero
(CVPR 2022, Section 3.3) and CSE-Autoloss (ICLR 2021, Section 3.2), each switchable.

* **Validity** (always): on a fixed random batch the loss is finite, depends on the prediction
  (a gradient that is not zero everywhere) and has a finite gradient. Reasons ``invalid value``,
  ``no gradient``.
* **Convergence property verification** (CSE-Autoloss): along paths on which the target's
  probability p_y rises from ~0 to ~1 (the target logit raised, the others fixed), the loss must not
  increase, and it must be lowest at the end (nearest the target). Reason
  ``failed convergence check``.
* **Model optimization simulation** (CSE-Autoloss, off by default): a few training steps of a
  fresh model on one example per class (:mod:`.simulation`); it needs a task, so the caller
  passes ``simulation=`` to :class:`Screen`. Reason ``failed optimization simulation``.
* **Loss-Rejection Protocol** (LRP, AutoLoss-Zero): randomly initialized predictions are optimized
  directly with the candidate (no network), and the score is
  ``g(L) = mean_b metric(y_hat_b*(L), y_b) - metric(y_hat_b, y_b)``; a candidate with
  ``g(L) < threshold`` is rejected. Reason ``rejected by LRP``.
* **Gradient-Equivalence-Check** (GEC, AutoLoss-Zero): see :mod:`.signature`; a candidate whose
  signature was seen reuses the stored fitness (the searcher keeps that table).

Every number below that the papers leave open is ours and a field of :class:`ScreeningConfig`
(REPRODUCE.md, "Evolved losses"): the LRP's batch (256 x 10), steps (20), optimizer (SGD,
lr 1.0 on the logits), threshold (0.0: the metric must improve) and metric (accuracy, pluggable);
the verification's paths (64 samples x 21 steps of the target logit from -10 to +10 above the
others).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

REASONS = ("invalid value", "no gradient", "failed convergence check", "rejected by LRP",
           "failed optimization simulation", "GEC duplicate")


@dataclass
class ScreeningConfig:
    verify: bool = True  # CSE-Autoloss's convergence property verification
    lrp: bool = True  # AutoLoss-Zero's Loss-Rejection Protocol
    lrp_samples: int = 256
    lrp_classes: int = 10
    lrp_steps: int = 20
    lrp_lr: float = 1.0
    lrp_threshold: float = 0.0
    verify_samples: int = 64
    verify_steps: int = 21
    verify_tolerance: float = 1e-9
    simulate: bool = False  # CSE-Autoloss's model optimization simulation (needs a task: Screen(simulation=))
    simulate_steps: int = 20
    simulate_per_class: int = 1
    simulate_threshold: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for key in ("lrp_samples", "lrp_classes", "lrp_steps", "verify_samples", "verify_steps", "simulate_steps",
                    "simulate_per_class"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < (2 if "classes" in key else 1):
                raise ValueError(f"screening.{key} must be a positive integer, got {getattr(self, key)!r}")
        if not self.lrp_lr > 0:
            raise ValueError(f"screening.lrp_lr must be > 0, got {self.lrp_lr!r}")


@dataclass
class Decision:
    accepted: bool
    reason: str | None = None
    lrp_score: float | None = None


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample 0/1 correctness of the argmax (the LRP's default metric)."""
    return (logits.argmax(-1) == target).to(logits.dtype)


class Screen:
    """The checks of the module docstring with their fixed inputs, built once (float32, CPU)."""

    def __init__(self, config: ScreeningConfig | None = None,
                 metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = accuracy,
                 simulation: Callable[[object], float] | None = None):
        self.config = config or ScreeningConfig()
        self.metric, self.simulation = metric, simulation
        c = self.config
        if c.simulate and simulation is None:
            raise ValueError("screening.simulate needs a model optimization simulation: pass "
                             "simulation=lfs.evolve.simulation.OptimizationSimulation(task) (the harness does)")
        g = torch.Generator().manual_seed(c.seed)
        self.x0 = torch.randn(c.lrp_samples, c.lrp_classes, generator=g)
        self.t0 = torch.randint(0, c.lrp_classes, (c.lrp_samples,), generator=g)
        self.y0 = F.one_hot(self.t0, c.lrp_classes).float()
        # verification paths: base logits, target raised from -10 to +10 above the others
        base = torch.randn(c.verify_samples, c.lrp_classes, generator=g) * 0.5
        t = torch.randint(0, c.lrp_classes, (c.verify_samples,), generator=g)
        y = F.one_hot(t, c.lrp_classes).float()
        steps = torch.linspace(-10.0, 10.0, c.verify_steps)
        others_max = base.masked_fill(y.bool(), -torch.inf).amax(-1, keepdim=True)
        target_logit = others_max + steps[:, None, None]  # (S, N, 1)
        self.vx = torch.where(y.bool(), target_logit, base.expand(c.verify_steps, -1, -1)).reshape(-1, c.lrp_classes)
        self.vy = y.repeat(c.verify_steps, 1)

    def validity(self, loss) -> str | None:
        x = self.x0.clone().requires_grad_(True)
        try:
            value = loss(x, self.y0)
        except (RuntimeError, ValueError) as e:  # e.g. a shape the operators cannot broadcast
            return f"invalid value ({type(e).__name__})"
        if value.shape != (x.shape[0],):
            return "invalid value (shape)"
        if not bool(torch.isfinite(value).all()):
            return "invalid value"
        if not value.requires_grad:
            return "no gradient"
        (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
        if grad is None or not bool(grad.abs().sum() > 0):
            return "no gradient"
        if not bool(torch.isfinite(grad).all()):
            return "invalid value (gradient)"
        return None

    def verification(self, loss) -> bool:
        """CSE-Autoloss's convergence property: non-increasing along each path, lowest at its end."""
        c = self.config
        with torch.no_grad():
            v = loss(self.vx, self.vy).reshape(c.verify_steps, c.verify_samples)
        if not bool(torch.isfinite(v).all()):
            return False
        tol = c.verify_tolerance * (1 + v.abs())
        non_increasing = bool((v[1:] <= v[:-1] + tol[1:]).all())
        lowest_at_end = bool((v[-1] <= v.min(dim=0).values + tol[-1]).all())
        strictly_better = bool((v[-1] < v[0]).any())  # not constant along the paths
        return non_increasing and lowest_at_end and strictly_better

    def lrp_score(self, loss) -> float:
        """``g(L)``: the metric after ``lrp_steps`` SGD steps on the predictions, minus before."""
        c = self.config
        x = self.x0.clone().requires_grad_(True)
        before = self.metric(self.x0, self.t0).mean()
        for _ in range(c.lrp_steps):
            value = loss(x, self.y0).sum()
            (grad,) = torch.autograd.grad(value, x)
            if not bool(torch.isfinite(grad).all()):
                return float("-inf")
            with torch.no_grad():
                x -= c.lrp_lr * grad
        with torch.no_grad():
            return float(self.metric(x, self.t0).mean() - before)

    def __call__(self, loss) -> Decision:
        reason = self.validity(loss)
        if reason is not None:
            return Decision(False, reason)
        if self.config.verify and not self.verification(loss):
            return Decision(False, "failed convergence check")
        score = None
        if self.config.lrp:
            score = self.lrp_score(loss)
            if not score >= self.config.lrp_threshold or score != score:
                return Decision(False, "rejected by LRP", score)
        if self.config.simulate:
            gained = self.simulation(loss)
            if not gained > self.config.simulate_threshold:
                return Decision(False, "failed optimization simulation", score)
        return Decision(True, None, score)
