"""The auto executor: it picks sequential or vectorized by timing both, on clones, and then is
exactly the executor it picked."""
import math

import pytest
import torch
import torch.nn as nn

import lfs
from lfs.auto import CANDIDATES, AutoExecutor, choose_executor, probe_executors
from lfs.executors import SequentialExecutor, VectorizedExecutor
from lfs.search import LossSearch, SearchConfig


def toy_task(bn=True, d=12, c=4, model=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(384, d, generator=g)
    y = (x @ torch.randn(d, c, generator=g)).argmax(1)

    def model_fn():
        if model is not None:
            return model()
        layers = [nn.Linear(d, 24)] + ([nn.BatchNorm1d(24)] if bn else []) + [nn.ReLU()]
        return nn.Sequential(*layers, lfs.CosineClassifier(24, c, normalize="both", s=8.0))

    def loss_fn(out, target, theta):
        cos, scale = out
        return lfs.am_lfs_loss(cos, target, theta, scale)

    return lfs.SupervisedTask(model_fn, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
                              loss_fn, (x[:256], y[:256]), (x[256:], y[256:]), batch_size=32,
                              scheduler_fn=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.8))


def run(executor, seed=3, B=4, epochs=2):
    s = LossSearch(toy_task(), SearchConfig(epochs=epochs, B=B, seed=seed, sigma=0.05), executor=executor)
    return s, s.run()


def params(state):
    return torch.cat([p.detach().flatten() for p in state.model.parameters()]
                     + [b.detach().flatten().double() for b in state.model.buffers()])


@pytest.mark.parametrize("name", CANDIDATES)
def test_forced_choice_is_exactly_that_executor(name):
    s_auto, r_auto = run(AutoExecutor(force=name))
    s_ref, r_ref = run(SequentialExecutor() if name == "sequential" else VectorizedExecutor())
    assert s_auto.executor.chosen == name and isinstance(s_auto.executor.executor, type(s_ref.executor))
    assert [h.rewards for h in r_auto.history] == [h.rewards for h in r_ref.history]
    assert [h.chosen for h in r_auto.history] == [h.chosen for h in r_ref.history]
    assert torch.equal(params(r_auto.state), params(r_ref.state))


def test_probed_choice_gives_the_results_of_the_executor_it_chose():
    s_auto, r_auto = run(AutoExecutor())
    chosen = s_auto.executor.chosen
    assert chosen in CANDIDATES
    assert set(s_auto.executor.probe["estimate"]) == set(CANDIDATES)
    assert s_auto.executor.probe["probe_seconds"] > 0
    # the probe ran on clones and outside the RNG stream: identical to running the chosen one
    _, r_ref = run(SequentialExecutor() if chosen == "sequential" else VectorizedExecutor())
    assert [h.rewards for h in r_auto.history] == [h.rewards for h in r_ref.history]
    assert [h.thetas for h in r_auto.history] == [h.thetas for h in r_ref.history]
    assert torch.equal(params(r_auto.state), params(r_ref.state))


def test_probe_leaves_state_and_rng_untouched():
    task = toy_task()
    torch.manual_seed(0)
    state = task.make_state()
    # give the optimizer some state too (a trained state)
    task.train_epoch(state, lfs.identity_theta(6), 0, 1)
    before = params(state).clone()
    momentum = [v["momentum_buffer"].clone() for v in state.optimizer.state.values()]
    lr = state.optimizer.param_groups[0]["lr"]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    name = choose_executor(task, 4, state)
    assert torch.equal(torch.rand(3), expected)  # global RNG not consumed
    assert name in CANDIDATES
    assert torch.equal(params(state), before)
    assert all(torch.equal(v["momentum_buffer"], m) for v, m in zip(state.optimizer.state.values(), momentum))
    assert state.optimizer.param_groups[0]["lr"] == lr


