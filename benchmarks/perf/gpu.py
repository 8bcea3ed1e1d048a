"""GPU speed figures, one command (on a machine with a CUDA GPU):

    python benchmarks/perf/gpu.py                          # on cuda; writes results/perf/gpu.csv
    python benchmarks/perf/gpu.py --out "$OUT/gpu.csv"     # the same, the CSV elsewhere
    python benchmarks/perf/gpu.py --device cpu --quick     # a dry run of the same code, tiny sizes (~15 s)

Without ``--device`` it runs on ``cuda``, and exits with status 2 and one line ("no CUDA device;
pass --device cpu for a dry run") where there is none. Rows are merged into the CSV after every
configuration (the eager variants first, ``torch.compile`` last), so an interrupted run keeps what
it measured; under a tight time limit run it as two commands, ``--variants
fp32,channels_last,bf16,bf16+channels_last`` and then ``--only resnet --variants compile``: the
Table 2 estimate reads every row of the same device in the CSV. Without ``--out``, a dry run
(``--quick``, or a device other than CUDA) writes to a temporary file, never to results/.

What it times, on the device (wall clock around CUDA-synchronized calls, :func:`cases.timed`):

1. ``loss_vs_cross_entropy`` / ``loss_autograd_vs_cross_entropy``: ``lfs.am_lfs_loss`` (and the
   autograd version) forward + backward against ``F.cross_entropy`` forward + backward at
   (256, 10575), s = 64 and (128, 10), s = 10: the CPU suite's protocol (:func:`cases.paired`;
   ratio = median over rounds of the per-round ratio), tensors on the device.
2. ResNet-20 (``build_model("resnet20", 10)``, the CIFAR table's model) trained with the AM-LFS
   loss (``lfs.am_lfs_loss`` on its (cos, scale) head, a sampled theta per copy) and SGD lr 0.1,
   momentum 0.9, weight decay 1e-4, on synthetic CIFAR-shaped data resident on the device (32x32x3;
   no data loading, augmentation or host-to-device copy is timed). Batch size, minibatches per
   epoch and validation size are the full tier's (``benchmarks/conf/dataset/cifar10.yaml``: batch
   128, 45,000 training images -> 351 minibatches, a 5,000-image validation split). For one model
   (``single``: the sequential executor with B = 1) and for B = 8 and 32 copies with lfs's
   ``sequential`` and ``vectorized`` executors (``lfs.make_executor``), each variant:

   * ``fp32``: as the library runs it;
   * ``channels_last``: weights and inputs in channels-last memory format;
   * ``bf16``: the model's forward under ``torch.autocast(dtype=torch.bfloat16)``, its outputs
     cast back to float32 for the loss;
   * ``compile``: ``torch.compile`` of the model and of the loss (single, sequential; one
     compiled module per copy) or of the vmapped model + loss and the vmapped prediction
     (vectorized); its rows count the graphs compiled and the graph breaks;
   * ``+`` combines them (``bf16+channels_last``, ``bf16+channels_last+compile``, ...).

   The variants live here, not in lfs: a wrapping module (:class:`VariantModel`), a task whose
   epoch length and validation can be set (:class:`TimedTask`) and an executor subclass that
   compiles the vmapped step (:class:`CompiledVectorized`). A variant that fails with an
   executor (channels_last under ``vmap``: "NYI: querying is_contiguous inside of vmap ...") gets
   its rows with an empty value and the error as the note.

   Rows per configuration: ``resnet20_step`` (one minibatch for every copy: the median of
   ``--repeats`` calls of ``--steps`` minibatches, minus the same calls without minibatches,
   divided by ``--steps``), ``resnet20_validation`` (the validation pass of every copy, measured),
   ``resnet20_broadcast`` (the best copy's state to the others, measured), ``resnet20_epoch``
   (extrapolated, not measured: minibatches per epoch x step + validation + broadcast) and, for
   compiled variants, ``resnet20_compile`` (first calls minus the same work once compiled). The
   reference of a row is the same executor and B in fp32 (vectorized: the sequential executor's
   fp32 row at the same B); ratio = value / reference.
3. ``cifar10_loading``: one copy's epoch through the full tier's CIFAR-10 input pipeline (PIL
   augmentation in a ``benchmarks.streaming.DatasetTask``'s DataLoader, ``workers`` processes, onto
   the device), on synthetic uint8 images: what the timings above leave out.
4. ``search_on_device``: one epoch of ``lfs.search`` (B = 2, tiny ResNet-20 task, each executor)
   as the library runs it (thetas sampled on the CPU): a check that the search runs on the
   device, its error as the note if not. The timings above put the thetas on the device.
5. ``table2_estimate``: the full Table 2 AM-LFS run on this one device, B = 32 copies x E epochs
   (E = 182, the full tier's 64k iterations of He et al., and 200, a round figure),
   from the fastest measured ``resnet20_epoch`` of each executor at the largest B measured:
   value = E x that epoch (the note names the row), and ``one_gpu_per_copy`` = E x the fastest
   single-model epoch, as if each copy had a device like this one (the paper: 2 GTX 1080 Ti per
   copy, 64 GPUs in all; communication not counted). Estimates, not measurements.

Rows go to ``results/perf/gpu.csv`` (``--out``) in :data:`cases.GPU_COLUMNS`: the ``cpu.csv``
columns (``cpu`` is the host CPU) plus ``device``, the accelerator by name
(``torch.cuda.get_device_name``, CUDA version, memory), ``cpu`` for a dry run.
``--quick`` checks that everything runs; its numbers mean nothing: tiny sizes (batch 4, 2
minibatches per timed call, one call, B = 2, an 8-image validation, the loss at (16, 100) and
(16, 10), loading with 0 workers), one torch thread on the CPU; compiled variants get rows that
say they were not run (compiling takes 4-10+ s per configuration on a CPU) unless ``--variants``
is given, and then ``torch.compile`` uses the ``eager`` backend (``--compile-backend``).
"""
from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import lfs  # noqa: E402
from benchmarks.perf import cases  # noqa: E402
from lfs.task import sample_seed  # noqa: E402

