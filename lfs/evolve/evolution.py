"""Evolutionary search over loss expressions (AutoLoss-Zero, CVPR 2022; CSE-Autoloss, ICLR 2021).

The generic machinery is DEAP's (``deap.gp``, the library CSE-Autoloss itself used): expression
trees over a primitive set, random initial trees (``genHalfAndHalf``), tournament selection and
the three mutations the papers name: insert an operator (``mutInsert``), delete one
(``mutShrink``), replace one (``mutNodeReplacement``); optional one-point crossover. What is ours:
the compilation to torch (:mod:`.expression`), the screening (:mod:`.screening`), the
Gradient-Equivalence-Check table (:mod:`.signature`), the budget, the records and checkpoints.

The variant (our reading of AutoLoss-Zero's "variant of evolutionary algorithm", REPRODUCE.md):
regularized, or aging, evolution. Each generation draws ``children`` parents by tournaments of
``tournament`` individuals of the population, mutates each (and, with probability
``p_crossover``, crosses two), screens the child, and evaluates the survivors with the user's
``evaluate(expression) -> fitness`` (e.g. train a small model from scratch with the loss and
return its validation metric). Evaluated children join the population; the oldest leave
(``variant="aging"``) or the worst (``variant="tournament"``) until ``population`` remain.
``variant="random"`` is random search over the same space, the control of AutoLoss-Zero's
comparison: every child a fresh random tree, the same screening and budget.

A child is rejected, with its reason recorded and counted, when it exceeds the depth or size
limits (``too large``), fails the screening (``invalid value``, ``no gradient``, ``failed
convergence check``, ``rejected by LRP``, ``failed optimization simulation``), or its
evaluation (the proxy training) is not finite (``failed simulation``). A child whose GEC
signature was seen reuses that fitness without training (``GEC duplicate``, counted, not
evaluated).

Determinism: DEAP draws from Python's ``random``; the search keeps its own state of it (seeded
by ``seed``) and swaps it in around every draw, so two searches with one seed and a
deterministic ``evaluate`` give the same history. Checkpoint (``checkpoint=path``): the whole
state (population, the generation's children not yet considered, the GEC table, the records,
the random state) after every child (after every batch with ``evaluate_batch``); :meth:`EvolutionSearch.run` resumes from it, and a search
killed and rerun ends with the same history as one never interrupted.

Parallel evaluation: with ``evaluate_batch(expressions) -> fitnesses`` the survivors of a
generation's screening are evaluated together (the harness sends them to a SLURM job array, one
task per candidate: :mod:`benchmarks.evolution`); the batch is cut so that the history equals the
sequential search's (:meth:`EvolutionSearch._consider_batch`).

Budget: ``max_evaluations`` (losses evaluated, i.e. trained), ``max_explored`` (children
considered: screened out, reused or trained; the fixed budget of CSE-Autoloss's filter ablation)
and/or ``max_seconds`` (wall time of this search, resumed runs included); the result says which
one stopped it.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .. import checkpoint as ckpt
from .expression import CLASSIFICATION_INPUTS, ExpressionError, LossExpression, parse
from .operators import CONSTANTS, OPERATOR_SETS, OPERATORS
from .screening import Screen, ScreeningConfig
from .signature import signature

VARIANTS = ("aging", "tournament", "random")


@dataclass
class EvolutionConfig:
    """The search's settings; every default is our choice (the papers do not give them)."""

    population: int = 20
    children: int = 8  # evaluated per generation (the parallel batch at the full tier)
    tournament: int = 5
    p_crossover: float = 0.0
    variant: str = "aging"
    operators: str = "autoloss_zero"
    init: str = "scratch"  # random trees, or "seeds": the formulas in ``seeds`` (mutated to fill)
    seeds: tuple[str, ...] = ("neg(dot(y, log(softmax(x))))",)
    init_depth: tuple[int, int] = (2, 5)
    max_depth: int = 8
    max_size: int = 30
    max_evaluations: int | None = 100
    max_seconds: float | None = None
    max_explored: int | None = None
    gec: bool = True
    seed: int = 0

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ValueError(f"evolution.{key} {what}, got {getattr(self, key)!r}")

        for key in ("population", "children", "tournament", "max_depth", "max_size"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key, "must be an integer >= 1")
        need(self.tournament <= self.population, "tournament", f"must be <= population ({self.population})")
        need(0.0 <= self.p_crossover <= 1.0, "p_crossover", "must be in [0, 1]")
        need(self.variant in VARIANTS, "variant", f"must be one of {', '.join(VARIANTS)}")
        need(self.operators in OPERATOR_SETS, "operators", f"must be one of {', '.join(OPERATOR_SETS)}")
        need(self.init in ("scratch", "seeds"), "init", "must be scratch or seeds")
        need(self.max_evaluations is None or (isinstance(self.max_evaluations, int) and self.max_evaluations >= 1),
             "max_evaluations", "must be an integer >= 1 (or None)")
        need(self.max_explored is None or (isinstance(self.max_explored, int) and self.max_explored >= 1),
             "max_explored", "must be an integer >= 1 (or None)")
        need(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "must be > 0 (or None)")
        need(self.max_evaluations is not None or self.max_seconds is not None or self.max_explored is not None,
             "max_evaluations", ", max_explored and max_seconds cannot all be None (no budget)")
        self.seeds = tuple(self.seeds)
        self.init_depth = tuple(self.init_depth)


