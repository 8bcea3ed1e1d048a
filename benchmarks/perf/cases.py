"""What the speed benchmarks measure, as plain functions (used by ``test_perf.py`` under
pytest-benchmark, by ``run.py``, and in one quick pass by the test suite).

Timing protocol (:func:`paired`): the subject and its reference run back to back in each round,
their order alternating from round to round; the ratio reported is the median over rounds of
subject / reference, the seconds reported the medians of each. On a shared 2-core machine the
load of other processes changes from second to second; pairing makes both sides of a ratio see
the same load.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import lfs
from lfs.auto import AutoExecutor
from lfs.loss import am_lfs_loss_autograd
from lfs.task import sample_seed

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "perf"

#: The issue's targets (ratios unless stated).
TARGETS = {
    "loss_vs_cross_entropy/256x10575": 1.3,
    "loss_vs_cross_entropy/128x10": 3.0,
    "vectorized_vs_sequential_epoch/cnn1d": 0.4,
    "auto_vs_best_epoch": 1.05,
    "mini_tier_minutes": 30.0,
    "smoke_tier_minutes": 2.0,
    "screening_candidates_per_second/256x10": 100.0,  # a floor, not a ceiling
    "strided_patches_vs_unfold/cnn1d": 1.0,  # kept because faster, with the same bits
    "flush_denormal_vs_not/8x1000x64": 1.0,
}

COLUMNS = ["name", "case", "B", "threads", "metric", "value_s", "reference", "reference_s", "ratio", "target", "meets",
           "rounds", "note", "commit", "dirty", "cpu", "torch", "python", "date", "host", "command"]


# ---------------------------------------------------------------------------------- timing
@dataclass
class Paired:
    subject_s: float  # median seconds per call of the subject
    reference_s: float  # median seconds per call of the reference
    ratio: float  # median over rounds of subject / reference
    rounds: int
    subject: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], iterations: int = 1) -> float:
    """Seconds per call of ``fn`` over ``iterations`` calls."""
    _sync()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    _sync()
    return (time.perf_counter() - start) / iterations


class PairedRounds:
    """One call = one round: the subject and the reference, ``iterations`` calls each, in an
    order that alternates between rounds. Hand :meth:`__call__` to ``benchmark.pedantic`` (or call
    it yourself), then read :meth:`result`."""

    def __init__(self, subject: Callable, reference: Callable, iterations: int = 1):
        self.subject, self.reference, self.iterations = subject, reference, iterations
        self.s: list[float] = []
        self.r: list[float] = []

    def __call__(self) -> None:
        if len(self.s) % 2 == 0:
            self.s.append(timed(self.subject, self.iterations))
            self.r.append(timed(self.reference, self.iterations))
        else:
            self.r.append(timed(self.reference, self.iterations))
            self.s.append(timed(self.subject, self.iterations))

    def result(self, skip: int = 0) -> Paired:
        s, r = self.s[skip:], self.r[skip:]
        return Paired(statistics.median(s), statistics.median(r), statistics.median(a / b for a, b in zip(s, r)),
                      len(s), s, r)


def paired(subject: Callable, reference: Callable, rounds: int = 10, iterations: int = 1, warmup: int = 1) -> Paired:
    pr = PairedRounds(subject, reference, iterations)
    for _ in range(warmup + rounds):
        pr()
    return pr.result(skip=warmup)


def iterations_for(fn: Callable, seconds: float = 0.02, cap: int = 1000) -> int:
    """How many calls of ``fn`` take about ``seconds`` (so that fast calls are timed in blocks)."""
    fn()
    t = timed(fn)
    return max(1, min(cap, math.ceil(seconds / max(t, 1e-7))))


# ------------------------------------------------------------------------------------ loss
def sampled_theta(M: int = 6, seed: int = 0) -> torch.Tensor:
    """A random non-identity theta as the search samples it (sigma = 0.2, the paper's space)."""
    return lfs.GaussianPolicy(M, 0.2).sample(1, torch.Generator().manual_seed(seed), constraint="positive")[0]


def loss_pair(N: int, C: int, s: float, seed: int = 0,
              device: str | torch.device | None = None) -> tuple[Callable, Callable, Callable]:
    """``lfs.am_lfs_loss`` forward + backward, ``F.cross_entropy`` forward + backward and
    ``lfs.loss.am_lfs_loss_autograd`` forward + backward on the same cosines (a leaf that requires
    grad), scale and targets; a sampled theta. ``device``: where all of them live (drawn on the
    CPU, then moved, so every device gets the same numbers; default: the CPU)."""
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(N, C, generator=g) * 2 - 1
    target = torch.randint(0, C, (N,), generator=g)
    theta = sampled_theta(seed=seed)
    scale = torch.full((), float(s))  # as a normalized head returns it
    if device is not None:
        cos, target, theta, scale = (t.to(device) for t in (cos, target, theta, scale))
    cos.requires_grad_(True)

    def am_lfs():
        cos.grad = None
        lfs.am_lfs_loss(cos, target, theta, scale).backward()

    def cross_entropy():
        cos.grad = None
        F.cross_entropy(scale * cos, target).backward()

    def am_lfs_autograd():  # the first implementation (autograd through ~60 ops), for comparison
        cos.grad = None
        am_lfs_loss_autograd(cos, target, theta, scale).backward()

    return am_lfs, cross_entropy, am_lfs_autograd


# ----------------------------------------------------------------------------------- tasks
def mini_task(dataset: str, table: str = "cifar10", overrides: tuple[str, ...] = ()):
    """The mini tier's task for ``dataset`` (its model, data, optimizer, schedule and the AM-LFS
    loss), built as ``benchmarks/runner.py`` builds it (plus Hydra ``overrides``, e.g.
    ``model.kwargs.conv=native``). Returns ``(task, plain config)``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from benchmarks import runner
    from benchmarks.config import build_method

    with initialize_config_dir(config_dir=str(ROOT / "benchmarks" / "conf"), version_base="1.3"):
        # +table: the defaults list picks the table's sweep; the dataset's own config sets the task
        cfg = compose(config_name="config", overrides=[f"+table={table}", f"dataset={dataset}", "tier=mini",
                                                                *overrides])
    plain = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    data = runner.load_data(plain)
    family = build_method({**plain, "method": "learn"})["family"]
    task = runner.make_task(plain, data, runner.model_factory(plain, data), family.loss)
    return task, plain


def resnet20_task(batches: int = 2, batch_size: int = 64, val: int = 64):
    """ResNet-20 (CIFAR, bias-free linear head as in the CIFAR table) on random 32x32 images:
    ``batches`` minibatches of ``batch_size`` per epoch (a few, to keep a CPU epoch short)."""
    from benchmarks.models import build_model

    g = torch.Generator().manual_seed(0)
    n = batches * batch_size
    x = torch.randn(n + val, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n + val,), generator=g)

    def loss_fn(output, target, theta):
        cos, scale = output
        return lfs.am_lfs_loss(cos, target, theta, scale)

    task = lfs.SupervisedTask(lambda: build_model("resnet20", 10),
                              lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4), loss_fn,
                              (x[:n], y[:n]), (x[n:], y[n:]), batch_size=batch_size)
    return task, {"train": {"epochs": 182}}  # the full tier's ResNet-20 schedule


def thetas(B: int, M: int = 6, seed: int = 0) -> torch.Tensor:
    return lfs.GaussianPolicy(M, 0.2).sample(B, torch.Generator().manual_seed(seed), constraint="positive")


class EpochRunner:
    """One executor on a fresh state of ``task``; each call trains (and scores) one epoch."""

    def __init__(self, task, name: str, B: int, theta: torch.Tensor):
        torch.manual_seed(0)
        state = task.make_state()
        self.executor = AutoExecutor() if name == "auto" else lfs.make_executor(name)
        start = time.perf_counter()
        self.executor.setup(task, B, state)
        self.setup_s = time.perf_counter() - start
        self.theta, self.B, self.epoch = theta, B, 0

    def __call__(self) -> None:
        seeds = [sample_seed(0, self.epoch, i) for i in range(self.B)]
        self.executor.train(self.theta, self.epoch, seeds)
        self.epoch += 1


class ExecutorRounds:
    """The executors ``names`` on fresh states of ``task``; one call = one round = one epoch of
    each, in an order that rotates between rounds. ``warmup()`` first (an untimed epoch each).
    ``runners["auto"].setup_s`` is auto's set-up, its probe included."""

    def __init__(self, task, B: int, names=("sequential", "vectorized", "auto"), extra: dict | None = None):
        """``extra``: more runners, by name: ``{name: (task, executor name)}`` (e.g. the sequential
        executor on the same model with another implementation), timed in the same rounds."""
        th = thetas(B)
        self.names = tuple(names) + tuple(extra or ())
        self.runners = {n: EpochRunner(task, n, B, th) for n in names}
        for n, (t, executor) in (extra or {}).items():
            self.runners[n] = EpochRunner(t, executor, B, th)
        self.seconds: dict[str, list[float]] = {n: [] for n in self.names}

    def warmup(self) -> None:
        for r in self.runners.values():
            r()

    def __call__(self) -> None:
        k = len(self.seconds[self.names[0]]) % len(self.names)
        for n in self.names[k:] + self.names[:k]:
            self.seconds[n].append(timed(self.runners[n]))

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def paired_ratio(self, name: str, reference: Callable[[int], float]) -> float:
        """Median over rounds of ``seconds[name][k] / reference(k)``."""
        return statistics.median(t / reference(k) for k, t in enumerate(self.seconds[name]))


# ------------------------------------------------------------------------------------ rows
def provenance() -> dict:
    from benchmarks.results import provenance as prov

    p = prov()
    return {"commit": p["git_commit"], "dirty": p["git_dirty"], "cpu": p["cpu"], "torch": p["versions"]["torch"],
            "python": p["versions"]["python"], "date": p["date"], "host": p["host"], "command": p["command"]}


def row(name: str, case: str, value_s: float, reference: str = "", reference_s: float | None = None,
        ratio: float | None = None, target: float | None = None, meets: bool | None = None, B: int | None = None,
        rounds: int | None = None, note: str = "", threads: int | None = None, **extra) -> dict:
    if meets is None and target is not None and ratio is not None:
        meets = ratio <= target
    out = {"name": name, "case": case, "B": B, "threads": threads if threads is not None else torch.get_num_threads(),
           "value_s": value_s, "reference": reference, "reference_s": reference_s, "ratio": ratio,
           "target": target, "meets": meets, "rounds": rounds, "note": note}
    out.update(provenance())
    out.update(extra)
    return out


def _key(r: dict) -> tuple:
    return (r["name"], r["case"], str(r.get("B") or ""), str(r.get("threads") or ""))


def write_rows(rows: list[dict], path: Path | str | None = None, columns: list[str] = COLUMNS,
               replace: tuple[str, ...] = ()) -> Path:
    """Merge ``rows`` into the CSV at ``path`` (default ``results/perf/cpu.csv``) with ``columns``
    (``gpu.py``: :data:`GPU_COLUMNS`): a row replaces the previous one of the same (name, case, B,
    threads); the others stay (columns an older file lacks are left empty), except the rows named
    in ``replace``, which ``rows`` replace as a set (a tier timing's per-table rows: a table no
    longer in the run keeps no row of an older run). Written atomically
    (:func:`lfs.checkpoint.atomic_write`)."""
    from lfs.checkpoint import atomic_write

    path = Path(path) if path is not None else RESULTS / "cpu.csv"
    old: dict[tuple, dict] = {}
    if path.exists():
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                if r["name"] not in replace:
                    old[_key(r)] = {k: r.get(k) or "" for k in columns}
    for r in rows:
        old[_key(r)] = {k: _fmt(r.get(k)) for k in columns}
    out = io.StringIO(newline="")
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in sorted(old.values(), key=lambda r: (r["name"], r["case"], str(r["B"]), str(r["threads"]))):
        w.writerow(r)
    atomic_write(path, out.getvalue().encode())
    return path


#: ``results/perf/tier_runs.csv``: every timed run of a whole tier, one row each, never replaced
#: (``cpu.csv`` keeps only the latest): how much the same computation's time varies between runs.
#: ``jobs_s``: the sum of the computed jobs' own times (``wall_seconds``; reused rows excluded);
#: ``source``: where a row came from when it was not written by the run itself.
RUN_COLUMNS = COLUMNS + ["jobs_s", "source"]


def append_run(row: dict, path: Path | str | None = None) -> Path:
    """Add one tier timing ``row`` (:func:`row` plus ``jobs_s``) to the run log at ``path``
    (default ``results/perf/tier_runs.csv``), keeping every earlier row in its order. Written
    atomically; a file whose header is not :data:`RUN_COLUMNS` is refused (``ValueError``) rather
    than rewritten."""
    from lfs.checkpoint import atomic_write

    path = Path(path) if path is not None else RESULTS / "tier_runs.csv"
    text = path.read_bytes().decode() if path.exists() else ""  # bytes: the rows stay exactly as written
    if text and text.splitlines()[0].split(",") != RUN_COLUMNS:
        raise ValueError(f"{path} does not have the run log's columns ({','.join(RUN_COLUMNS)}); move it away")
    out = io.StringIO(newline="")
    w = csv.DictWriter(out, fieldnames=RUN_COLUMNS, extrasaction="ignore")
    if not text:
        w.writeheader()
    w.writerow({k: _fmt(row.get(k)) for k in RUN_COLUMNS})
    if text and not text.endswith("\n"):
        text += "\r\n"  # csv's own line end
    atomic_write(path, (text + out.getvalue()).encode())
    return path


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ------------------------------------------------------------------------- GPU rows (gpu.py)
#: ``results/perf/gpu.csv``: the columns of ``cpu.csv`` plus ``device`` (the accelerator by name,
#: e.g. "NVIDIA H100 80GB HBM3 (cuda:0, CUDA 13.2, 79 GiB)", or "cpu"); ``cpu`` stays the host CPU.
GPU_COLUMNS = COLUMNS[:COLUMNS.index("torch")] + ["device"] + COLUMNS[COLUMNS.index("torch"):]


# ------------------------------------------------------------------- evolved losses: screening
def screening_pool(n: int = 64, seed: int = 0) -> list:
    """``n`` random loss expressions of AutoLoss-Zero's operator set (DEAP's half-and-half trees,
    depth 2-5), the kind of children a search from scratch screens."""
    from lfs.evolve.evolution import EvolutionConfig, EvolutionSearch
    from lfs.evolve import parse

    search = EvolutionSearch(lambda loss: 0.0, EvolutionConfig(seed=seed))
    out = []
    with search._random():
        while len(out) < n:
            out.append(parse(search._random_formula(), operators=search.operators))
    return out


def screening_pair(pool: list, lrp_steps: int | None = None):
    """(screen every candidate of ``pool`` with validity + LRP + GEC, as a search does; the
    reference: ``lrp_steps`` cross-entropy forward+backward steps at the LRP's shape per candidate,
    the least an LRP can cost with a hand-written loss)."""
    from lfs.evolve import signature
    from lfs.evolve.screening import Screen, ScreeningConfig

    cfg = ScreeningConfig(verify=False) if lrp_steps is None else ScreeningConfig(verify=False, lrp_steps=lrp_steps)
    screen = Screen(cfg)

    def subject():
        for loss in pool:
            if screen(loss).accepted:
                signature(loss)

    x = screen.x0.clone().requires_grad_(True)

    def reference():
        for _ in pool:
            for _ in range(cfg.lrp_steps):
                (g,) = torch.autograd.grad(F.cross_entropy(x, screen.t0, reduction="sum"), x)

    return subject, reference, cfg


# ------------------------------------------------------------------------- CPU numerics
def unfold_conv1d(h: torch.Tensor, conv) -> torch.Tensor:
    """matmul_conv1d as it was before its patches became strided slices (``Tensor.unfold``): the
    reference of the patches benchmark, and of tests/test_models.py's bit-for-bit test."""
    import torch.nn.functional as F

    (k,), (stride,), (pad,) = conv.kernel_size, conv.stride, conv.padding
    patches = F.pad(h, (0, 0, pad, pad)).unfold(1, k, stride)
    n, length = patches.shape[:2]
    out = patches.reshape(n * length, -1) @ conv.weight.reshape(conv.weight.shape[0], -1).t() + conv.bias
    return out.view(n, length, -1)


def conv_with(conv, weight: torch.Tensor, bias: torch.Tensor):
    """``conv``'s geometry with other parameters (one vmapped copy's), as matmul_conv1d and
    :func:`unfold_conv1d` read it."""
    from types import SimpleNamespace

    return SimpleNamespace(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                           dilation=conv.dilation, groups=conv.groups, padding_mode=conv.padding_mode,
                           weight=weight, bias=bias)


def patches_pair(B: int = 8, n: int = 100, seed: int = 0):
    """(subject, reference): forward + backward of the mini cnn1d's three convolutions over B
    vmapped copies and an mnist1d batch of n (length 40, 25 channels), with the strided-slice
    patches of :func:`benchmarks.models.mini.matmul_conv1d` and with ``unfold``'s."""
    import torch.nn as nn
    from torch.func import vmap

    from benchmarks.models.mini import matmul_conv1d

    g = torch.Generator().manual_seed(seed)
    layers = []
    for c, k in ((1, 5), (25, 3), (25, 3)):
        conv = nn.Conv1d(c, 25, k, stride=2, padding=1)
        layers.append((conv, torch.stack([conv.weight.detach()] * B).requires_grad_(),
                       torch.stack([conv.bias.detach()] * B).requires_grad_()))
    x = torch.randn(B, n, 40, 1, generator=g)

    def make(conv_fn):
        def net(params, xb):
            h = xb
            for (conv, _, _), (w, b) in zip(layers, params):
                h = torch.relu(conv_fn(h, conv_with(conv, w, b)))
            return h.square().sum()

        def step():
            params = [(w, b) for _, w, b in layers]
            vmap(net)(params, x).sum().backward()

        return step

    return make(matmul_conv1d), make(unfold_conv1d)


def denormal_pair(shape=(8, 1000, 64)):
    """(subject, reference): ``a * b + a`` on float32 tensors of ``shape`` (the mini face head's
    B x classes x embedding) whose ``a`` is denormal (1e-39, as momentum buffers and softmax
    gradients become late in training), with ``torch.set_flush_denormal(True)`` and without.
    Each call sets its mode; the caller restores the process's."""
    a = torch.full(shape, 1e-39)
    b = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def flushed():
        torch.set_flush_denormal(True)
        return a * b + a

    def not_flushed():
        torch.set_flush_denormal(False)
        return a * b + a

    return flushed, not_flushed
