"""Speed benchmarks, under pytest-benchmark (run: ``python benchmarks/perf/run.py``).

Each test times a subject and its reference in paired rounds (:mod:`benchmarks.perf.cases`):
pytest-benchmark times the rounds (its own table and JSON show the seconds of one round, subject
and reference together), and the ratio, the seconds of each side and the target go to
``benchmark.extra_info`` and to ``results/perf/cpu.csv``.
"""
from __future__ import annotations

import math
import time

import pytest
import torch

from benchmarks.perf import cases

LOSS_SHAPES = [(256, 10575, 64.0), (128, 10, 10.0)]  # face-scale head (s = 64); mini tier's (s = 10)


@pytest.mark.parametrize("N,C,s", LOSS_SHAPES, ids=[f"{n}x{c}" for n, c, _ in LOSS_SHAPES])
def test_loss_vs_cross_entropy(benchmark, perf_rows, quick, threads, N, C, s):
    """(a), (b): lfs.am_lfs_loss forward + backward / F.cross_entropy forward + backward."""
    torch.set_num_threads(threads)
    if quick:
        N, C = min(N, 16), min(C, 100)
    am_lfs, cross_entropy, am_lfs_autograd = cases.loss_pair(N, C, s)
    iterations = 1 if quick else cases.iterations_for(cross_entropy, 0.02)
    pr = cases.PairedRounds(am_lfs, cross_entropy, iterations)
    for _ in range(1 if quick else 3):  # warm-up, not recorded
        pr()
    pr.s.clear(), pr.r.clear()
    benchmark.pedantic(pr, rounds=1 if quick else 25, iterations=1)
    res = pr.result()
    case = f"{N}x{C}"
    target = cases.TARGETS.get(f"loss_vs_cross_entropy/{case}")
    benchmark.extra_info.update(ratio=res.ratio, subject_s=res.subject_s, reference_s=res.reference_s, target=target)
    perf_rows.append(cases.row("loss_vs_cross_entropy", case, res.subject_s, "F.cross_entropy fwd+bwd", res.reference_s,
                               res.ratio, target, rounds=res.rounds, threads=threads, metric="ratio",
                               note=f"s={s:g}, sampled theta (sigma 0.2, positive), {iterations} calls per round"))
    # the implementation it replaced, against the same reference (no target: for the record)
    pr = cases.PairedRounds(am_lfs_autograd, cross_entropy, iterations)
    pr()
    pr.s.clear(), pr.r.clear()
    for _ in range(1 if quick else 15):
        pr()
    old = pr.result()
    perf_rows.append(cases.row("loss_autograd_vs_cross_entropy", case, old.subject_s, "F.cross_entropy fwd+bwd",
                               old.reference_s, old.ratio, None, rounds=old.rounds, threads=threads, metric="ratio",
                               note="lfs.loss.am_lfs_loss_autograd: the loss as autograd ops (the implementation "
                                    "before the closed-form gradient), same theta and inputs"))
    assert res.ratio > 0 and old.ratio > 0


# case, dataset (None: synthetic ResNet-20), B, Hydra overrides. cnn1d is the mini tier's model
# as configured (conv="matmul"); cnn1d_native is the same model with nn.Conv1d, for the record.
EXECUTOR_CASES = [("mlp", "digits", 32, ()), ("cnn1d", "mnist1d", 32, ()),
                  ("cnn1d_native", "mnist1d", 32, ("model.kwargs.conv=native",)), ("resnet20", None, 8, ())]


