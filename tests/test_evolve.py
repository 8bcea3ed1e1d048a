"""lfs.evolve: loss expressions parse, print back, compile, and equal torch.nn's losses (float64,
1e-6); the Gradient-Equivalence-Check signature; one-line errors naming the position."""
import math

import pytest
import torch
import torch.nn.functional as F

import lfs.evolve as ev


def batch(n=16, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, c, (n,), generator=g)
    return x, t, F.one_hot(t, c).to(torch.float64)


# formula -> torch.nn's loss of (logits x, class indices t, one-hot y), per-sample mean over classes
TORCH_NN = {
    "cross_entropy": ("neg(dot(y, log(softmax(x))))", lambda x, t, y: F.cross_entropy(x, t)),
    "nll_of_log_softmax": ("neg(dot(y, log(softmax(x))))", lambda x, t, y: F.nll_loss(F.log_softmax(x, -1), t)),
    "bce_with_logits": ("add(mul(y, softplus(neg(x))), mul(sub(1, y), softplus(x)))",
                        lambda x, t, y: F.binary_cross_entropy_with_logits(x, y)),
    "mse_on_softmax": ("square(sub(softmax(x), y))", lambda x, t, y: F.mse_loss(torch.softmax(x, -1), y)),
    "mse_on_softmax_cse_set": ("mul(sub(softmax(x), y), sub(softmax(x), y))",
                               lambda x, t, y: F.mse_loss(torch.softmax(x, -1), y)),
    "l1_on_softmax": ("abs(sub(softmax(x), y))", lambda x, t, y: F.l1_loss(torch.softmax(x, -1), y)),
    # Huber / smooth L1 (delta = beta = 1): 0.5 m^2 + (|d| - m) with m = min(|d|, 1) = |d| - relu(|d| - 1);
    # on softmax outputs |d| <= 1, so the quadratic branch is the one reached
    "smooth_l1_on_softmax": ("add(div(square(sub(abs(sub(softmax(x), y)), relu(sub(abs(sub(softmax(x), y)), 1)))), 2), "
                             "relu(sub(abs(sub(softmax(x), y)), 1)))",
                             lambda x, t, y: F.smooth_l1_loss(torch.softmax(x, -1), y, beta=1.0)),
    "huber_on_scaled_logits": ("add(div(square(sub(abs(sub(x, y)), relu(sub(abs(sub(x, y)), 1)))), 2), "
                               "relu(sub(abs(sub(x, y)), 1)))",
                               lambda x, t, y: F.huber_loss(x, y, delta=1.0)),  # both branches reached
    "kl_div": ("dot(y, sub(log(y), log(softmax(x))))",
               lambda x, t, y: F.kl_div(F.log_softmax(x, -1), y, reduction="batchmean")),
    "soft_margin": ("softplus(neg(mul(sub(mul(2, y), 1), x)))", lambda x, t, y: F.soft_margin_loss(x, 2 * y - 1)),
    "multi_margin": ("mul(sub(1, y), relu(add(sub(1, dot(y, x)), x)))",
                     lambda x, t, y: F.multi_margin_loss(x, t)),
}


@pytest.mark.parametrize("name", sorted(TORCH_NN))
def test_torch_nn_losses_are_expressible_and_equal(name):
    formula, reference = TORCH_NN[name]
    loss = ev.parse(formula)
    for seed in range(3):
        x, t, y = batch(seed=seed)
        ours = loss(x, y)
        assert ours.shape == (16,) and ours.dtype == torch.float64
        assert abs(float(ours.mean()) - float(reference(x, t, y))) < 1e-6, name  # kl_div: batchmean
        # differentiable in x, with torch's gradient
        xg = x.clone().requires_grad_(True)
        (g_ours,) = torch.autograd.grad(loss(xg, y).mean(), xg)
        xr = x.clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(reference(xr, t, y), xr)
        assert torch.allclose(g_ours, g_ref, atol=1e-6, rtol=0), name


def test_formulas_print_back_to_the_same_tree():
    for formula, _ in TORCH_NN.values():
        loss = ev.parse(formula)
        assert str(loss) == formula
        assert ev.parse(str(loss)) == loss and ev.parse(str(loss)).tree == loss.tree
    assert str(ev.parse("  add( x ,2.5 )")) == "add(x, 2.5)"
    assert str(ev.parse("mul(3, x)")) == "mul(3, x)"