def test_probe_measures_both():
    task = toy_task()
    torch.manual_seed(0)
    assert task.num_batches() == sum(1 for _ in task.train_batches(0)) == 8  # what the probe scales by
    t = probe_executors(task, 4, task.make_state(), decisive=math.inf, repeats=1, min_seconds=0.0)
    assert set(t) == set(CANDIDATES)
    for e in t.values():
        assert 0 < e["step"] < math.inf and 0 < e["fixed"] < math.inf
        assert e["epoch"] == pytest.approx(8 * e["step"] + e["fixed"])  # 256 examples / 32


def test_non_supervised_task_and_single_copy_get_sequential_without_probe():
    def make_state():
        model = nn.Linear(2, 2)
        return lfs.TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1))

    task = lfs.CallbackTask(make_state, lambda st, theta, epoch, seed: 0.0, lambda st: 1.0)
    assert choose_executor(task, 8, make_state()) == "sequential"
    ex = AutoExecutor()
    ex.setup(task, 3, make_state())
    assert ex.chosen == "sequential" and "reason" in ex.probe and len(ex.states) == 3
    sup = toy_task()
    assert choose_executor(sup, 1, sup.make_state()) == "sequential"


class NotVmappable(nn.Module):
    """Data-dependent Python control flow: runs in a loop, fails under vmap."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(12, 24)
        self.head = lfs.CosineClassifier(24, 4, normalize="both", s=8.0)

    def forward(self, x):
        h = self.body(x)
        if h.sum() > 1e9:  # .item() under vmap raises
            h = h * 0
        return self.head(h)


def test_a_model_that_cannot_be_vmapped_gets_sequential():
    task = toy_task(model=NotVmappable)
    torch.manual_seed(0)
    assert choose_executor(task, 4, task.make_state()) == "sequential"


def test_delegation_of_every_executor_method_and_attribute():
    ex = AutoExecutor(force="vectorized")
    with pytest.raises(AttributeError):
        ex.B  # noqa: B018 - before setup
    assert getattr(ex, "is_writer", True) is True
    task = toy_task()
    torch.manual_seed(0)
    ex.setup(task, 3, task.make_state())
    assert ex.B == 3 and ex.params is ex.executor.params  # attributes of the chosen one
    # the interface's methods are the chosen executor's own (not the base class defaults)
    st = ex.copy_state(1)
    ex.load_copy_state(st, [0])
    sd = ex.state_dict()
    ex.load_state_dict(sd)
    assert isinstance(ex.export(0), lfs.TrainState)
    assert "vectorized" in repr(ex)
    with pytest.raises(ValueError, match="force"):
        AutoExecutor(force="distributed")


def test_checkpointed_search_with_auto_resumes_like_the_chosen_executor(tmp_path):
    path = tmp_path / "ck.pt"
    s1 = LossSearch(toy_task(), SearchConfig(epochs=1, B=3, seed=5, sigma=0.05), executor=AutoExecutor(force="sequential"),
                    checkpoint=path)
    s1.run()
    s2 = LossSearch(toy_task(), SearchConfig(epochs=2, B=3, seed=5, sigma=0.05), executor=AutoExecutor(force="sequential"),
                    checkpoint=path)
    r2 = s2.run()
    _, r_ref = run(SequentialExecutor(), seed=5, B=3, epochs=2)
    assert s2.resumed_from == 1
    assert [h.rewards for h in r2.history] == [h.rewards for h in r_ref.history]


# ------------------------------------------------------------------ the speed benchmarks run
def test_perf_suite_runs_quickly_and_writes_rows_with_provenance(tmp_path):
    """The benchmark suite (benchmarks/perf) once, tiny, with --benchmark-disable semantics."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cpu.csv"
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/perf", "-q", "-p", "no:cacheprovider",
                           "--benchmark-disable", "--perf-quick", "--perf-threads=1", f"--perf-out={out}"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    names = {r["name"] for r in rows}
    assert {"loss_vs_cross_entropy", "vectorized_vs_sequential_epoch", "auto_vs_best_epoch", "auto_vs_best_run",
            "screening_candidates_per_second"} <= names
    for r in rows:
        assert r["commit"] and r["cpu"] and r["torch"] and r["date"] and r["threads"] == "1"
        assert float(r["value_s"]) > 0 and float(r["ratio"]) > 0