NO_CUDA = "no CUDA device; pass --device cpu for a dry run"

#: The paper, §4.1: "The train and test sets contain 50,000 and 10,000 images".
CIFAR10_TRAIN_IMAGES = 50_000
#: A round figure for the Table 2 run (B = 32, 200 epochs); the full tier trains 182.
ROUND_EPOCHS = 200
#: The paper, §4.1: "each sampled model is trained with 2 Nvidia 1080TI GPUs, so a total of 64 GPUs".
PAPER_GPUS = "64 GPUs (2 GTX 1080 Ti per copy, the 32 copies in parallel; the paper gives no wall time)"

FLAGS = ("channels_last", "bf16", "compile")
DEFAULT_VARIANTS = "fp32,channels_last,bf16,bf16+channels_last,compile"
LOSS_SHAPES = [(256, 10575, 64.0), (128, 10, 10.0)]  # as test_perf.py: face-scale head; mini tier's


# ------------------------------------------------------------------------------- settings
def protocol(quick: bool = False) -> dict:
    """The full tier's CIFAR-10 epoch (``benchmarks/conf/dataset/cifar10.yaml``): batch size,
    minibatches per epoch, validation images, epochs. ``quick`` shrinks what is *timed*
    (batch, validation), not the epoch it is extrapolated to."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "benchmarks" / "conf" / "dataset" / "cifar10.yaml")
    batch, val = int(cfg.train.batch_size), int(cfg.dataset.loader.val_size)
    train = CIFAR10_TRAIN_IMAGES - val
    p = {"batch": batch, "train": train, "val": val, "steps_per_epoch": train // batch,
         "epochs": int(cfg.train.epochs)}
    p["timed_batch"], p["timed_val"] = (4, 8) if quick else (batch, val)
    return p


def parse_variant(v: str) -> frozenset:
    if v == "fp32":
        return frozenset()
    parts = v.split("+")
    bad = [p for p in parts if p not in FLAGS]
    if bad or len(set(parts)) != len(parts):
        raise SystemExit(f"gpu.py: unknown variant {v!r}: fp32, or a '+' combination of {', '.join(FLAGS)}")
    return frozenset(parts)


def device_name(device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(idx)
        return f"{p.name} (cuda:{idx}, CUDA {torch.version.cuda}, {p.total_memory / 2**30:.0f} GiB)"
    return str(device)


# ------------------------------------------------------------------------ model, task, executor
class VariantModel(nn.Module):
    """A model under a variant: channels-last weights and inputs, and/or the forward under
    autocast (``amp``: a dtype) with float32 outputs (the loss and the reward in float32)."""

    def __init__(self, inner, channels_last: bool = False, amp=None):
        super().__init__()
        self.inner, self.channels_last, self.amp = inner, bool(channels_last), amp
        if self.channels_last:
            self.inner.to(memory_format=torch.channels_last)

    def forward(self, x, **kwargs):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp is None:
            return self.inner(x, **kwargs)
        with torch.autocast(device_type=x.device.type, dtype=self.amp):
            out = self.inner(x, **kwargs)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


class TimedTask(lfs.SupervisedTask):
    """A SupervisedTask whose ``executor.train`` call runs ``steps`` minibatches and validates on
    the whole validation split (``full_val``) or on its first example only (set both between
    calls: the executor holds this very object)."""

    steps: int = 0
    full_val: bool = True

    def train_batches(self, seed):
        return itertools.islice(super().train_batches(seed), self.steps)

    def val_batches(self):
        for x, y in super().val_batches():
            yield (x, y) if self.full_val else (x[:1], y[:1])
            if not self.full_val:
                return


def am_lfs_loss_fn(output, target, theta):
    """The CIFAR table's AM-LFS loss on the head's (cos, scale), as the piecewise-linear family's."""
    cos, scale = output
    return lfs.am_lfs_loss(cos, target, theta, scale)