def test_compiled_once_into_one_function_of_operator_calls():
    loss = ev.parse("neg(dot(y, log(softmax(x))))")
    assert loss.source.count("def ") == 1 and "_log_softmax_eps(in_x)" in loss.source
    assert loss._fn.__code__.co_name == "_loss"


def test_other_inputs_need_no_change_of_the_core():
    l1 = ev.parse("abs(sub(pred, target))", inputs=("pred", "target"))
    p, q = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(l1(p, q).mean(), F.l1_loss(p, q))


def test_cse_autoloss_operators_follow_their_rescaled_definitions():
    a = torch.linspace(-6, 6, 101, dtype=torch.float64)
    for op in ("gd", "alf", "erf"):
        v = ev.OPERATORS[op].fn(a)
        assert bool(((v > 0) & (v < 1)).all()) and abs(float(ev.OPERATORS[op].fn(torch.zeros(1))) - 0.5) < 1e-12
        assert bool((v[1:] > v[:-1]).all())  # increasing
    assert torch.allclose(ev.OPERATORS["erf"].fn(a), (torch.erf(math.sqrt(math.pi) / 2 * a / 2) + 1) / 2)
    assert torch.allclose(ev.OPERATORS["alf"].fn(a), (a / 2 / torch.sqrt(1 + (a / 2) ** 2) + 1) / 2)
    # safe semantics: finite everywhere they are documented to be
    for op in ("log", "sqrt", "exp", "inv"):
        v = ev.OPERATORS[op].fn(torch.tensor([-1e6, -1.0, 0.0, 1.0, 1e6], dtype=torch.float64))
        assert bool(torch.isfinite(v).all()), op
    assert len(ev.CSE_AUTOLOSS) == 20 and set(ev.AUTOLOSS_ZERO) - set(ev.CSE_AUTOLOSS) == {"inv", "square", "mean"}


def test_gec_signature_equal_for_algebraically_equal_losses_not_for_scaled_ones():
    ce = "neg(dot(y, log(softmax(x))))"
    s = ev.signature(ev.parse(ce))
    assert len(s) == 32 and all(len(v) == len("1.1e+00") for v in s)
    assert ev.signature(ev.parse(f"neg(neg({ce}))")) == s
    assert ev.signature(ev.parse(f"mul(1, {ce})")) == s
    assert ev.signature(ev.parse(f"add({ce}, 3)")) == s  # a constant shift has the same gradient
    assert ev.signature(ev.parse(f"mul(2, {ce})")) != s
    assert ev.signature(ev.parse("neg(dot(y, softmax(x)))")) != s
    no_grad = ev.signature(ev.parse("mul(y, 2)"))
    assert set(no_grad) == {"0.0e+00"}


@pytest.mark.parametrize("formula,needle", [
    ("neg(lgo(x))", "unknown operator 'lgo' at position 4"),
    ("neg(x", "expected ')' at position 5"),
    ("add(x)", "'add' at position 0 of 'add(x)' takes 2 argument(s), got 1"),
    ("neg(z)", "unknown input 'z' at position 4"),
    ("neg(x))", "unexpected ')' at position 6"),
    ("x + y", "unexpected character '+' at position 2"),
    ("softmax", "operator 'softmax' at position 0"),
    ("", "non-empty string"),
])
def test_bad_formulas_are_one_line_errors_naming_the_position(formula, needle):
    with pytest.raises(ev.ExpressionError) as e:
        ev.parse(formula)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------- screening and evolution
from lfs.evolve.evolution import EvolutionConfig, EvolutionSearch  # noqa: E402
from lfs.evolve.screening import Screen, ScreeningConfig  # noqa: E402