def test_perf_rows_merge_and_readme_table(tmp_path):
    import csv
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.perf import cases
    from benchmarks.perf.run import markdown, mini_tier_from_rows

    path = tmp_path / "cpu.csv"
    cases.write_rows([cases.row("loss_vs_cross_entropy", "128x10", 2e-4, "ce", 1e-4, 2.0, 3.0, threads=2),
                      cases.row("smoke_tier_total", "all tables", 90.0, "target", 120.0, 0.75, 1.0, threads=1)], path)
    cases.write_rows([cases.row("loss_vs_cross_entropy", "128x10", 3e-4, "ce", 1e-4, 3.5, 3.0, threads=2)], path)
    table = markdown(path, threads="2")
    assert "| 3.50 | **no** |" in table and "1.5 min" in table and "not run" in table
    # a tier timing's per-table rows replace the older run's as a set: a table no longer timed keeps no row
    def table_row(name, seconds):
        return cases.row("mini_tier_table", name, seconds, metric="seconds", threads=1, rounds=1)

    cases.write_rows([table_row("cifar10", 1500.0), table_row("ablation_sigma", 200.0)], path, replace=("mini_tier_table",))
    cases.write_rows([table_row("cifar10", 1590.0), table_row("megaface", 1337.0)], path, replace=("mini_tier_table",))
    with path.open(newline="") as f:
        kept = {(r["name"], r["case"]): float(r["value_s"]) for r in csv.DictReader(f)}
    assert {c: v for (n, c), v in kept.items() if n == "mini_tier_table"} == {"cifar10": 1590.0, "megaface": 1337.0}
    assert ("loss_vs_cross_entropy", "128x10") in kept and ("smoke_tier_total", "all tables") in kept  # others stay
    mini = mini_tier_from_rows()
    if mini:  # the committed mini-tier rows (some tables gained rows on a later day): hours, not days
        assert 0 < mini[0]["value_s"] < 3 * 3600


def test_tier_runs_are_appended_never_replaced_and_reused_rows_cost_nothing(tmp_path):
    import csv
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.perf import cases
    from benchmarks.perf.run import computed_job_seconds

    log = tmp_path / "tier_runs.csv"
    before = b""
    for total, jobs in ((1650.0, 3100.0), (1878.0, 3530.0)):  # two runs of the same tier: both kept, in order
        cases.append_run({**cases.row("mini_tier_total", "paper tables", total, "target", 1800.0, total / 1800, 1.0,
                                      metric="seconds", threads=1, rounds=1), "jobs_s": jobs}, log)
        assert log.read_bytes().startswith(before)  # the earlier rows byte for byte (csv's \r\n kept)
        before = log.read_bytes()
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == cases.RUN_COLUMNS
    assert [(r["value_s"], r["jobs_s"], r["meets"]) for r in rows] == [("1650", "3100", "True"), ("1878", "3530", "False")]
    assert rows[0]["commit"] and rows[0]["date"]
    other = tmp_path / "other.csv"
    other.write_text("name,value\nx,1\n")
    with pytest.raises(ValueError, match="does not have the run log's columns"):
        cases.append_run(rows[0], other)
    assert other.read_text() == "name,value\nx,1\n"  # refused, not rewritten

    def write(rel, seconds, reused=False):
        p = tmp_path / "runs" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        prov = {"wall_seconds": seconds, **({"reused_from": {"row": "x"}} if reused else {})}
        p.write_text(json.dumps({"table": rel.split("/")[1], "provenance": prov}))

    write("mini/a/d/m/default/seed=0.json", 10.5)
    write("mini/a/d/m/default/seed=1.json", 2.0)
    write("mini/b/d/m/default/seed=0.json", 10.5, reused=True)  # a copy of a's row: no computation
    (tmp_path / "runs" / "mini/a/d/m/default/seed=2.json").write_text("{not json")  # skipped
    assert computed_job_seconds(tmp_path / "runs", "mini") == 12.5


