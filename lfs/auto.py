"""``auto``: pick the faster executor for this task, model and B by timing both on it.

Neither executor wins everywhere. ``vectorized`` trains the B copies as one vmapped model and
wins when a step of one copy is mostly per-op overhead (small MLPs and CNNs on a CPU: one call
instead of B); ``sequential`` wins when one copy already keeps the hardware busy (ResNet-20 on a
CPU, where vmapped convolutions become slow grouped convolutions). Where the crossover lies
depends on the model, the batch size, B, the device and the thread count, so no fixed rule is
right everywhere: :func:`choose_executor` measures.

The probe. Each candidate is set up on a *clone* of the state (nothing of the caller's state,
data order or global RNG state is touched) and trains real minibatches of the real task with B
copies (sequential: ``probe_copies`` copies, scaled to B, since its cost is linear in B). One
epoch is estimated as (minibatches per epoch) x (seconds of a training step of the B copies)
+ (seconds of an epoch without training: validation, reward); steps are timed in calls of a few
minibatches with a one-example validation, the fixed part in one call without minibatches and
with the real validation. A warm-up call first; the measured calls alternate between the
candidates, and the fastest of each candidate's calls counts. A vectorized probe that fails (out
of memory, a model that cannot be vmapped) means sequential.

Its cost, paid once in :meth:`AutoExecutor.setup`, is a few training steps of each candidate
(measured in ``benchmarks/perf`` on 2 CPU cores: 0.1 s for the mini digits MLP, where one
candidate is decisively faster after one step; 0.3-2.4 s for the mini mnist1d CNN, a small share of its
24-epoch run (under 4 %); 22-39 s for ResNet-20 with B = 8, about 16 steps of the 8 copies, against 351
steps per epoch of a CIFAR-10 run of 182 epochs).
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
import time

import torch

from .executors import Executor, SequentialExecutor, VectorizedExecutor, clone_state
from .family import make_family
from .task import SupervisedTask, Task, TrainState, sample_seed

log = logging.getLogger(__name__)

#: What :func:`choose_executor` chooses between.
CANDIDATES = ("sequential", "vectorized")


def _build(name: str) -> Executor:
    if name == "sequential":
        return SequentialExecutor()
    if name == "vectorized":
        return VectorizedExecutor()
    raise ValueError(f"auto chooses between {CANDIDATES}, got {name!r}")


def _probe_task(task: SupervisedTask, steps: int, validate: bool = False) -> SupervisedTask:
    """A shallow copy of ``task`` whose epoch is its first ``steps`` minibatches. Without
    ``validate`` its validation is one example with a constant reward (a training step is what is
    timed); with it, the task's own validation and reward."""
    probe = copy.copy(task)
    train_batches, val_batches = task.train_batches, task.val_batches

    def limited_train(seed: int):
        return itertools.islice(train_batches(seed), steps)

    def one_example():
        for x, y in val_batches():
            yield x[:1], y[:1]
            return

    probe.train_batches = limited_train
    if not validate:
        probe.val_batches = one_example
        probe.reward_fn = lambda scores, targets: 0.0
    return probe


def _sync(task: SupervisedTask) -> None:
    device = getattr(task, "device", None)
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _epoch_seconds(executor: Executor, task: SupervisedTask, thetas: torch.Tensor, epoch: int) -> float:
    seeds = [sample_seed(0, epoch, i) for i in range(len(thetas))]
    _sync(task)
    start = time.perf_counter()
    executor.train(thetas, epoch, seeds)
    _sync(task)
    return time.perf_counter() - start