def test_screening_rejects_with_the_right_reason():
    screen = Screen(ScreeningConfig(lrp_steps=10))
    ce = screen(ev.parse("neg(dot(y, log(softmax(x))))"))
    assert ce.accepted and ce.lrp_score > 0.5  # optimizing the predictions with CE makes them correct
    assert screen(ev.parse("mul(y, 2)")).reason == "no gradient"  # constant in x
    assert screen(ev.parse("div(1, sub(x, x))")).reason == "no gradient"
    assert screen(ev.parse("dot(y, log(softmax(x)))")).reason == "failed convergence check"  # minus CE
    assert screen(ev.parse("mul(exp(mul(x, 100)), exp(mul(x, 100)))")).reason == "invalid value"  # inf in float32
    # LRP alone: a loss that does not improve accuracy
    lrp_only = Screen(ScreeningConfig(verify=False, lrp_steps=10))
    d = lrp_only(ev.parse("dot(y, log(softmax(x)))"))
    assert d.reason == "rejected by LRP" and d.lrp_score < 0
    with pytest.raises(ValueError, match="screening.lrp_steps must be a positive integer"):
        ScreeningConfig(lrp_steps=0)


def _fitness(loss):
    """A cheap deterministic proxy: the LRP score with a few steps (no network)."""
    return Screen(ScreeningConfig(lrp_steps=5, lrp_samples=64)).lrp_score(loss)


def _search(tmp_path=None, **kw):
    cfg = dict(population=6, children=3, tournament=2, max_evaluations=12, seed=3)
    cfg.update(kw)
    calls = []

    def evaluate(loss):
        calls.append(str(loss))
        return _fitness(loss)

    s = EvolutionSearch(evaluate, EvolutionConfig(**cfg), ScreeningConfig(lrp_steps=5, lrp_samples=64),
                        checkpoint=None if tmp_path is None else tmp_path / "evo.ckpt")
    return s, calls


def test_evolution_is_deterministic_per_seed_and_records_every_rejection():
    a, calls_a = _search()
    ra = a.run()
    b, calls_b = _search()
    rb = b.run()
    assert [(h.formula, h.fitness, h.reason) for h in ra.history] == [(h.formula, h.fitness, h.reason) for h in rb.history]
    assert ra.evaluations == 12 == len(calls_a) and ra.stopped_by == "max_evaluations"
    rejected = [h for h in ra.history if h.fitness is None]
    assert sum(ra.rejected.get(r, 0) for r in ra.rejected if r != "GEC duplicate") == len(rejected)
    assert all(h.reason for h in rejected)
    c, _ = _search(seed=4)
    assert [h.formula for h in c.run().history] != [h.formula for h in ra.history]


def test_gec_duplicates_reuse_the_fitness_without_training():
    s, calls = _search(init="seeds", seeds=("neg(dot(y, log(softmax(x))))", "neg(neg(neg(dot(y, log(softmax(x))))))",
                                            "mul(1, neg(dot(y, log(softmax(x)))))"), max_evaluations=3)
    r = s.run()
    dup = [h for h in r.history if h.reason == "GEC duplicate"]
    assert dup and all(h.reused and h.fitness == r.history[0].fitness for h in dup)
    assert calls[0] == "neg(dot(y, log(softmax(x))))" and "mul(1, neg(dot(y, log(softmax(x)))))" not in calls


def test_evolution_resumes_after_a_kill_with_the_same_history(tmp_path):
    reference, _ = _search()
    ref = reference.run()

    class Killed(Exception):
        pass

    s, calls = _search(tmp_path)
    original = s.evaluate

    def dies_after_five(loss):
        if len(calls) >= 5:
            raise Killed
        return original(loss)

    s.evaluate = dies_after_five
    with pytest.raises(Killed):
        s.run()
    again, _ = _search(tmp_path)  # a new process: everything from the checkpoint
    res = again.run()
    assert [(h.formula, h.fitness, h.reason) for h in res.history] == \
        [(h.formula, h.fitness, h.reason) for h in ref.history]
    assert res.best == ref.best and res.evaluations == ref.evaluations
    other, _ = _search(tmp_path, population=7)
    with pytest.raises(ValueError, match="evolution.population=6, this one has 7"):
        other.run()


@pytest.mark.parametrize("kw,needle", [({"max_evaluations": 0}, "evolution.max_evaluations must be an integer >= 1"),
                                       ({"max_evaluations": None}, "cannot all be None"),
                                       ({"max_seconds": -1.0}, "evolution.max_seconds must be > 0"),
                                       ({"tournament": 30}, "evolution.tournament must be <= population"),
                                       ({"operators": "all"}, "evolution.operators must be one of")])