@dataclass
class Evaluated:
    formula: str
    fitness: float | None  # None: rejected
    reason: str | None = None
    generation: int = 0
    seconds: float = 0.0
    lrp_score: float | None = None
    reused: bool = False  # a GEC duplicate: the stored fitness, not trained
    screen_seconds: float = 0.0  # parsing, screening and the GEC signature


@dataclass
class EvolutionResult:
    best: str
    best_fitness: float
    history: list[Evaluated]
    rejected: dict[str, int]
    evaluations: int
    generations: int
    seconds: float
    stopped_by: str  # "max_evaluations", "max_explored" or "max_seconds"


class EvolutionSearch:
    """``EvolutionSearch(evaluate, config, screening=..., checkpoint=...).run()``: see the module
    docstring. ``evaluate(expression)`` returns the fitness to maximize (a non-finite value is a
    failed simulation)."""

    def __init__(self, evaluate: Callable[[LossExpression], float], config: EvolutionConfig | None = None,
                 screening: ScreeningConfig | None = None, checkpoint: str | Path | None = None,
                 inputs: tuple[str, ...] = CLASSIFICATION_INPUTS, on_evaluated: Callable | None = None,
                 simulation: Callable | None = None,
                 evaluate_batch: Callable[[list[LossExpression]], list[float]] | None = None):
        from deap import gp

        self.evaluate, self.config = evaluate, config or EvolutionConfig()
        self.evaluate_batch = evaluate_batch
        self.screen = Screen(screening if screening is not None else ScreeningConfig(verify=False, lrp=False),
                             simulation=simulation)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.inputs, self.on_evaluated = tuple(inputs), on_evaluated
        self.operators = {k: OPERATORS[k] for k in OPERATOR_SETS[self.config.operators]}
        pset = gp.PrimitiveSet("loss", len(self.inputs))
        pset.renameArguments(**{f"ARG{i}": n for i, n in enumerate(self.inputs)})
        for name, op in self.operators.items():
            pset.addPrimitive(_placeholder, op.arity, name=name)
        for c in CONSTANTS:
            pset.addTerminal(c, name=str(c))
        self.pset = pset
        self._rng = random.Random(self.config.seed).getstate()
        self.population: list[tuple[str, float, int]] = []  # (formula, fitness, birth index)
        self.history: list[Evaluated] = []
        self.gec_table: dict[tuple, float] = {}
        self.rejected: dict[str, int] = {}
        self.evaluations = self.generation = self.births = 0
        self.seconds = 0.0
        self.pending: list[str] = []  # this generation's children not yet considered (saved: a resume continues them)
        self._computed: dict[str, float] = {}  # batch mode: fitnesses computed for children not yet settled

    # -- randomness ----------------------------------------------------------------------
    @contextmanager
    def _random(self):
        saved = random.getstate()
        random.setstate(self._rng)
        try:
            yield
        finally:
            self._rng = random.getstate()
            random.setstate(saved)

    # -- trees -----------------------------------------------------------------------------
    def _tree(self, formula: str):
        from deap import gp

        return gp.PrimitiveTree.from_string(formula, self.pset)

    def _random_formula(self) -> str:
        from deap import gp

        lo, hi = self.config.init_depth
        return str(gp.PrimitiveTree(gp.genHalfAndHalf(self.pset, min_=lo, max_=hi)))

    def _mutate(self, formula: str) -> str:
        from deap import gp

        tree = self._tree(formula)
        kind = random.choice(("insert", "delete", "replace"))
        if kind == "insert":
            (tree,) = gp.mutInsert(tree, self.pset)
        elif kind == "delete":
            (tree,) = gp.mutShrink(tree)
        else:
            (tree,) = gp.mutNodeReplacement(tree, self.pset)
        return str(tree)

    def _crossover(self, a: str, b: str) -> str:
        from deap import gp

        child, _ = gp.cxOnePoint(self._tree(a), self._tree(b))
        return str(child)

    def _select(self) -> str:
        entrants = random.sample(self.population, self.config.tournament)
        return max(entrants, key=lambda p: (p[1], -p[2]))[0]

    # -- one candidate ------------------------------------------------------------------------
    def _record(self, item: Evaluated) -> None:
        self.history.append(item)
        if self.on_evaluated is not None:
            self.on_evaluated(item)

    def _screen(self, formula: str) -> tuple:
        """What happens to one child, decided without recording anything:
        ``("reject", reason, lrp_score, seconds)``, ``("reuse", key, seconds)`` (a GEC duplicate:
        the stored fitness) or ``("evaluate", loss, key, lrp_score, seconds)``."""
        c = self.config
        t0 = time.perf_counter()
        try:
            loss = parse(formula, self.inputs, self.operators)
        except ExpressionError:
            return "reject", "invalid value", None, time.perf_counter() - t0
        if loss.tree.depth() > c.max_depth or loss.tree.size() > c.max_size:
            return "reject", "too large", None, time.perf_counter() - t0
        decision = self.screen(loss)
        if not decision.accepted:
            return "reject", decision.reason, decision.lrp_score, time.perf_counter() - t0
        key = signature(loss) if c.gec else None
        if key is not None and key in self.gec_table:
            return "reuse", key, time.perf_counter() - t0
        return "evaluate", loss, key, decision.lrp_score, time.perf_counter() - t0

    def _settle(self, formula: str, outcome: tuple, fitness: float | None = None, took: float = 0.0) -> None:
        """Record one child's outcome (and its evaluation's ``fitness``); an evaluated or reused
        child joins the population; a non-finite fitness is a failed simulation."""
        kind = outcome[0]
        if kind == "reject":
            _, reason, lrp_score, seconds = outcome
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self._record(Evaluated(formula, None, reason, self.generation, lrp_score=lrp_score,
                                   screen_seconds=seconds))
            return
        if kind == "reuse":
            _, key, seconds = outcome
            self.rejected["GEC duplicate"] = self.rejected.get("GEC duplicate", 0) + 1
            self._record(Evaluated(formula, self.gec_table[key], "GEC duplicate", self.generation, reused=True,
                                   screen_seconds=seconds))
            self._join(formula, self.gec_table[key])
            return
        _, _, key, lrp_score, seconds = outcome
        self.evaluations += 1
        if not math.isfinite(fitness):
            self.rejected["failed simulation"] = self.rejected.get("failed simulation", 0) + 1
            self._record(Evaluated(formula, None, "failed simulation", self.generation, took, lrp_score,
                                   screen_seconds=seconds))
            return
        if key is not None:
            self.gec_table[key] = fitness
        self._record(Evaluated(formula, fitness, None, self.generation, took, lrp_score, screen_seconds=seconds))
        self._join(formula, fitness)

    def _consider(self, formula: str) -> None:
        """Screen, look up, or evaluate one child; an evaluated one joins the population."""
        outcome = self._screen(formula)
        if outcome[0] != "evaluate":
            return self._settle(formula, outcome)
        start = time.perf_counter()
        fitness = float(self.evaluate(outcome[1]))
        self._settle(formula, outcome, fitness, time.perf_counter() - start)

    def _consider_batch(self) -> None:
        """The next children of this generation, treated as :meth:`_consider` treats them one by
        one, but with their evaluations in one call of ``evaluate_batch`` (e.g. a SLURM job array).
        The batch ends where the sequential search would stop on ``max_evaluations`` or
        ``max_explored`` (``max_seconds`` is checked after the batch). A child whose GEC signature
        equals that of a child evaluated in the same batch reuses that fitness, as it would one by
        one; if that evaluation failed, the children from it on go back to ``pending`` (it must be
        evaluated itself). Outcomes are recorded in the children's order, so the history is the
        sequential one; the checkpoint is saved after each batch."""
        c = self.config
        plan, first_of, to_evaluate = [], {}, 0
        for formula in self.pending:
            if c.max_explored is not None and len(self.history) + len(plan) >= c.max_explored:
                break
            if c.max_evaluations is not None and self.evaluations + to_evaluate >= c.max_evaluations:
                break
            outcome = self._screen(formula)
            if outcome[0] == "evaluate" and outcome[2] is not None and outcome[2] in first_of:
                outcome = ("reuse", outcome[2], outcome[4])  # settled once its first copy is evaluated
            elif outcome[0] == "evaluate":
                if outcome[2] is not None:
                    first_of[outcome[2]] = len(plan)
                to_evaluate += 1
            plan.append((formula, outcome))
        # children cut off last time (after a failed first copy) were evaluated then: not again
        todo = [(f, o[1]) for f, o in plan if o[0] == "evaluate" and f not in self._computed]
        losses = [loss for _, loss in todo]
        start = time.perf_counter()
        fitnesses = [float(f) for f in self.evaluate_batch(losses)] if losses else []
        if len(fitnesses) != len(losses):
            raise RuntimeError(f"evaluate_batch returned {len(fitnesses)} fitnesses for {len(losses)} candidates")
        took = (time.perf_counter() - start) / max(len(losses), 1)
        self._computed.update(zip((f for f, _ in todo), fitnesses))
        for i, (formula, outcome) in enumerate(plan):
            if outcome[0] == "reuse" and outcome[1] not in self.gec_table:
                plan = plan[:i]  # its first copy failed: from here on, as the sequential search would
                break
            if outcome[0] == "evaluate":
                self._settle(formula, outcome, self._computed.pop(formula), took)
            else:
                self._settle(formula, outcome)
        del self.pending[:len(plan)]

    def _join(self, formula: str, fitness: float) -> None:
        self.births += 1
        self.population.append((formula, fitness, self.births))
        while len(self.population) > self.config.population:
            if self.config.variant == "aging":
                self.population.pop(0)
            else:
                self.population.remove(min(self.population, key=lambda p: (p[1], -p[2])))

    # -- the loop ---------------------------------------------------------------------------
    def _spent(self) -> str | None:
        c = self.config
        if c.max_evaluations is not None and self.evaluations >= c.max_evaluations:
            return "max_evaluations"
        if c.max_explored is not None and len(self.history) >= c.max_explored:
            return "max_explored"
        if c.max_seconds is not None and self.seconds >= c.max_seconds:
            return "max_seconds"
        return None

    def _generation(self) -> list[str]:
        """The next children to consider (drawn with the search's own random state)."""
        c = self.config
        with self._random():
            if c.variant == "random":
                return [self._random_formula() for _ in range(c.children)]
            if len(self.population) < min(c.population, c.tournament):
                if c.init == "seeds" and self.births == 0 and not self.history:
                    return list(c.seeds)
                if c.init == "seeds" and self.population:
                    return [self._mutate(random.choice(self.population)[0]) for _ in range(c.children)]
                return [self._random_formula() for _ in range(c.children)]
            out = []
            for _ in range(c.children):
                if c.p_crossover and random.random() < c.p_crossover:
                    out.append(self._crossover(self._select(), self._select()))
                else:
                    out.append(self._mutate(self._select()))
            return out

    def run(self) -> EvolutionResult:
        if not self.history:
            self.resume()
        stopped = self._spent()
        while stopped is None:
            start = time.perf_counter()
            if not self.pending:
                self.pending = self._generation()
            if self.evaluate_batch is None:
                self._consider(self.pending.pop(0))
            else:
                self._consider_batch()
            if not self.pending:
                self.generation += 1
            self.seconds += time.perf_counter() - start
            self.save()
            stopped = self._spent()
        scored = [h for h in self.history if h.fitness is not None]
        if not scored:
            raise RuntimeError("no candidate could be evaluated within the budget (all were rejected); "
                               "raise the budget or relax the screening")
        best = max(scored, key=lambda h: h.fitness)
        return EvolutionResult(best=best.formula, best_fitness=best.fitness, history=list(self.history),
                               rejected=dict(self.rejected), evaluations=self.evaluations,
                               generations=self.generation, seconds=self.seconds, stopped_by=stopped)

    # -- checkpoint -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": 1, "config": asdict(self.config), "rng": self._rng, "population": self.population,
                "history": [asdict(h) for h in self.history], "gec": self.gec_table, "rejected": self.rejected,
                "evaluations": self.evaluations, "generation": self.generation, "births": self.births,
                "seconds": self.seconds, "pending": list(self.pending)}

    def load_state_dict(self, state: dict) -> None:
        mine = asdict(self.config)
        if state["config"] != mine:
            diff = next(k for k in {**state["config"], **mine} if state["config"].get(k) != mine.get(k))
            raise ValueError(f"the checkpoint was written by a search with evolution.{diff}="
                             f"{state['config'].get(diff)!r}, this one has {mine.get(diff)!r}; "
                             "delete the checkpoint to start over")
        self._rng = state["rng"]
        self.population = [tuple(p) for p in state["population"]]
        self.history = [Evaluated(**h) for h in state["history"]]
        self.gec_table, self.rejected = dict(state["gec"]), dict(state["rejected"])
        self.evaluations, self.generation = state["evaluations"], state["generation"]
        self.births, self.seconds, self.pending = state["births"], state["seconds"], list(state["pending"])

    def save(self) -> None:
        if self.checkpoint is not None:
            ckpt.save(self.checkpoint, self.state_dict())

    def resume(self) -> bool:
        if self.checkpoint is None:
            return False
        found = ckpt.load_with_source(self.checkpoint)
        if found is None:
            return False
        self.load_state_dict(found[0])
        return True


def _placeholder(*args):  # DEAP's primitives need a callable; expressions compile through lfs.evolve
    raise NotImplementedError("compile loss expressions with lfs.evolve.parse")


__all__ = ["EvolutionSearch", "EvolutionConfig", "EvolutionResult", "Evaluated", "VARIANTS"]