def resnet_task(device, flags: frozenset, batch: int, steps: int, val: int, vectorized: bool,
                backend: str, mode: str | None):
    """ResNet-20 on synthetic 32x32x3 data on ``device`` (``steps`` minibatches of ``batch``, a
    ``val``-image validation split) under the variant ``flags``."""
    from benchmarks.models import build_model

    g = torch.Generator().manual_seed(0)
    n = steps * batch
    x = torch.randn(n + val, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (n + val,), generator=g).to(device)
    amp = torch.bfloat16 if "bf16" in flags else None
    compiled = "compile" in flags and not vectorized  # vectorized: CompiledVectorized compiles the vmapped step

    def model_fn():
        m = build_model("resnet20", 10)
        if flags - {"compile"}:
            m = VariantModel(m, "channels_last" in flags, amp)
        return torch.compile(m, backend=backend, mode=mode) if compiled else m

    loss_fn = torch.compile(am_lfs_loss_fn, backend=backend, mode=mode) if compiled else am_lfs_loss_fn
    return TimedTask(model_fn, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4),
                               loss_fn, (x[:n], y[:n]), (x[n:], y[n:]), batch_size=batch, device=device)


def compiled_vectorized(backend: str, mode: str | None):
    """The vectorized executor with its vmapped training loss (model + loss) and its vmapped
    prediction under ``torch.compile`` (``torch.compile(vmap(f))``)."""
    from lfs.executors import VectorizedExecutor

    class CompiledVectorized(VectorizedExecutor):
        def setup(self, task, B, state):
            super().setup(task, B, state)
            for name in ("_train_loss", "_predict"):  # what VectorizedExecutor.train calls
                if not callable(getattr(self, name, None)):
                    raise AttributeError(f"VectorizedExecutor has no {name}: update gpu.compiled_vectorized")
            self._train_loss = torch.compile(self._train_loss, backend=backend, mode=mode)
            self._predict = torch.compile(self._predict, backend=backend, mode=mode)

    return CompiledVectorized()


def prewarm_loss(device) -> None:
    """One eager call of the loss on ``device``: its cached constants exist before torch.compile
    traces it (tracing the cache fill recompiles on every float)."""
    cos = torch.rand(4, 10, device=device, requires_grad=True)
    scale = torch.ones(4, 10, device=device)
    lfs.am_lfs_loss(cos, torch.arange(4, device=device), cases.sampled_theta().to(device), scale).backward()