def test_bad_evolution_settings_are_one_line(kw, needle):
    with pytest.raises(ValueError) as e:
        EvolutionConfig(**kw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_wrong_input_shapes_are_one_line():
    ce = ev.parse("neg(dot(y, log(softmax(x))))")
    x, t, y = batch()
    for args, needle in [((x, y[:, :3]), "got x (16, 7), y (16, 3)"), ((x[0], y[0]), "got x (7,), y (7,)"),
                         ((x,), "takes 2 inputs (x, y), got 1")]:
        with pytest.raises(ValueError) as e:
            ce(*args)
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_random_variant_draws_every_child_afresh():
    s, _ = _search(variant="random", max_evaluations=6)
    r = s.run()
    assert r.stopped_by == "max_evaluations" and len({h.formula for h in r.history}) > 6


def test_an_evolution_method_runs_as_a_table_job():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from benchmarks import runner
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "benchmarks" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["+table=autoloss_zero", "tier=smoke", "dataset=digits", "method=autoloss_zero",
                                           "progress=false"])
    cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    metrics, extra, history = runner.run(cfg)
    assert 0 <= metrics["top1_error"] <= 100
    assert extra["evaluations"] == 4 and extra["stopped_by"] == "max_evaluations"
    assert extra["explored"] == len(history) >= 4 and extra["explored_per_hour"] > 0
    assert sum(extra["rejected"].values()) == sum(1 for h in history if h["reason"])
    assert extra["model_epochs"] == 4 * 1 + cfg["train"]["epochs"]  # proxy epochs of each evaluation + the retraining
    assert str(ev.parse(extra["loss"])) == extra["loss"]


def test_best_reward_figure_from_rows_and_histories(tmp_path):
    from benchmarks import figures, results

    for method, fits in (("autoloss_zero", [None, 0.2, None, 0.5]), ("evolve_naive", [0.1, None, 0.3])):
        for seed in (0, 1):
            row = results.make_row(table="autoloss_zero", tier="mini", dataset="digits", method=method, setting={},
                                   seed=seed, metrics={"top1_error": 10.0}, provenance={})
            path = results.row_path(tmp_path / "res", "mini", "autoloss_zero", "digits", method, {}, seed)
            results.atomic_write_json(path, row)
            results.write_history(path, [{"formula": "x", "fitness": f, "reason": None if f else "no gradient"}
                                         for f in fits])
    out = figures.evolution_curves(results.load_rows(tmp_path / "res"), tmp_path / "fig")
    assert out is not None and out.name == "autoloss_zero_best_reward.png" and out.stat().st_size > 10_000
    assert figures.evolution_curves([], tmp_path / "fig2") is None


# ---------------------------------------------------------------- the model optimization simulation
def _simulation_task():
    import lfs
    from lfs.family import make_family

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 8, generator=g) * 3
    t = torch.arange(200) % 5
    x = centers[t] + torch.randn(200, 8, generator=g)
    return lfs.SupervisedTask(lambda: torch.nn.Linear(8, 5), lambda p: torch.optim.SGD(p, lr=0.1),
                              make_family("expression").loss, (x, t), (x, t), batch_size=20)