@pytest.mark.parametrize("model,dataset,B,overrides", EXECUTOR_CASES, ids=[c[0] for c in EXECUTOR_CASES])
def test_executors(benchmark, perf_rows, quick, threads, model, dataset, B, overrides):
    """(c) vectorized / sequential epoch; (d) auto / the better of the two, and auto's probe."""
    torch.set_num_threads(threads)
    if quick:
        B = 2
    if dataset is None:
        task, plain = cases.resnet20_task(batches=1, batch_size=8, val=8) if quick else cases.resnet20_task()
        what = "ResNet-20, 32x32 random images, 2 batches of 64" if not quick else "ResNet-20, tiny"
    else:
        task, plain = cases.mini_task(dataset, overrides=overrides)
        kwargs = "".join(f", {k}={v}" for k, v in plain["model"]["kwargs"].items())
        what = f"mini tier {dataset} task ({plain['model']['name']}{kwargs}, batch {plain['train']['batch_size']})"
    epochs = int(plain["train"]["epochs"])
    if quick:  # three minibatches per epoch
        from lfs.auto import _probe_task

        task = _probe_task(task, 3, validate=True)
    extra = None
    if dataset and plain["model"]["kwargs"].get("conv") == "matmul":  # also the sequential executor on
        # nn.Conv1d (the same model, computed natively): vectorized is held against the faster one
        native, _ = cases.mini_task(dataset, overrides=tuple(overrides) + ("model.kwargs.conv=native",))
        if quick:
            from lfs.auto import _probe_task

            native = _probe_task(native, 3, validate=True)
        extra = {"sequential_native": (native, "sequential")}
    rounds = cases.ExecutorRounds(task, B, extra=extra)
    start = time.perf_counter()
    rounds.warmup()
    # about 30 s of rounds (3 to 10): short epochs are timed over more rounds
    n_rounds = 1 if quick else max(3, min(10, math.ceil(30.0 / max(time.perf_counter() - start, 1e-3))))
    benchmark.pedantic(rounds, rounds=n_rounds, iterations=1)
    seq, vec, auto = (rounds.median(n) for n in ("sequential", "vectorized", "auto"))
    vec_ratio = rounds.paired_ratio("vectorized", lambda k: rounds.seconds["sequential"][k])
    best = min(seq, vec)
    auto_ratio = rounds.paired_ratio("auto", lambda k: min(rounds.seconds["sequential"][k], rounds.seconds["vectorized"][k]))
    runner = rounds.runners["auto"]
    chosen, probe = runner.executor.chosen, runner.executor.probe.get("probe_seconds", 0.0)
    # auto *is* the executor it chose: its epoch is that executor's; the choice's cost is
    # t(chosen) / t(better), free of the noise of timing the same code a third time
    choice_ratio = rounds.paired_ratio(chosen, lambda k: min(rounds.seconds["sequential"][k],
                                                               rounds.seconds["vectorized"][k]))
    with_probe = choice_ratio + probe / (epochs * best)  # the probe is paid once per run
    n = len(rounds.seconds["auto"])
    target_c = cases.TARGETS.get(f"vectorized_vs_sequential_epoch/{model}")
    target_d = cases.TARGETS["auto_vs_best_epoch"]
    benchmark.extra_info.update(sequential_s=seq, vectorized_s=vec, auto_s=auto, vectorized_ratio=vec_ratio,
                                auto_ratio=auto_ratio, chosen=chosen, probe_s=probe)
    common = dict(B=B, rounds=n, threads=threads, metric="ratio")
    perf_rows.append(cases.row("vectorized_vs_sequential_epoch", model, vec, "sequential epoch", seq, vec_ratio,
                               target_c, note=what, **common))
    if extra:
        seq_native = rounds.median("sequential_native")
        best_ratio = rounds.paired_ratio("vectorized", lambda k: min(rounds.seconds["sequential"][k],
                                                                     rounds.seconds["sequential_native"][k]))
        faster_seq = "conv=native" if seq_native < seq else "conv=matmul"
        perf_rows.append(cases.row("vectorized_vs_best_sequential_epoch", model, vec,
                                   f"faster sequential epoch ({faster_seq})", min(seq, seq_native), best_ratio,
                                   target_c, note=f"{what}; sequential with conv=native: {seq_native:.3g}s, with "
                                                  f"conv=matmul: {seq:.3g}s (medians)", **common))
    faster = "sequential" if seq <= vec else "vectorized"
    perf_rows.append(cases.row("auto_vs_best_epoch", model, auto, f"better of the two ({faster})", best, auto_ratio,
                               target_d, note=f"{what}; auto chose {chosen}; probe not counted", **common))
    perf_rows.append(cases.row("auto_choice_vs_best_epoch", model, rounds.median(chosen), f"better of the two ({faster})",
                               best, choice_ratio, target_d, note=f"{what}; epochs of the executor auto chose "
                               f"({chosen}), timed as itself", **common))
    perf_rows.append(cases.row("auto_vs_best_run", model, epochs * best * choice_ratio + probe,
                               f"{epochs} epochs of the better", epochs * best, with_probe, target_d,
                               note=f"auto's probe ({probe:.2f}s, once per run) amortized over the {epochs} epochs "
                                    f"of {'the mini tier' if dataset else 'the full tier (CIFAR-10; its real epochs are 351 minibatches of 128, not 2 of 64)'}",
                               **common))
    assert chosen in ("sequential", "vectorized")