def probe_executors(task: SupervisedTask, B: int, state: TrainState, M: int = 6, steps: int = 2,
                    repeats: int = 3, probe_copies: int = 4, min_seconds: float = 0.1,
                    max_steps: int = 20, decisive: float = 2.0, family=None) -> dict[str, dict[str, float]]:
    """Estimated seconds of one epoch of all B copies, for each of :data:`CANDIDATES`, measured on
    clones of ``state`` (see the module docstring): ``{name: {"epoch", "step", "fixed"}}``, where
    ``epoch = minibatches per epoch * step + fixed``, ``step`` the seconds of one training step of
    the B copies and ``fixed`` those of an epoch without training steps (validation, reward,
    scheduler). ``inf`` for a candidate that failed.

    Per candidate: a warm-up call, one call of one minibatch (a first ``step``), one of none with
    the real validation (``fixed``). If one candidate's epoch is then ``decisive`` times shorter
    than the other's, that is the answer (a ResNet on a CPU need not be timed for long to lose
    vmapped). Otherwise ``steps`` minibatches per measured call, raised (up to ``max_steps``, and
    no further than the epoch has) until a call takes about ``min_seconds``, and ``repeats``
    measured calls per candidate, alternating between candidates; the fastest counts.

    The copies train with the family's cross-entropy candidate (``family``: a stackable
    :class:`~lfs.family.LossFamily`; None: AM-LFS's identity theta with M intervals); a loss's
    cost does not depend on its candidate's values.
    """
    n_batches = task.num_batches()
    if n_batches == 0:
        raise ValueError("the task has no training minibatch")
    copies = {"sequential": max(1, min(probe_copies, B)), "vectorized": B}
    family = family if family is not None else make_family("piecewise_linear", M=M)
    thetas = {k: family.stack([family.identity()] * n) for k, n in copies.items()}
    runners: dict[str, Executor] = {}
    out = {k: {"epoch": math.inf, "step": math.inf, "fixed": math.inf} for k in CANDIDATES}
    device = getattr(task, "device", None)
    cuda = [torch.device(device).index or 0] if device is not None and torch.device(device).type == "cuda" else []

    def call(name: str, probe: SupervisedTask, epoch: int) -> float:
        ex = runners[name]
        ex.task = probe  # the executors read their task at train time
        return _epoch_seconds(ex, probe, thetas[name], epoch) * B / copies[name]

    def estimate(name: str) -> float:
        o = out[name]
        o["epoch"] = n_batches * o["step"] + o["fixed"]
        return o["epoch"]

    with torch.random.fork_rng(devices=cuda):  # nothing of the global RNG streams is consumed
        one, none = _probe_task(task, 1), _probe_task(task, 0, validate=True)
        for name in CANDIDATES:
            try:
                runners[name] = ex = _build(name)
                ex.setup(one, copies[name], clone_state(task, state))
                call(name, one, 0)  # warm-up
                out[name]["step"] = call(name, one, 1)
                out[name]["fixed"] = call(name, none, 2)
                estimate(name)
            except (RuntimeError, TypeError, ValueError, NotImplementedError) as e:  # OOM, not vmappable, ...
                log.info("auto executor: %s failed in the probe (%s: %s)", name, type(e).__name__, e)
                runners.pop(name, None)
                out[name] = {"epoch": math.inf, "step": math.inf, "fixed": math.inf}
                if cuda:
                    torch.cuda.empty_cache()
        if not runners:
            raise RuntimeError("auto executor: no candidate executor could train the task")
        epochs = sorted(o["epoch"] for o in out.values())
        if len(runners) < 2 or epochs[1] >= decisive * epochs[0]:
            return out
        # enough minibatches per call that the fastest candidate's call takes ~min_seconds
        fastest = min(out[n]["step"] * copies[n] / B for n in runners)
        k = max(1, min(steps, n_batches))
        if fastest > 0:
            k = max(k, min(max_steps, n_batches, math.ceil(min_seconds / fastest)))
        probe = _probe_task(task, k)
        best = {n: math.inf for n in runners}
        for r in range(repeats):
            for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
                best[name] = min(best[name], call(name, probe, 3 + r))
        for name, t in best.items():  # (the call's one-example validation is negligible next to k steps)
            out[name]["step"] = t / k
            estimate(name)
    return out