def test_one_per_class_draws_one_example_of_every_class():
    from lfs.evolve.simulation import one_per_class

    t = torch.tensor([3, 1, 1, 0, 3, 2, 2, 0, 1])
    idx = one_per_class(t, seed=1)
    assert t[idx].tolist() == [0, 1, 2, 3]
    assert sorted(t[one_per_class(t, 2, seed=1)].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        one_per_class(t, 0)


def test_optimization_simulation_passes_cross_entropy_and_rejects_its_negative():
    from lfs.evolve.simulation import OptimizationSimulation

    sim = OptimizationSimulation(_simulation_task(), steps=20)
    assert len(sim.y) == 5 and sorted(sim.y.tolist()) == [0, 1, 2, 3, 4]
    before = torch.random.get_rng_state()
    gained = sim(ev.parse("neg(dot(y, log(softmax(x))))"))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is untouched
    assert gained > 0 and gained == sim(ev.parse("neg(dot(y, log(softmax(x))))"))  # deterministic
    assert sim(ev.parse("dot(y, log(softmax(x)))")) <= 0  # minus cross entropy unlearns
    assert sim(ev.parse("mul(exp(mul(x, 100)), exp(mul(x, 100)))")) == -math.inf  # inf in float32
    screen = Screen(ScreeningConfig(verify=False, lrp=False, simulate=True, simulate_steps=20), simulation=sim)
    assert screen(ev.parse("neg(dot(y, log(softmax(x))))")).accepted
    assert screen(ev.parse("dot(y, log(softmax(x)))")).reason == "failed optimization simulation"
    with pytest.raises(ValueError, match="screening.simulate needs a model optimization simulation"):
        Screen(ScreeningConfig(simulate=True))
    with pytest.raises(ValueError, match="simulate_steps must be an integer >= 1"):
        OptimizationSimulation(_simulation_task(), steps=0)


def test_max_explored_budget_counts_every_candidate_considered():
    s, calls = _search(max_evaluations=None, max_explored=10, init="seeds")
    r = s.run()
    assert r.stopped_by == "max_explored" and len(r.history) == 10 and r.evaluations == len(calls) <= 10
    with pytest.raises(ValueError, match="evolution.max_explored must be an integer >= 1"):
        EvolutionConfig(max_explored=0)


def test_a_cse_autoloss_job_filters_with_both_modules():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from benchmarks import runner
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "benchmarks" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["+table=cse_autoloss", "tier=smoke", "dataset=digits", "method=cse_autoloss",
                                           "evolve.max_explored=12", "progress=false"])
    cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    assert cfg["evolve"]["max_evaluations"] is None and cfg["setting"] == {"explored": 12}
    metrics, extra, history = runner.run(cfg)
    assert extra["stopped_by"] == "max_explored" and extra["explored"] == len(history) == 12
    assert history[0]["formula"] == "neg(dot(y, log(softmax(x))))" and history[0]["fitness"] is not None
    assert extra["evaluations"] == sum(1 for h in history if h["fitness"] is not None)
    assert sum(extra["rejected"].values()) == sum(1 for h in history if h["reason"])


def test_search_cost_section_and_found_loss_figure(tmp_path):
    from benchmarks import figures, report, results

    spent = {"cse_no_filter": (10, 8, 80.0, {"no gradient": 2}), "cse_autoloss": (10, 2, 10.0, {"failed convergence check": 8})}
    rows = []
    for method, (explored, trained, seconds, rejected) in spent.items():
        for seed in (0, 1):
            row = results.make_row(table="cse_autoloss", tier="mini", dataset="digits", method=method, setting={},
                                   seed=seed, metrics={"top1_error": 10.0 + seed},
                                   provenance={},
                                   extra={"explored": explored, "evaluations": trained, "search_seconds": seconds,
                                          "rejected": rejected, "best_fitness": 0.5 + seed,
                                          "loss": "neg(dot(y, softmax(x)))" if seed else "x"})
            rows.append(row)
    cells = {c["method"]: c for c in report.search_cost(rows, "cse_no_filter")}
    assert cells["cse_autoloss"]["speedup"] == pytest.approx(8.0) and cells["cse_no_filter"]["speedup"] == 1.0
    assert cells["cse_autoloss"]["filtered_pct"] == pytest.approx(80.0) and cells["cse_autoloss"]["trained"] == 2
    assert cells["cse_autoloss"]["rejected"] == {"failed convergence check": 16}
    md = tmp_path / "cse_autoloss.md"
    md.write_text("# table\n")
    csv_path = report.write_search_cost("mini", "cse_autoloss", rows, md)
    assert csv_path.name == "cse_autoloss_search.csv" and len(csv_path.read_text().splitlines()) == 3
    assert "## Search cost" in md.read_text() and "8.00x over cse_no_filter" in md.read_text()
    assert report.write_search_cost("mini", "cifar10", rows, md) is None
    out = figures.found_losses(rows, tmp_path / "fig", "cse_autoloss")
    assert out.name == "cse_autoloss_found_losses.png" and out.stat().st_size > 10_000
    assert figures.found_losses(rows, tmp_path / "fig", "cifar10") is None


