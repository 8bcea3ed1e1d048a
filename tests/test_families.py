"""Loss families and searchers: the interfaces, run over their registries, and Search-Softmax against
its paper's equations (Wang et al., ICML 2020, Eq. 5-8)."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

import baselines
import lfs
from lfs.family import LossFamily, ParametricFamily, family_class, list_families, make_family, register_family
from lfs.families.search_softmax import modulating_factor, search_softmax_loss
from lfs.search import LossSearch, SearchConfig
from lfs.searcher import Searcher, list_searchers, make_searcher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_search import make_task, params_of  # noqa: E402

FAMILY_ARGS = {"piecewise_linear": [{"M": 3}, {"M": 6}], "search_softmax": [{"space": "global"}, {"space": "local"}],
               "poly1": [{}]}
SEARCHER_ARGS = {"gaussian": {"mode": "learn", "sigma": 0.05, "sigma_is": "std"}, "uniform": {"low": 0.0, "high": 0.3},
                 "grid": {"values": [[0.05 * i] * 10 for i in range(6)]}}


# families whose candidates are not real vectors (formulas): their own tests below
OTHER_FAMILY_ARGS = {"expression": [{"operators": "cse_autoloss"}, {"operators": "autoloss_zero"}]}


def builtin_families():
    return [n for n in list_families() if family_class(n).__module__.startswith("lfs.families.")
            and n not in OTHER_FAMILY_ARGS]


def every_family():
    return [(name, kw) for name in builtin_families() for kw in FAMILY_ARGS[name]]


def head_output(seed=0, n=12, c=5, s=16.0):
    g = torch.Generator().manual_seed(seed)
    cos = (2 * torch.rand(n, c, generator=g, dtype=torch.float64) - 1).requires_grad_(True)
    return (cos, torch.tensor(s, dtype=torch.float64)), torch.randint(0, c, (n,), generator=g)


# --------------------------------------------------------------------------- every family
def test_every_registered_family_has_test_arguments():
    assert set(builtin_families()) == set(FAMILY_ARGS)
    assert all(issubclass(family_class(n), ParametricFamily) for n in FAMILY_ARGS)
    assert {n for n in list_families() if family_class(n).__module__.startswith("lfs.families.")} == \
        set(FAMILY_ARGS) | set(OTHER_FAMILY_ARGS)
    assert set(list_searchers()) == set(SEARCHER_ARGS)


@pytest.mark.parametrize("name,kw", every_family())
def test_identity_candidate_is_exactly_cross_entropy(name, kw):
    fam = make_family(name, **kw)
    (cos, s), y = head_output()
    torch.testing.assert_close(fam.loss((cos, s), y, fam.identity()), F.cross_entropy(s * cos, y), rtol=1e-14, atol=0)


@pytest.mark.parametrize("name,kw", every_family())
def test_candidates_round_trip_json_and_describe(name, kw):
    fam = make_family(name, **kw)
    cand = fam.identity() + 0.1 * torch.arange(fam.dim, dtype=torch.float64)
    back = fam.from_json(json.loads(json.dumps(fam.to_json(cand))))
    assert torch.equal(back, cand)
    text = fam.describe(cand)
    assert isinstance(text, str) and "\n" not in text and len(text) > 10
    assert fam.name == name and family_class(name) is type(fam)


@pytest.mark.parametrize("name,kw", every_family())
def test_stacked_candidates_vmap_equals_loop(name, kw):
    fam = make_family(name, **kw)
    assert fam.stackable
    g = torch.Generator().manual_seed(3)
    cands = [fam.identity() + 0.05 * torch.rand(fam.dim, generator=g, dtype=torch.float64) for _ in range(4)]
    batch = fam.batch(cands)
    assert torch.is_tensor(batch) and batch.shape == (4, fam.dim)
    (cos, s), y = head_output(4)
    cos = cos.detach()
    got = vmap(lambda c: fam.loss((cos, s), y, c))(batch)
    want = torch.stack([fam.loss((cos, s), y, c) for c in cands])
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kw", OTHER_FAMILY_ARGS["expression"])
def test_expression_family_identity_is_cross_entropy_and_formulas_round_trip(kw):
    fam = make_family("expression", **kw)
    assert not fam.stackable
    (cos, s), y = head_output(s=16.0)
    torch.testing.assert_close(fam.loss((cos, s), y, fam.identity()), F.cross_entropy(s * cos, y), rtol=1e-12, atol=0)
    formula = "neg(dot(y, log(sigmoid(x))))"
    cand = fam.from_json(json.loads(json.dumps(fam.to_json(formula))))
    assert str(cand) == formula == fam.describe(cand)
    logits = s * cos
    onehot = F.one_hot(y, 5).to(logits.dtype)
    torch.testing.assert_close(fam.loss(logits, y, formula), -(onehot * F.logsigmoid(logits)).sum(-1).mean())
    assert len(fam.batch([formula, cand])) == 2  # a list: the sequential executor trains each


def test_expression_family_operator_sets():
    with pytest.raises(ValueError, match="operators must be one of cse_autoloss, autoloss_zero"):
        make_family("expression", operators="everything")
    with pytest.raises(ValueError, match="unknown operator 'square'"):  # not in CSE-Autoloss's set
        make_family("expression", operators="cse_autoloss").loss(torch.zeros(2, 3), torch.tensor([0, 1]),
                                                                 "square(x)")


def test_unknown_family_and_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="unknown loss family .nope.; available: .*expression, piecewise_linear, poly1, search_softmax"):
        make_family("nope")
    with pytest.raises(ValueError, match="space must be one of"):
        make_family("search_softmax", space="galactic")
    with pytest.raises(ValueError, match="loss family 'search_softmax'.*unexpected keyword"):
        make_family("search_softmax", M=3)


# --------------------------------------------------------------------------- Search-Softmax
def test_global_search_softmax_is_exactly_cosface():
    # Eq. 7-8: a = 1 - e^{s (cos_y - f)}; CosFace's f = cos_y - m makes a = 1 - e^{s m} constant
    (cos, s), y = head_output(1, s=30.0)
    for m in (0.0, 0.1, 0.35, 0.5):
        got = search_softmax_loss(cos, y, torch.tensor([m], dtype=torch.float64), s, reduction="none")
        torch.testing.assert_close(got, baselines.cosface(cos, y, 30.0, m=m, reduction="none"), rtol=1e-14, atol=0)


def test_loss_is_minus_log_of_h_times_p():
    # Eq. 7: p_m = p / (a p + 1 - a), computed here directly from p and a
    (cos, s), y = head_output(2, s=8.0)
    v = torch.tensor([0.3], dtype=torch.float64)
    p = torch.softmax(8.0 * cos, -1).gather(1, y[:, None]).squeeze(1)
    a = modulating_factor(v, 8.0)
    assert float(a) == pytest.approx(1 - math.exp(2.4))
    expected = -torch.log(p / (a * p + 1 - a))
    torch.testing.assert_close(search_softmax_loss(cos, y, v, s, reduction="none"), expected)
    assert (expected >= -torch.log(p) - 1e-12).all()  # a <= 0 lowers p: the loss only grows


def test_local_space_uses_the_bin_of_p():
    n = 10
    target = torch.zeros(n, dtype=torch.long)
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # one example in each tenth of p
    # two classes: logit gap log(p / (1 - p)) gives p_y = p exactly
    logits = torch.stack([torch.log(p / (1 - p)), torch.zeros(n, dtype=torch.float64)], 1)
    v = torch.linspace(0.0, 0.9, n, dtype=torch.float64)
    got = search_softmax_loss(logits, target, v, 1.0, reduction="none")
    a = 1 - torch.exp(v)  # scale 1: example i in bin i uses a_i
    torch.testing.assert_close(got, -torch.log(p / (a * p + 1 - a)))
    # all bins equal is the global space
    same = search_softmax_loss(logits, target, torch.full((n,), 0.4, dtype=torch.float64), 1.0)
    torch.testing.assert_close(same, search_softmax_loss(logits, target, torch.tensor([0.4], dtype=torch.float64), 1.0))


def test_search_softmax_gradient_is_finite_at_confident_examples():
    cos = torch.tensor([[1.0, -1.0, -1.0], [0.2, 0.1, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2])
    loss = search_softmax_loss(cos, y, torch.full((10,), 0.5, dtype=torch.float64), 64.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(cos.grad).all()


def test_search_softmax_space_is_a_nonpositive():
    fam = make_family("search_softmax", space="local")
    v = torch.tensor([[0.0] * 10, [0.1] * 9 + [-0.01]], dtype=torch.float64)
    assert fam.in_space(v, "positive").tolist() == [True, False]
    assert fam.in_space(v, "none").tolist() == [True, True]
    with pytest.raises(ValueError, match="constraint must be one of"):
        fam.in_space(v, "weird")


# --------------------------------------------------------------------------- searchers
@pytest.mark.parametrize("searcher", sorted(SEARCHER_ARGS))
def test_every_searcher_is_deterministic_and_round_trips_its_state(searcher):
    fam = make_family("search_softmax", space="local")

    def build():
        s = make_searcher(searcher, **SEARCHER_ARGS[searcher])
        s.setup(fam)
        return s

    a, b = build(), build()
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ca, cb = a.propose(6, ga), b.propose(6, gb)
    assert torch.equal(ca, cb) and ca.shape == (6, 10)
    rewards = torch.linspace(0, 1, 6, dtype=torch.float64)
    failed = torch.zeros(6, dtype=torch.bool)
    json.dumps(a.observe(ca, rewards, failed))  # the record is JSON
    c = build()
    c.load_state_dict(a.state_dict())
    g1, g2, g3 = (torch.Generator().manual_seed(9) for _ in range(3))
    after = a.propose(6, g1)
    assert torch.equal(after, c.propose(6, g2))
    if searcher == "gaussian":  # the state mattered: a fresh searcher proposes otherwise
        assert not torch.equal(after, build().propose(6, g3))


def test_gaussian_searcher_samples_inside_the_family_space():
    s = make_searcher("gaussian", mode="fixed", sigma=0.2, sigma_is="std")
    s.setup(make_family("search_softmax", space="local"))
    v = s.propose(64, torch.Generator().manual_seed(0))
    assert (v >= 0).all() and v.shape == (64, 10)
    with pytest.raises(ValueError, match="constraint must be one of"):
        make_searcher("gaussian", constraint="weird").setup(make_family("search_softmax"))


def test_uniform_searcher_stays_in_its_box_and_rejects_an_empty_one():
    s = make_searcher("uniform", low=0.1, high=0.2)
    s.setup(make_family("search_softmax"))
    v = s.propose(100, torch.Generator().manual_seed(0))
    assert float(v.min()) >= 0.1 and float(v.max()) <= 0.2
    with pytest.raises(ValueError, match="search.low must be < search.high"):
        make_searcher("uniform", low=0.3, high=0.2)


# --------------------------------------------------------------------------- the loop
def ss_task():
    fam = make_family("search_softmax", space="local")
    task = make_task()
    task.loss_fn = fam.loss
    return task, fam


def run_ss(executor, epochs=2, checkpoint=None, searcher=None):
    task, fam = ss_task()
    searcher = searcher or make_searcher("gaussian", mode="learn", sigma=0.1, sigma_is="std")
    search = LossSearch(task, SearchConfig(epochs=epochs, B=4, seed=3, executor=executor), family=fam,
                        searcher=searcher, checkpoint=checkpoint)
    return search, search.run()


def test_search_softmax_vectorized_equals_sequential():
    _, seq = run_ss("sequential")
    _, vec = run_ss("vectorized")
    assert [r.chosen for r in seq.history] == [r.chosen for r in vec.history]
    assert [r.candidates for r in seq.history] == [r.candidates for r in vec.history]
    torch.testing.assert_close(torch.tensor(seq.mu_trajectory), torch.tensor(vec.mu_trajectory), rtol=0, atol=1e-6)
    torch.testing.assert_close(params_of(seq.state), params_of(vec.state), rtol=1e-4, atol=1e-5)
    assert len(seq.history[0].mu) == 10 and seq.mu_trajectory[0] == [0.0] * 10


def test_search_softmax_resumes_exactly(tmp_path):
    ck = tmp_path / "s.ckpt"
    _, ref = run_ss("sequential", epochs=3)
    first, _ = run_ss("sequential", epochs=1, checkpoint=ck)
    second, res = run_ss("sequential", epochs=3, checkpoint=ck)
    assert second.resumed_from == 1
    assert [r.candidates for r in res.history] == [r.candidates for r in ref.history]
    assert torch.equal(params_of(res.state), params_of(ref.state))


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    ck = tmp_path / "s.ckpt"
    run_ss("sequential", epochs=1, checkpoint=ck)
    task = make_task()
    with pytest.raises(ValueError, match="family.bins=10, this one has family.bins=1"):
        LossSearch(task, SearchConfig(epochs=2, B=4, seed=3), family=make_family("search_softmax"),
                   searcher=make_searcher("gaussian", sigma=0.1, sigma_is="std"), checkpoint=ck).run()


def test_random_softmax_one_model_fresh_factor_every_epoch():
    _, res = run_ss("sequential", epochs=3, searcher=make_searcher("uniform", low=0.0, high=0.5))
    factors = [r.candidates[0] for r in res.history]
    assert len({tuple(f) for f in factors}) == 3 and all(0 <= x <= 0.5 for f in factors for x in f)
    assert res.mu_trajectory == [] and res.history[0].searcher == {}


@register_family("_unstackable_test_family")
class Unstackable(LossFamily):
    """A family whose candidates are Python objects (cannot stack): a label-smoothing amount."""

    def loss(self, output, target, candidate):
        cos, scale = output
        return F.cross_entropy(cos * scale, target, label_smoothing=candidate["smoothing"])

    def describe(self, candidate):
        return f"CE with label smoothing {candidate['smoothing']}"

    def identity(self):
        return {"smoothing": 0.0}


class SmoothingSearcher(Searcher):
    def propose(self, B, generator):
        return [{"smoothing": float(x)} for x in torch.rand(B, generator=generator) * 0.2]

    def observe(self, candidates, rewards, failed):
        return {"best": candidates[int(torch.argmax(torch.nan_to_num(rewards, nan=-1.0)))]["smoothing"]}


def test_a_family_that_cannot_stack_runs_sequential_and_auto_and_refuses_vectorized():
    fam = make_family("_unstackable_test_family")
    task = make_task()
    task.loss_fn = fam.loss
    res = LossSearch(task, SearchConfig(epochs=2, B=3, seed=0, executor="sequential"), family=fam,
                     searcher=SmoothingSearcher()).run()
    assert len(res.history) == 2 and "smoothing" in res.history[0].candidates[0]
    auto = LossSearch(task, SearchConfig(epochs=1, B=3, seed=0, executor="auto"), family=fam, searcher=SmoothingSearcher())
    assert auto.executor.chosen == "sequential" and "cannot stack" in auto.executor.probe["reason"]
    with pytest.raises(ValueError, match="'_unstackable_test_family' does not: use sequential or auto") as info:
        LossSearch(task, SearchConfig(epochs=1, B=3, executor="vectorized"), family=fam, searcher=SmoothingSearcher())
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="needs a loss family that stacks"):
        lfs.VectorizedExecutor().setup(task, 3, task.make_state(), family=fam)


def test_truncated_sampling_is_the_truncated_normal_and_never_fails():
    from lfs.policy import GaussianPolicy

    pol = GaussianPolicy(mu=torch.zeros(3, dtype=torch.float64), sigma=0.5, sigma_is="std")
    g = torch.Generator().manual_seed(0)
    x = pol.sample_truncated(40000, g, torch.zeros(3), torch.full((3,), math.inf))
    assert (x >= 0).all()
    # half-normal: mean sigma sqrt(2/pi)
    assert float(x.mean()) == pytest.approx(0.5 * math.sqrt(2 / math.pi), rel=0.02)
    # mu 20 sigmas below the bound: still finite draws just above it (exponential tail ~ sigma^2/|mu|)
    far = GaussianPolicy(mu=torch.full((10,), -10.0, dtype=torch.float64), sigma=0.5, sigma_is="std")
    y = far.sample_truncated(1000, g, torch.zeros(10), torch.full((10,), math.inf))
    assert torch.isfinite(y).all() and (y >= 0).all() and float(y.mean()) == pytest.approx(0.025, rel=0.2)
    # a two-sided box
    z = pol.sample_truncated(20000, g, torch.full((3,), -0.2), torch.full((3,), 0.3))
    assert float(z.min()) >= -0.2 and float(z.max()) <= 0.3 and float(z.mean()) == pytest.approx(0.05, abs=0.01)


def test_local_search_softmax_searcher_survives_a_mean_far_outside_its_space():
    s = make_searcher("gaussian", mode="learn", sigma=0.2, sigma_is="variance")
    s.setup(make_family("search_softmax", space="local"))
    with torch.no_grad():
        s.policy.mu.fill_(-3.0)
    v = s.propose(32, torch.Generator().manual_seed(1))
    assert v.shape == (32, 10) and (v >= 0).all() and torch.isfinite(v).all()


def test_truncated_sampling_far_beyond_float_tails_stays_finite():
    from lfs.policy import GaussianPolicy

    pol = GaussianPolicy(mu=torch.full((2,), -100.0, dtype=torch.float64), sigma=0.5, sigma_is="std")
    y = pol.sample_truncated(2000, torch.Generator().manual_seed(2), torch.zeros(2), torch.full((2,), math.inf))
    # alpha = 200: the exponential tail with mean sigma / alpha = 0.0025
    assert torch.isfinite(y).all() and (y >= 0).all() and float(y.mean()) == pytest.approx(0.0025, rel=0.1)


def test_poly1_family_is_the_baseline_and_the_grid_keeps_the_best_copy():
    fam = make_family("poly1")
    (cos, s), y = head_output(5)
    for eps in (-1.0, 0.5, 2.0):
        torch.testing.assert_close(fam.loss((cos, s), y, torch.tensor([eps], dtype=torch.float64)),
                                   baselines.poly1(cos, y, s, epsilon=eps), rtol=0, atol=0)
    assert fam.in_space(torch.tensor([[-1.0], [-1.5]], dtype=torch.float64), "positive").tolist() == [True, False]
    task = make_task()
    task.loss_fn = fam.loss
    grid = make_searcher("grid", values=[-1.0, 0.0, 2.0])
    res = LossSearch(task, SearchConfig(epochs=2, B=3, seed=1), family=fam, searcher=grid).run()
    assert [r.candidates for r in res.history] == [[[-1.0], [0.0], [2.0]]] * 2
    last = res.history[-1]
    assert last.chosen == max(range(3), key=lambda i: (last.rewards[i], -i))
    with pytest.raises(ValueError, match="the grid has 3 points but search.B=4"):
        LossSearch(task, SearchConfig(epochs=1, B=4), family=fam, searcher=make_searcher("grid", values=[0, 1, 2])).run()