# ---------------------------------------------------------------------------------- timing
def _error(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"error: {type(e).__name__}: {lines[0] if lines else ''}"[:400]


def _dynamo_counts() -> tuple[int, int]:
    """torch._dynamo's running totals: graphs compiled, graph breaks."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def _cleanup(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_resnet(device, executor: str, B: int, variant: str, proto: dict, steps: int, repeats: int,
                   backend: str, mode: str | None) -> dict:
    """Seconds of one training step of the B copies, of the validation pass and of the
    broadcast; for compiled variants the compile overhead. Raises what the variant raises."""
    flags = parse_variant(variant)
    vectorized = executor == "vectorized"
    if "compile" in flags:
        torch._dynamo.reset()
        prewarm_loss(device)
    graphs0, breaks0 = _dynamo_counts()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    task = resnet_task(device, flags, proto["timed_batch"], steps, proto["timed_val"], vectorized, backend, mode)
    torch.manual_seed(0)
    state = task.make_state()
    if vectorized and "compile" in flags:
        ex = compiled_vectorized(backend, mode)
    else:
        ex = lfs.make_executor("vectorized" if vectorized else "sequential")
    ex.setup(task, B, state)
    thetas = cases.thetas(B).to(device)
    epoch = itertools.count()
    failed_calls = []

    def call(n_steps: int, full_val: bool) -> None:
        task.steps, task.full_val = n_steps, full_val
        e = next(epoch)
        _, failed, stats = ex.train(thetas, e, [sample_seed(0, e, i) for i in range(B)])
        if bool(failed.any()) or any(s.steps != n_steps for s in stats):
            failed_calls.append(e)

    first = cases.timed(lambda: call(1, False))  # compiles the training step and the 1-example validation
    first_val = cases.timed(lambda: call(0, True))  # compiles the validation's shapes
    call(1, False), call(0, True)  # a second warm-up (recompiles with dynamic shapes, autotuning)
    t_k, t_0, t_val, t_bc = [], [], [], []
    no_failure = torch.zeros(B, dtype=torch.bool)
    for _ in range(repeats):
        t_k.append(cases.timed(lambda: call(steps, False)))
        t_0.append(cases.timed(lambda: call(0, False)))
        t_val.append(cases.timed(lambda: call(0, True)))
        t_bc.append(cases.timed(lambda: ex.broadcast(0, no_failure, True)))
    step = (statistics.median(t_k) - statistics.median(t_0)) / steps
    out = {"step": step, "validation": statistics.median(t_val), "broadcast": statistics.median(t_bc),
           "fixed": statistics.median(t_0), "repeats": repeats, "steps": steps, "failed_calls": len(failed_calls)}
    out["epoch"] = proto["steps_per_epoch"] * step + out["validation"] + out["broadcast"]
    if "compile" in flags:
        out["first"], out["first_val"] = first, first_val
        out["compile"] = first + first_val - (step + out["fixed"] + out["validation"])
        graphs, breaks = _dynamo_counts()
        out["graphs"], out["breaks"] = graphs - graphs0, breaks - breaks0
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if "compile" in flags:
        torch._dynamo.reset()
    return out


# ------------------------------------------------------------------------------------ rows
class Rows:
    """The rows of this run, merged into ``out`` after every section (an interrupted run keeps
    what it measured)."""

    def __init__(self, out: Path, device_label: str):
        self.out, self.device_label, self.rows = Path(out), device_label, {}

    def add(self, *args, **kwargs) -> dict:
        r = cases.row(*args, device=self.device_label, **kwargs)
        self.rows[cases._key(r)] = r  # a recomputed row (the estimate) replaces the earlier one
        return r

    def flush(self) -> None:
        cases.write_rows(list(self.rows.values()), self.out, cases.GPU_COLUMNS)


def loss_section(rows: Rows, device, quick: bool, log) -> None:
    for N, C, s in LOSS_SHAPES:
        if quick:
            N, C = min(N, 16), min(C, 100)
        case = f"{N}x{C}"
        try:
            am_lfs, cross_entropy, am_lfs_autograd = cases.loss_pair(N, C, s, device=device)
            iterations = 1 if quick else cases.iterations_for(cross_entropy, 0.02)
            rounds, warmup = (2, 1) if quick else (25, 3)
            common = dict(rounds=rounds, iterations=iterations, warmup=warmup)
            how = (f"s={s:g}, sampled theta (sigma 0.2, positive), on {device}, {iterations} calls per round; "
                   "ratio: median over rounds of the per-round ratio (the cpu.csv protocol)")
            res = cases.paired(am_lfs, cross_entropy, **common)
            old = cases.paired(am_lfs_autograd, cross_entropy, **common)
        except Exception as e:  # noqa: BLE001 - recorded, not raised
            for name in ("loss_vs_cross_entropy", "loss_autograd_vs_cross_entropy"):
                rows.add(name, case, None, metric="ratio", note=_error(e))
            log(f"loss {case}: {_error(e)}")
            continue
        target = cases.TARGETS.get(f"loss_vs_cross_entropy/{case}")
        rows.add("loss_vs_cross_entropy", case, res.subject_s, "F.cross_entropy fwd+bwd", res.reference_s, res.ratio,
                 target, rounds=res.rounds, metric="ratio", note=how + "; target: the issue's, set for 2 CPU cores")
        rows.add("loss_autograd_vs_cross_entropy", case, old.subject_s, "F.cross_entropy fwd+bwd", old.reference_s,
                 old.ratio, rounds=old.rounds, metric="ratio",
                 note="lfs.loss.am_lfs_loss_autograd (the loss as autograd ops), same inputs; " + how)
        log(f"loss {case}: am_lfs_loss {res.subject_s * 1e3:.3f} ms, cross entropy {res.reference_s * 1e3:.3f} ms, "
            f"ratio {res.ratio:.2f} (autograd version {old.ratio:.2f})")
    rows.flush()


RESNET_NAMES = ("resnet20_step", "resnet20_validation", "resnet20_broadcast", "resnet20_epoch")


def configurations(executors: list[str], Bs: list[int]) -> list[tuple[str, int]]:
    out = [("single", 1)] if "single" in executors else []
    for B in Bs:
        out += [(e, B) for e in ("sequential", "vectorized") if e in executors]
    return out


def reference_of(executor: str, B: int) -> tuple[str, int, str]:
    return ("single" if executor == "single" else "sequential", B, "fp32")


def resnet_section(rows: Rows, device, args, proto: dict, log, after_variant=None) -> dict:
    """Every (executor, B) x variant (``after_variant()`` after each variant's configurations);
    returns ``{(executor, B, variant): measured dict or None}``."""
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants.sort(key=lambda v: "compile" in parse_variant(v))  # eager variants first (stable sort)
    measured: dict[tuple, dict | None] = {}
    earlier = device_rows(rows.out, rows.device_label)
    timed_what = (f"ResNet-20, AM-LFS loss, SGD 0.1/0.9/1e-4, synthetic 32x32x3 on the device, batch "
                  f"{proto['timed_batch']}")
    if device.type == "cuda":  # torch's defaults, as benchmarks/runner.py leaves them
        timed_what += (f"; cudnn.benchmark={torch.backends.cudnn.benchmark}, cudnn.allow_tf32="
                       f"{torch.backends.cudnn.allow_tf32}, matmul allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    for variant in variants:
        flags = parse_variant(variant)
        for executor, B in configurations(args.executors, args.B):
            case = f"{executor}/{variant}"
            label = f"resnet20 {executor:<10} B={B:<2} {variant}"
            skip = None
            if args.quick and not args.variants_given and "compile" in flags:
                skip = ("not run in --quick without --variants: compiling takes 4 s (sequential) to 10+ s "
                        "(vectorized) on a CPU even with the eager backend")
            start = time.perf_counter()
            try:
                if skip:
                    raise _Skip(skip)
                m = measure_resnet(device, "sequential" if executor == "single" else executor, B, variant, proto,
                                   args.steps, args.repeats, args.compile_backend, args.compile_mode)
            except _Skip as e:
                m, note = None, str(e)
            except Exception as e:  # noqa: BLE001 - an unsupported variant is a row, not a crash
                m, note = None, _error(e)
            if not skip:
                _cleanup(device)
            measured[(executor, B, variant)] = m
            names = RESNET_NAMES + (("resnet20_compile",) if "compile" in flags else ())
            if m is None:
                for name in names:
                    rows.add(name, case, None, B=B, metric="seconds", note=note)
                log(f"{label}: {note}")
                rows.flush()
                continue
            ref_key = reference_of(executor, B)
            is_ref = ref_key == (executor, B, variant)
            ref = measured.get(ref_key)
            ref_label = f"{ref_key[0]}/fp32 B={B}"
            extra = f"; peak memory {m['peak_gib']:.2f} GiB" if "peak_gib" in m else ""
            if m["failed_calls"]:
                extra += f"; {m['failed_calls']} timed calls had a failed copy (non-finite loss)"
            if "compile" in flags:
                extra += (f"; torch.compile backend={args.compile_backend} mode={args.compile_mode}, "
                          + ("the vmapped model+loss and prediction" if executor == "vectorized"
                             else "the model and the loss, one compiled module per copy"))
            common = dict(B=B, metric="seconds", rounds=m["repeats"])

            def add(name, key, note):
                # the reference row of this run, else one of an earlier run on this device (a split run)
                rs = None if is_ref else ref[key] if ref else earlier.get((name, f"{ref_key[0]}/fp32", str(B)))
                rows.add(name, case, m[key], ref_label if rs else "", rs, m[key] / rs if rs else None,
                         note=note + extra, **common)

            add("resnet20_step", "step", f"one minibatch for each of the {B} copies: median of {m['repeats']} calls "
                f"of {m['steps']} minibatches minus the same calls without minibatches, / {m['steps']}; {timed_what}")
            add("resnet20_validation", "validation", f"measured: the validation pass of the {B} copies "
                f"({proto['timed_val']} images, eval batch 1024) and their rewards")
            add("resnet20_broadcast", "broadcast", f"measured: the best copy's model and optimizer state to the "
                f"other {B - 1} copies")
            add("resnet20_epoch", "epoch", f"extrapolated, not measured: epoch = {proto['steps_per_epoch']} steps x "
                f"step {m['step']:.6g} s + validation {m['validation']:.6g} s + broadcast {m['broadcast']:.6g} s "
                f"(the full tier: {proto['train']} training images / batch {proto['batch']}; timed batch "
                f"{proto['timed_batch']}, validation {proto['timed_val']} images)")
            if "compile" in flags:
                rows.add("resnet20_compile", case, m["compile"], B=B, metric="seconds", rounds=1,
                         note=f"compile overhead = first calls ({m['first']:.4g} s: one minibatch + 1-example "
                              f"validation; {m['first_val']:.4g} s: the validation) minus the same work compiled; "
                              f"{m['graphs']} graphs compiled, {m['breaks']} graph breaks; "
                              "torch._dynamo.reset() before each configuration, inductor's on-disk caches may be "
                              "warm" + extra)
            log(f"{label}: step {m['step'] * 1e3:.2f} ms, validation {m['validation']:.3f} s, broadcast "
                f"{m['broadcast'] * 1e3:.1f} ms -> epoch {m['epoch']:.2f} s"
                + (f", compile {m['compile']:.1f} s" if "compile" in flags else "")
                + (f" ({time.perf_counter() - start:.0f} s)"))
            rows.flush()
        if after_variant is not None:
            after_variant()
    return measured


class _Skip(Exception):
    pass


def loading_section(rows: Rows, device, args, proto: dict, log) -> float | None:
    """Seconds to load one copy's epoch of CIFAR-10 through the full tier's input pipeline: PIL
    images, ``RandomCrop(32, 4)``, flip, ``ToTensor``, ``Normalize`` (``cifar10_transforms``) in a
    ``benchmarks.streaming.DatasetTask`` (DataLoader, batch 128, ``workers`` processes, pinned
    memory on CUDA), onto the device; synthetic uint8 images in place of the files."""
    import numpy as np

    from benchmarks.data.cifar10 import ArrayImageDataset, cifar10_transforms
    from benchmarks.streaming import DatasetTask

    batch, K = proto["timed_batch"], (4 if args.quick else 60)
    case = f"workers={args.workers}"
    try:
        rng = np.random.default_rng(0)
        data = rng.integers(0, 256, (K * batch, 32, 32, 3), dtype=np.uint8)
        train = ArrayImageDataset(data, rng.integers(0, 10, K * batch), cifar10_transforms(True)[0])
        task = DatasetTask(lambda: None, lambda p: None, am_lfs_loss_fn, train, train, batch,
                           num_workers=args.workers, pin_memory=device.type == "cuda", device=device)

        def load(n: int | None):
            for x, y in itertools.islice(task.train_batches(1), n):
                task.to_device(x), task.to_device(y)

        load(1)  # warm-up: imports, the transforms' first use
        first = cases.timed(lambda: load(1))  # an iterator (its workers) and one batch
        whole = cases.timed(lambda: load(None))  # an iterator and K batches
    except Exception as e:  # noqa: BLE001
        rows.add("cifar10_loading", case, None, metric="seconds", note=_error(e))
        log(f"cifar10 loading, {case}: {_error(e)}")
        rows.flush()
        return None
    per_batch = max(whole - first, 0.0) / (K - 1)
    epoch = first + (proto["steps_per_epoch"] - 1) * per_batch
    rows.add("cifar10_loading", case, epoch, metric="seconds", rounds=1,
             note=f"one copy's epoch of the full tier's CIFAR-10 input pipeline (DatasetTask: PIL, RandomCrop(32, 4), "
                  f"flip, ToTensor, Normalize; DataLoader batch {batch}, {args.workers} workers, pinned memory on "
                  f"CUDA; synthetic uint8 images) onto {device}, extrapolated: an iterator's first batch {first:.4g} s "
                  f"+ {proto['steps_per_epoch'] - 1} x {per_batch:.4g} s per batch (from {K} batches in "
                  f"{whole:.4g} s); every copy loads its own epoch, B times per epoch")
    log(f"cifar10 loading, {case}: first batch {first:.3f} s, {per_batch * 1e3:.2f} ms per batch -> "
        f"{epoch:.2f} s per copy-epoch")
    rows.flush()
    return epoch


def device_rows(path: Path, device_label: str) -> dict[tuple, float]:
    """``{(name, case, B): value}`` of the rows with a value in the CSV at ``path`` (if any)
    measured on ``device_label``."""
    import csv

    if not Path(path).exists():
        return {}
    with Path(path).open(newline="") as f:
        return {(r["name"], r["case"], r["B"]): float(r["value_s"]) for r in csv.DictReader(f)
                if r.get("device") == device_label and r.get("value_s")}


def measured_epochs(path: Path, device_label: str) -> tuple[dict, float | None]:
    """The ``resnet20_epoch`` rows with a value in the CSV at ``path`` measured on ``device_label``
    (this run's and earlier runs' merged into it): ``{(executor, B, variant): seconds}``, and the
    ``cifar10_loading`` seconds (None without such a row)."""
    found = device_rows(path, device_label)
    epochs = {(case.split("/", 1)[0], int(B), case.split("/", 1)[1]): v
              for (name, case, B), v in found.items() if name == "resnet20_epoch"}
    loading = [v for (name, _, _), v in found.items() if name == "cifar10_loading"]
    return epochs, (loading[0] if loading else None)


def estimate_section(rows: Rows, proto: dict, log, quiet: bool = False) -> list[dict]:
    """``table2_estimate`` rows: E epochs x the fastest measured ``resnet20_epoch`` of each
    executor at the largest B measured, and E x the fastest single-model epoch (one device per
    copy). Read from the CSV (rows of this device only), so that runs split with ``--only`` /
    ``--variants`` give the estimate of everything measured."""
    rows.flush()
    epochs, loading = measured_epochs(rows.out, rows.device_label)
    multi = [B for (e, B, _) in epochs if e != "single"]
    if not multi:
        if not quiet:
            log("table2 estimate: no multi-copy configuration was measured")
        return []
    B = max(multi)

    def fastest(executor: str, b: int):
        cands = [(sec, v) for (e, bb, v), sec in epochs.items() if e == executor and bb == b]
        return min(cands) if cands else None

    picks = {e: fastest(e, B) for e in ("sequential", "vectorized")}
    picks = {e: p + (e,) for e, p in picks.items() if p is not None}
    picks["best"] = min(picks.values())
    single = fastest("single", 1)
    if single is not None:
        picks["one_gpu_per_copy"] = single + ("single",)
    epochs_from = {proto["epochs"]: "the full tier (benchmarks/conf/dataset/cifar10.yaml: 64k iterations of He et al.)",
                   ROUND_EPOCHS: "a round figure"}
    loads = ("data loading not included" if loading is None else
             f"data loading not included (cifar10_loading: {loading:.4g} s per copy-epoch, {B} copies per epoch, "
             "overlapped with compute or not)")
    device_label = rows.device_label
    out = []
    for E, source in epochs_from.items():
        for key, (epoch_s, variant, executor) in picks.items():
            b = 1 if executor == "single" else B
            ref = f"resnet20_epoch {executor}/{variant} B={b}"
            value = E * epoch_s
            if key == "one_gpu_per_copy":
                what = (f"the fastest single-model variant): the wall time if each of the {B} copies had its own "
                        f"{device_label}, as the paper ran them ({PAPER_GPUS}); broadcast across devices not counted")
            else:
                what = (f"the fastest measured variant of {executor} at B={B}) = {value / 3600:.3g} h on one "
                        f"{device_label}; one AM-LFS run (x3 for Table 2's noise levels); paper: {PAPER_GPUS}")
            out.append(rows.add("table2_estimate", f"{key}/{E} epochs", value, ref, epoch_s, value / epoch_s, B=B,
                                metric="seconds", rounds=1,
                                note=f"estimate, not measured: {E} epochs ({source}) x {epoch_s:.6g} s ({ref}, "
                                     f"{what}; {loads}"))
    rows.flush()
    return out


def search_section(rows: Rows, device, args, log) -> None:
    """One epoch of ``lfs.search`` on the device, each executor, as the library runs it."""
    for executor in ("sequential", "vectorized"):
        try:
            task = resnet_task(device, frozenset(), 8, 2, 16, executor == "vectorized", "eager", None)
            task.steps, task.full_val = 2, True
            torch.manual_seed(0)
            seconds = cases.timed(lambda: lfs.search(task, epochs=1, B=2, executor=executor, seed=0))
            note = (f"ok: lfs.search(task, epochs=1, B=2, executor={executor!r}) on {device}, thetas sampled on "
                    "the CPU by the library; ResNet-20, 2 minibatches of 8, 16-image validation")
        except Exception as e:  # noqa: BLE001
            seconds, note = None, _error(e) + f" (lfs.search, epochs=1, B=2, executor={executor!r}, on {device})"
        finally:
            _cleanup(device)
        rows.add("search_on_device", executor, seconds, B=2, metric="seconds", rounds=1, note=note)
        log(f"search on {device}, {executor}: {note if seconds is None else f'ok, {seconds:.2f} s'}")
    rows.flush()


# ------------------------------------------------------------------------------------ main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda; none: exit 2)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a dry run that everything runs (~15 s on a CPU)")
    ap.add_argument("--out", default=None, help="CSV to merge the rows into (default results/perf/gpu.csv)")
    ap.add_argument("--B", default=None, help="copies, comma-separated (default 8,32; --quick: 2)")
    ap.add_argument("--executors", default="single,sequential,vectorized",
                    help="of single (one model), sequential, vectorized (default all)")
    ap.add_argument("--variants", default=None, help=f"comma-separated (default {DEFAULT_VARIANTS})")
    ap.add_argument("--steps", type=int, default=None, help="minibatches per timed call (default 20; --quick: 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per configuration (default 3; --quick: 1)")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; --quick: eager)")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers of the loading row (default: benchmarks/conf/config.yaml's; --quick: 0)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; --quick on the CPU: 1, not to fight other processes)")
    ap.add_argument("--only", choices=["loss", "loading", "resnet", "search"], action="append",
                    help="run only these sections (repeatable; the estimate comes with resnet)")
    args = ap.parse_args(argv)
    args.variants_given = args.variants is not None
    args.variants = args.variants or DEFAULT_VARIANTS
    for v in args.variants.split(","):
        if v.strip():
            parse_variant(v.strip())
    args.B = [int(b) for b in (args.B or ("2" if args.quick else "8,32")).split(",") if b.strip()]
    args.executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    bad = [e for e in args.executors if e not in ("single", "sequential", "vectorized")]
    if bad:
        ap.error(f"unknown executor(s) {bad}: single, sequential, vectorized")
    args.steps = args.steps or (2 if args.quick else 20)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.compile_backend = args.compile_backend or ("eager" if args.quick else "inductor")
    if args.workers is None:
        from omegaconf import OmegaConf

        args.workers = 0 if args.quick else int(OmegaConf.load(ROOT / "benchmarks" / "conf" / "config.yaml").workers)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print(f"gpu.py: {NO_CUDA}", file=sys.stderr)
            return 2
        args.device = "cuda"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu.py: {NO_CUDA}", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if args.threads is not None or (args.quick and device.type == "cpu"):
        torch.set_num_threads(args.threads or 1)
    if args.out:
        out = Path(args.out)
    elif device.type == "cuda" and not args.quick:
        out = cases.RESULTS / "gpu.csv"
    else:  # a dry run's rows must not mix with the committed ones
        out = Path(tempfile.gettempdir()) / "lfs-perf-gpu-dryrun.csv"
    label = device_name(device)
    proto = protocol(args.quick)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    log(f"device {label}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; rows -> {out}"
        + ("; --quick: tiny sizes, a dry run" if args.quick else ""))
    rows = Rows(out, label)
    sections = set(args.only or ("loss", "loading", "resnet", "search"))
    if "loss" in sections:
        loss_section(rows, device, args.quick, log)
    if "loading" in sections:
        loading_section(rows, device, args, proto, log)
    if "search" in sections:
        search_section(rows, device, args, log)
    estimates = []
    if "resnet" in sections:
        log(f"ResNet-20: batch {proto['timed_batch']}, {args.steps} minibatches x {args.repeats} calls per "
            f"configuration, epoch = {proto['steps_per_epoch']} minibatches + {proto['timed_val']}-image validation; "
            f"B {args.B}; variants {args.variants}")
        resnet_section(rows, device, args, proto, log, after_variant=lambda: estimate_section(rows, proto, log, True))
        estimates = estimate_section(rows, proto, log)
    rows.flush()
    log(f"done: {len(rows.rows)} rows merged into {out}")
    if estimates:
        print(f"\nTable 2, one AM-LFS run (B = {estimates[0]['B']}, CIFAR-10, ResNet-20), on one {label}:")
        for r in estimates:
            print(f"  {r['case']:<28} {r['value_s'] / 3600:8.3g} h  = {r['ratio']:g} x {r['reference_s']:.4g} s "
                  f"({r['reference']})")
        print(f"  the paper: {PAPER_GPUS}")
        if args.quick:
            print("  (--quick: tiny sizes; these numbers mean nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