def test_mini_tier_spans_count_the_time_jobs_ran_not_the_days_between():
    import datetime as dt

    from benchmarks.perf.run import _union_seconds

    t0 = dt.datetime(2026, 11, 23, 12, 0, 0)
    s = dt.timedelta(seconds=1)
    jobs = [(t0, t0 + 10 * s), (t0 + 5 * s, t0 + 20 * s),  # two at a time: 20 s
            (t0 + dt.timedelta(days=8), t0 + dt.timedelta(days=8) + 7 * s)]  # rows added a week later
    assert _union_seconds(jobs) == 27.0


# ------------------------------------------------------------ the fast AM-LFS loss (lfs/loss.py)
# Its closed-form backward against the loss composed of autograd ops (the first implementation).
from torch.func import grad, vmap  # noqa: E402

from lfs.loss import am_lfs_loss, am_lfs_loss_autograd  # noqa: E402
from lfs.loss_kernel import _thresholds  # noqa: E402
from lfs.search_space import T_DOMAIN, TAU_DOMAIN, interval_index  # noqa: E402


def _case(N, C, scale_kind, sigma, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(N, C, generator=g, dtype=dtype) * 2 - 1
    target = torch.randint(0, C, (N,), generator=g)
    theta = lfs.identity_theta(6, dtype=dtype) + sigma * torch.randn(24, generator=g, dtype=dtype)
    scale = {"number": 5.0, "0-d": torch.full((), 5.0, dtype=dtype),
             "row": torch.rand(N, 1, generator=g, dtype=dtype) * 5 + 1,
             "full": torch.rand(N, C, generator=g, dtype=dtype) * 5 + 1}[scale_kind]
    return cos, target, theta, scale


@pytest.mark.parametrize("scale_kind", ["number", "0-d", "row", "full"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("invalid_tau", ["ignore", "nan"])
def test_fast_loss_equals_autograd_loss_and_gradients(scale_kind, reduction, invalid_tau):
    for seed, sigma in [(0, 0.05), (1, 0.5)]:  # sigma 0.5: many invalid tau
        cos, target, theta, scale = _case(9, 7, scale_kind, sigma, seed)
        w = torch.randn(9, dtype=torch.float64)
        out = []
        for fn in (am_lfs_loss, am_lfs_loss_autograd):
            c = cos.clone().requires_grad_(True)
            s = scale.clone().requires_grad_(True) if scale_kind in ("row", "full") else scale
            loss = fn(c, target, theta, s, reduction=reduction, invalid_tau=invalid_tau)
            (loss * w if reduction == "none" else loss * 1.3).nansum().backward()
            out.append((loss.detach(), c.grad, s.grad if isinstance(s, torch.Tensor) and s.requires_grad else None))
        (l1, g1, s1), (l2, g2, s2) = out
        torch.testing.assert_close(l1, l2, rtol=1e-9, atol=1e-9, equal_nan=True)
        torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)
        if s2 is not None:
            torch.testing.assert_close(s1, s2, rtol=1e-8, atol=1e-10)


def test_fast_loss_float32_matches_autograd_at_face_scale():
    cos, target, theta, _ = _case(256, 10575, "number", 0.2, 2, dtype=torch.float32)
    out = []
    for fn in (am_lfs_loss, am_lfs_loss_autograd):
        c = cos.clone().requires_grad_(True)
        loss = fn(c, target, theta.double(), 64.0, reduction="none")
        loss.sum().backward()
        out.append((loss.detach(), c.grad))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=2e-4, atol=1e-6)


def test_fast_loss_under_vmap_over_copies_equals_a_loop():
    """The vectorized executor's case: per-copy cosines, targets, thetas and scales."""
    g = torch.Generator().manual_seed(3)
    B, N, C = 4, 16, 5
    cos = (torch.rand(B, N, C, generator=g) * 2 - 1).requires_grad_(True)
    target = torch.randint(0, C, (B, N), generator=g)
    thetas = lfs.identity_theta(6) + 0.3 * torch.randn(B, 24, generator=g)
    scale = (torch.rand(B, N, 1, generator=g) + 1).requires_grad_(True)
    batched = vmap(am_lfs_loss)(cos, target, thetas, scale)
    batched.sum().backward()
    g_cos, g_scale = cos.grad.clone(), scale.grad.clone()
    cos.grad = scale.grad = None
    looped = torch.stack([am_lfs_loss_autograd(cos[i], target[i], thetas[i], scale[i]) for i in range(B)])
    looped.sum().backward()
    torch.testing.assert_close(batched, looped)
    torch.testing.assert_close(g_cos, cos.grad)
    torch.testing.assert_close(g_scale, scale.grad)
    # vmapped dim not first, unbatched scale, and nested vmap
    c = cos.detach().movedim(0, 1)
    got = vmap(lambda x, th: am_lfs_loss(x, target[0], th, torch.tensor(3.0)), in_dims=(1, 0))(c, thetas)
    want = torch.stack([am_lfs_loss_autograd(cos[i].detach(), target[0], thetas[i], 3.0) for i in range(B)])
    torch.testing.assert_close(got, want)
    nested = vmap(vmap(lambda th: am_lfs_loss(cos[0].detach(), target[0], th, 2.0)))(thetas.view(2, 2, 24))
    want = torch.stack([am_lfs_loss_autograd(cos[0].detach(), target[0], th, 2.0) for th in thetas]).view(2, 2)
    torch.testing.assert_close(nested, want)


def test_fast_loss_under_torch_func_grad():
    cos, target, theta, _ = _case(8, 5, "number", 0.2, 4)
    got = grad(lambda c: am_lfs_loss(c, target, theta, 3.0))(cos)
    c = cos.clone().requires_grad_(True)
    am_lfs_loss_autograd(c, target, theta, 3.0).backward()
    torch.testing.assert_close(got, c.grad)


def test_fast_loss_edge_cases():
    cos, target, theta, _ = _case(6, 5, "number", 0.1, 5, dtype=torch.float32)
    cos[0, 0] = math.nan  # a diverged model: NaN, not an index error
    loss = am_lfs_loss(cos, target, theta, 2.0, reduction="none")
    assert torch.isnan(loss[0]) and torch.isfinite(loss[1:]).all()
    # theta that requires a gradient takes the autograd path (and gets its gradient)
    th = theta.clone().double().requires_grad_(True)
    am_lfs_loss(cos[1:], target[1:], th, 2.0).backward()
    assert th.grad is not None and th.grad.abs().sum() > 0
    # second derivatives are refused, not silently wrong
    c = cos[1:].clone().requires_grad_(True)
    torch.autograd.grad(am_lfs_loss(c, target[1:], theta, 2.0), c)  # first derivatives: fine
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(am_lfs_loss(c, target[1:], theta, 2.0), c, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M", [1, 2, 6, 7])
def test_bucketize_thresholds_reproduce_the_arithmetic_interval_index(dtype, M):
    for domain in (T_DOMAIN, TAU_DOMAIN):
        thr = _thresholds(M, domain, dtype, torch.device("cpu"))
        x = torch.cat([torch.rand(20000, dtype=torch.float64) * 3 - 1.5,
                       torch.tensor([0.0, -0.0, 1.0, -1.0, math.inf, -math.inf], dtype=torch.float64)]).to(dtype)
        near = []
        for t in thr:  # every float next to each threshold
            v = t.clone()
            for _ in range(4):
                v = torch.nextafter(v, torch.tensor(-math.inf, dtype=dtype))
            for _ in range(8):
                near.append(v.clone())
                v = torch.nextafter(v, torch.tensor(math.inf, dtype=dtype))
        if near:
            x = torch.cat([x, torch.stack(near)])
        assert torch.equal(torch.bucketize(x, thr, right=True), interval_index(x, M, domain))


def test_fast_loss_zero_bias_intervals_and_in_place_theta_change():
    """Intervals with b_tau = 0 (tau = a p) take log a + log p; a theta changed in place between
    calls (its per-interval tables are kept per tensor) gives the changed loss."""
    cos, target, theta, _ = _case(40, 6, "number", 0.1, 6)
    M = 6
    theta[3 * M::2] = 0.0  # every other tau interval without bias
    theta[2 * M:3 * M] = torch.linspace(0.5, 1.5, M, dtype=theta.dtype)
    for _ in range(2):
        out = []
        for fn in (am_lfs_loss, am_lfs_loss_autograd):
            c = cos.clone().requires_grad_(True)
            loss = fn(c, target, theta, 4.0, reduction="none")
            loss.sum().backward()
            out.append((loss.detach(), c.grad))
        torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-8, atol=1e-10)
        theta.mul_(1.1)  # in place: the next pass must see it


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fast_loss_half_precision_follows_float32(dtype):
    """Half-precision cosines: t in the model's precision, tau in float32 (as the autograd path
    computes it from the same half-precision log p)."""
    cos, target, theta, _ = _case(32, 10, "number", 0.2, 7, dtype=torch.float32)
    ch = cos.to(dtype)
    out = []
    for fn in (am_lfs_loss, am_lfs_loss_autograd):
        c = ch.clone().requires_grad_(True)
        loss = fn(c, target, theta, 8.0, reduction="none")
        loss.float().sum().backward()
        out.append((loss.detach().float(), c.grad.float()))
    assert out[0][0].dtype == torch.float32 and torch.isfinite(out[0][0]).all()
    torch.testing.assert_close(out[0][0], out[1][0], rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=5e-2, atol=5e-3)


def test_tau_positive_decides_when_the_loss_may_skip_masking():
    """Masking invalid tau is skipped only for a theta whose tau is safely > 0 on all of [0, 1]."""
    from lfs.loss_kernel import _tau_positive

    M = 6
    ident = lfs.identity_theta(M, dtype=torch.float64)
    assert _tau_positive(ident)  # tau = p: b = 0 < a
    th = ident.clone()
    th[3 * M] = -0.01  # tau(0) < 0 in the first interval
    assert not _tau_positive(th)
    th = ident.clone()
    th[2 * M + 2], th[3 * M + 2] = 1.0, -2 / M + 1e-9  # positive on interval 2, by less than the margin
    assert not _tau_positive(th)
    th[3 * M + 2] = -2 / M + 0.01  # now by a margin
    assert _tau_positive(th)
    # and the loss with such a theta still equals the reference
    cos, target, _, _ = _case(50, 4, "number", 0.0, 8)
    torch.testing.assert_close(am_lfs_loss(cos, target, th, 3.0, reduction="none"),
                               am_lfs_loss_autograd(cos, target, th, 3.0, reduction="none"), rtol=1e-9, atol=1e-9)


def test_fast_loss_under_torch_compile_equals_eager():
    """Traced by torch.compile (its caches bypassed while compiling), called twice (the second
    time from the compiled graph): the same loss and gradient as eager."""
    cos, target, theta, _ = _case(12, 5, "number", 0.05, 9, dtype=torch.float32)
    compiled = torch.compile(lambda c: am_lfs_loss(c, target, theta, 3.0), backend="eager")
    c = cos.clone().requires_grad_(True)
    am_lfs_loss(c, target, theta, 3.0).backward()
    for _ in range(2):
        x = cos.clone().requires_grad_(True)
        loss = compiled(x)
        loss.backward()
        torch.testing.assert_close(loss, am_lfs_loss(cos, target, theta, 3.0))
        torch.testing.assert_close(x.grad, c.grad)


def test_a_subset_of_the_perf_suite_keeps_the_whole_runs_raw_record():
    """``perf/run.py -- -k X`` must not replace results/perf/benchmark-cpu.json (the whole suite's
    pytest-benchmark record) with X's tests alone."""
    from benchmarks.perf import cases
    from benchmarks.perf.run import benchmark_json

    assert benchmark_json([]) == cases.RESULTS / "benchmark-cpu.json"
    subset = benchmark_json(["-k", "cpu_numerics"])
    assert subset != cases.RESULTS / "benchmark-cpu.json" and cases.RESULTS not in subset.parents