def choose_executor(task: Task, B: int, state: TrainState, M: int = 6, family=None, **probe_kwargs) -> str:
    """``"sequential"`` or ``"vectorized"``, whichever trains ``task``'s B copies faster.

    Not a :class:`~lfs.task.SupervisedTask` (the vectorized executor cannot run it), a loss family
    that cannot stack its candidates, or B = 1 (nothing to vectorize): ``"sequential"`` without
    probing. Otherwise both are timed on clones of ``state`` (:func:`probe_executors`); ``state``
    itself is not modified.
    """
    return _choose(task, B, state, M, family=family, **probe_kwargs)[0]


def _choose(task: Task, B: int, state: TrainState, M: int = 6, family=None, **probe_kwargs) -> tuple[str, dict]:
    if not isinstance(task, SupervisedTask):
        return "sequential", {"reason": f"{type(task).__name__} is not a SupervisedTask"}
    if family is not None and not family.stackable:
        return "sequential", {"reason": f"loss family {family.name or type(family).__name__!r} cannot stack candidates"}
    if B <= 1:
        return "sequential", {"reason": "B = 1"}
    start = time.perf_counter()
    est = probe_executors(task, B, state, M, family=family, **probe_kwargs)
    chosen = min(CANDIDATES, key=lambda n: est[n]["epoch"])
    info = {"estimate": est, "probe_seconds": time.perf_counter() - start}
    log.info("auto executor: %s (estimated seconds per epoch of %d copies: %s; probe %.2fs)", chosen, B,
             ", ".join(f"{n} {e['epoch']:.4g}" for n, e in est.items()), info["probe_seconds"])
    return chosen, info


class AutoExecutor(Executor):
    """Chooses ``sequential`` or ``vectorized`` in :meth:`setup` (:func:`choose_executor`), then
    is that executor: every method and attribute is the chosen executor's.

    ``chosen`` names it; ``probe`` holds the measured seconds per step and the probe's cost.
    Results are exactly those of the chosen executor (the probe runs on clones, outside the
    global RNG stream). ``M``: the thetas' size used by the probe (the loss's cost does not depend
    on the values); ``force``: skip the probe and use this executor (for tests, or to pin a choice).
    """

    def __init__(self, M: int = 6, force: str | None = None, **probe_kwargs):
        if force is not None and force not in CANDIDATES:
            raise ValueError(f"force must be one of {CANDIDATES}, got {force!r}")
        self.M, self.force, self.probe_kwargs = M, force, probe_kwargs
        self.chosen: str | None = None
        self.probe: dict = {}
        self.executor: Executor | None = None

    def setup(self, task: Task, B: int, state: TrainState, family=None) -> None:
        if self.force is not None:
            self.chosen, self.probe = self.force, {"reason": "forced"}
        else:
            self.chosen, self.probe = _choose(task, B, state, self.M, family=family, **self.probe_kwargs)
        self.executor = _build(self.chosen)
        self.executor.setup(task, B, state, family=family)

    def __getattr__(self, name: str):
        # only reached for attributes not found normally: the chosen executor's (B, states, ...)
        executor = self.__dict__.get("executor")
        if executor is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (before setup)")
        return getattr(executor, name)

    def __repr__(self) -> str:
        return f"AutoExecutor(chosen={self.chosen!r})"


def _delegate(name: str):
    def method(self, *args, **kwargs):
        if self.executor is None:
            raise RuntimeError(f"AutoExecutor.{name} before setup")
        return getattr(self.executor, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"The chosen executor's ``{name}``."
    return method


# Every public method of the interface (train, broadcast, export, the checkpoint methods, and any
# added later) is the chosen executor's, not the base class's default.
for _name, _member in list(vars(Executor).items()):
    if not _name.startswith("_") and callable(_member) and _name != "setup":
        setattr(AutoExecutor, _name, _delegate(_name))
del _name, _member