CE = "neg(dot(y, log(softmax(x))))"


@pytest.mark.parametrize("kw,fails", [
    ({}, False),
    ({"init": "seeds", "seeds": (CE, "neg(neg(neg(dot(y, log(softmax(x))))))", "mul(1, " + CE + ")")}, False),
    # the first copy of a signature fails: its GEC duplicates in the same batch must be evaluated themselves
    ({"init": "seeds", "seeds": (CE, "mul(1, " + CE + ")", "neg(dot(y, softmax(x)))")}, True),
    ({"max_evaluations": None, "max_explored": 25, "init": "seeds"}, False),
    ({"gec": False, "children": 5, "max_evaluations": 20}, False)])
def test_batch_evaluation_gives_the_sequential_history(kw, fails):
    def fitness(loss):
        return -math.inf if fails and str(loss) == CE else _fitness(loss)

    def sequential_run():
        s, calls = _search(**kw)
        s.evaluate = lambda loss: calls.append(str(loss)) or fitness(loss)
        return s.run(), calls

    ref, calls = sequential_run()
    batches = []

    def evaluate_batch(losses):
        batches.append(len(losses))
        return [fitness(loss) for loss in losses]

    batched, _ = _search(**kw)
    batched.evaluate_batch = evaluate_batch
    res = batched.run()
    assert [(h.formula, h.fitness, h.reason, h.generation) for h in res.history] == \
        [(h.formula, h.fitness, h.reason, h.generation) for h in ref.history]
    assert res.evaluations == ref.evaluations == sum(batches) == len(calls)
    assert res.rejected == ref.rejected and res.best == ref.best and res.stopped_by == ref.stopped_by
    assert max(batches) > 1  # candidates of a generation went together
    if fails:
        assert calls.count("mul(1, " + CE + ")") == 1 and ref.rejected["failed simulation"] >= 1


def test_batch_evaluation_refuses_a_wrong_number_of_fitnesses_and_resumes_from_the_last_batch(tmp_path):
    s, _ = _search(tmp_path)
    s.evaluate_batch = lambda losses: [0.5] * (len(losses) + 1)
    with pytest.raises(RuntimeError, match=r"evaluate_batch returned \d+ fitnesses for \d+ candidates"):
        s.run()
    reference, _ = _search()
    ref = reference.run()
    again, _ = _search(tmp_path)  # resumed from the checkpoint saved before the bad batch
    again.evaluate_batch = lambda losses: [_fitness(loss) for loss in losses]
    res = again.run()
    assert [(h.formula, h.fitness) for h in res.history] == [(h.formula, h.fitness) for h in ref.history]


def test_a_simulation_whose_fresh_model_is_already_right_is_one_line():
    import lfs
    from lfs.evolve.simulation import OptimizationSimulation
    from lfs.family import make_family

    x, t = torch.eye(2), torch.tensor([0, 1])

    class Right(torch.nn.Module):  # already right on both examples
        def forward(self, inp):
            return inp * 10

    task = lfs.SupervisedTask(Right, lambda p: torch.optim.SGD(list(p) or [torch.zeros(1, requires_grad=True)], lr=0.1),
                              make_family("expression").loss, (x, t), (x, t), batch_size=2)
    with pytest.raises(ValueError, match="already right on all 2 of its examples") as info:
        OptimizationSimulation(task)
    assert "\n" not in str(info.value)


def test_the_simulation_scores_the_training_head_of_a_retrieval_model():
    import lfs
    from lfs.evolve.simulation import OptimizationSimulation
    from lfs.family import make_family

    class Head(torch.nn.Module):  # (cos, scale) like lfs's normalized heads; the task's reward is elsewhere
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 5)

        def forward(self, inp):
            return torch.tanh(self.lin(inp)), torch.tensor(10.0)

    base = _simulation_task()
    task = lfs.SupervisedTask(Head, lambda p: torch.optim.SGD(p, lr=0.1), make_family("expression").loss,
                              base.train_data, base.val_data, batch_size=20, predict_fn=lambda emb: emb)
    assert OptimizationSimulation(task)(ev.parse(CE)) > 0