def test_screening_throughput(benchmark, perf_rows, quick, threads):
    """Evolved losses: candidates screened per second (validity + LRP + GEC) at (256, 10)."""
    torch.set_num_threads(threads)
    pool = cases.screening_pool(8 if quick else 64)
    subject, reference, cfg = cases.screening_pair(pool)
    pr = cases.PairedRounds(subject, reference, 1)
    pr()  # warm-up
    pr.s.clear(), pr.r.clear()
    benchmark.pedantic(pr, rounds=1 if quick else 5, iterations=1)
    res = pr.result()
    per_second = len(pool) / res.subject_s
    target = cases.TARGETS["screening_candidates_per_second/256x10"]
    benchmark.extra_info.update(per_second=per_second, ratio=res.ratio)
    perf_rows.append(cases.row("screening_candidates_per_second", f"{cfg.lrp_samples}x{cfg.lrp_classes}",
                               res.subject_s / len(pool), f"{cfg.lrp_steps} x F.cross_entropy fwd+bwd",
                               res.reference_s / len(pool), res.ratio, target, meets=per_second >= target,
                               rounds=res.rounds, threads=threads, metric="per_second",
                               note=f"{per_second:.0f} candidates/s over {len(pool)} random AutoLoss-Zero trees "
                                    f"(depth 2-5); LRP {cfg.lrp_steps} SGD steps lr {cfg.lrp_lr}; GEC on 32x10"))
    assert per_second > 0


def test_cpu_numerics(benchmark, perf_rows, quick, threads):
    """What made the mini rows faster with the same bits: matmul_conv1d's strided-slice patches
    against unfold's (forward + backward, B = 8 vmapped copies), and flushing float32 denormals
    (``flush_denormal``, torch.set_flush_denormal) against not, on denormal operands."""
    torch.set_num_threads(threads)
    B, n = (2, 8) if quick else (8, 100)
    slices, unfold = cases.patches_pair(B, n)
    pr = cases.PairedRounds(slices, unfold, 1 if quick else cases.iterations_for(unfold, 0.05))
    pr()  # warm-up
    pr.s.clear(), pr.r.clear()
    benchmark.pedantic(pr, rounds=1 if quick else 15, iterations=1)
    res = pr.result()
    target = cases.TARGETS["strided_patches_vs_unfold/cnn1d"]
    perf_rows.append(cases.row("strided_patches_vs_unfold", "cnn1d", res.subject_s, "Tensor.unfold patches", res.reference_s,
                               res.ratio, target, B=B, rounds=res.rounds, threads=threads, metric="ratio",
                               note=f"fwd+bwd of the mini cnn1d's 3 matmul convolutions (k 5, 3, 3; stride 2) under vmap, "
                                    f"batch {n} of mnist1d's length 40; gradients equal bit for bit (tests/test_models.py)"))
    shape = (2, 10, 8) if quick else (8, 1000, 64)
    flushed, not_flushed = cases.denormal_pair(shape)
    before = float(torch.tensor([1e-39]) * 1.0) == 0.0  # the process's mode
    try:
        pr = cases.PairedRounds(flushed, not_flushed, 1 if quick else cases.iterations_for(not_flushed, 0.05))
        pr()
        pr.s.clear(), pr.r.clear()
        for _ in range(1 if quick else 15):
            pr()
    finally:
        torch.set_flush_denormal(before)
    den = pr.result()
    case = "x".join(map(str, shape))
    perf_rows.append(cases.row("flush_denormal_vs_not", case, den.subject_s, "denormals not flushed", den.reference_s,
                               den.ratio, cases.TARGETS.get(f"flush_denormal_vs_not/{case}"), rounds=den.rounds,
                               threads=threads, metric="ratio",
                               note="a * b + a, float32, a = 1e-39 (denormal); flush_denormal=true is the harness default"))
    assert res.ratio > 0 and den.ratio > 0
