"""Algorithm 1: the search modes, broadcast, failed samples, determinism, executor equality."""
import math

import pytest
import torch
import torch.nn as nn

import lfs
from lfs.search import LossSearch, SearchConfig, SearchFailed


def toy_data(seed=0, n=384, d=12, c=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, c, generator=g)
    y = (x @ w + 0.5 * torch.randn(n, c, generator=g)).argmax(1)
    return x, y


def make_task(bn=True, invalid_tau="ignore", scheduler=True, d=12, c=4):
    x, y = toy_data(d=d, c=c)

    def model_fn():
        layers = [nn.Linear(d, 24)] + ([nn.BatchNorm1d(24)] if bn else []) + [nn.ReLU()]
        return nn.Sequential(*layers, lfs.CosineClassifier(24, c, normalize="both", s=8.0))

    def loss_fn(out, target, theta):
        cos, scale = out
        return lfs.am_lfs_loss(cos, target, theta, scale, invalid_tau=invalid_tau)

    return lfs.SupervisedTask(
        model_fn, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4), loss_fn,
        (x[:256], y[:256]), (x[256:], y[256:]), batch_size=32,
        scheduler_fn=(lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.8)) if scheduler else None)


def params_of(state):
    return torch.cat([p.detach().flatten() for p in state.model.parameters()])


def run(task, **kw):
    s = LossSearch(task, SearchConfig(**{"epochs": 2, "B": 4, **kw}))
    return s, s.run()


# ---------------------------------------------------------------------------------- modes
def test_learn_moves_mu_and_records_everything():
    s, res = run(make_task(), mode="learn", seed=1)
    h = res.history
    assert len(h) == 2 and len(res.mu_trajectory) == 3
    assert res.mu_trajectory[0] == lfs.identity_theta(6, dtype=torch.float64).tolist()
    assert h[0].mu_next != h[0].mu and h[1].mu == h[0].mu_next
    for r in h:
        assert len(r.thetas) == 4 and len(r.thetas[0]) == 24 and len(r.rewards) == 4
        assert r.chosen == max(range(4), key=lambda i: r.rewards[i])
        assert r.best_reward == r.rewards[r.chosen]
        assert sum(r.normalized_rewards) == pytest.approx(0.0, abs=1e-9)
    assert res.reward == h[-1].best_reward


def test_fixed_never_moves_mu_but_samples_fresh_thetas():
    s, res = run(make_task(), mode="fixed", seed=2)
    ident = lfs.identity_theta(6, dtype=torch.float64).tolist()
    assert all(r.mu == ident and r.mu_next == ident for r in res.history)
    assert res.history[0].thetas != res.history[1].thetas
    assert all(r.normalized_rewards == [] for r in res.history)


def test_select_samples_identity_only_and_copies_differ_by_data_order():
    s, res = run(make_task(), mode="select", seed=3)
    ident = lfs.identity_theta(6, dtype=torch.float64).tolist()
    assert all(th == ident for r in res.history for th in r.thetas)
    assert all(r.mu_next == ident for r in res.history)
    # best-of-B is not degenerate: copies see different minibatch orders
    assert len(set(res.history[0].rewards)) > 1 or len(set(res.history[0].train_loss)) > 1


def test_random_keeps_static_thetas_and_never_broadcasts():
    s, res = run(make_task(), mode="random", seed=4, epochs=3)
    assert res.history[0].thetas == res.history[1].thetas == res.history[2].thetas
    assert len({tuple(t) for t in res.history[0].thetas}) == 4  # K distinct static losses
    copies = [params_of(s.executor.export(i)) for i in range(4)]
    assert not torch.equal(copies[0], copies[1])  # each trained on its own for the whole schedule
    last = res.history[-1]
    assert res.chosen == max(range(4), key=lambda i: last.rewards[i])
    assert torch.equal(params_of(res.state), copies[res.chosen])


@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
def test_best_is_broadcast_to_every_copy(executor):
    s, res = run(make_task(), mode="learn", seed=5, executor=executor)
    ref = params_of(s.executor.export(res.chosen))
    for i in range(4):
        assert torch.equal(params_of(s.executor.export(i)), ref)


@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
def test_broadcast_optimizer_option(executor):
    def momenta(s):
        return [torch.cat([v["momentum_buffer"].flatten() for v in s.executor.export(i).optimizer.state.values()])
                for i in range(4)]

    s_with, _ = run(make_task(), seed=6, executor=executor, broadcast_optimizer=True, epochs=1)
    m = momenta(s_with)
    assert all(torch.equal(m[0], mi) for mi in m[1:])
    s_without, _ = run(make_task(), seed=6, executor=executor, broadcast_optimizer=False, epochs=1)
    m = momenta(s_without)
    assert not torch.equal(m[0], m[1])  # each copy kept its own momentum


# ------------------------------------------------------------------------ failures, determinism
@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
def test_nan_samples_never_win_and_search_keeps_running(executor):
    # invalid_tau="nan": any sample with tau(p) <= 0 on some example yields a NaN loss and fails
    s, res = run(make_task(invalid_tau="nan"), mode="learn", seed=7, B=8, epochs=3, executor=executor,
                 constraint="none")
    n_failed = 0
    for r in res.history:
        failed = r.failed
        n_failed += sum(failed)
        assert not failed[r.chosen]
        assert all(math.isnan(rew) == f for rew, f in zip(r.rewards, failed))
        assert all(math.isfinite(v) for v in r.normalized_rewards)
    assert n_failed > 0, "the test must actually produce failed samples"
    assert all(torch.isfinite(p).all() for p in res.state.model.parameters())


def test_all_samples_failing_raises_clear_error():
    def loss_fn(out, target, theta):
        return out[0].sum() * math.nan

    task = make_task()
    task.loss_fn = loss_fn
    with pytest.raises(SearchFailed, match="all B=4 samples failed"):
        run(task, epochs=1)


def test_failed_reward_drop_leaves_failed_samples_out_of_the_update():
    s, res = run(make_task(invalid_tau="nan"), mode="learn", seed=7, B=8, epochs=1, failed_reward="drop",
                 constraint="none")
    r = res.history[0]
    assert 0 < sum(r.failed) < 8
    assert len(r.normalized_rewards) == 8 - sum(r.failed)


@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
def test_same_seed_same_result(executor):
    _, a = run(make_task(), seed=11, executor=executor)
    _, b = run(make_task(), seed=11, executor=executor)
    assert [r.rewards for r in a.history] == [r.rewards for r in b.history]
    assert [r.thetas for r in a.history] == [r.thetas for r in b.history]
    assert a.mu_trajectory == b.mu_trajectory
    assert torch.equal(params_of(a.state), params_of(b.state))
    _, c = run(make_task(), seed=12, executor=executor)
    assert [r.thetas for r in a.history] != [r.thetas for r in c.history]


def test_search_does_not_disturb_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(make_task(), epochs=1)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------- executor equality
@pytest.mark.parametrize("broadcast_optimizer", [True, False])
def test_vectorized_equals_sequential(broadcast_optimizer):
    """Two epochs, BatchNorm, SGD with momentum and weight decay, an LR schedule: same rewards,
    chosen indices, mu and parameters (within 1e-5). sigma is kept small: samples whose tau crosses
    zero have unbounded gradients there and amplify float rounding chaotically."""
    cfg = dict(seed=21, B=4, epochs=2, sigma=0.02, sigma_is="std", broadcast_optimizer=broadcast_optimizer)
    seq_s, seq = run(make_task(), executor="sequential", **cfg)
    vec_s, vec = run(make_task(), executor="vectorized", **cfg)
    for a, b in zip(seq.history, vec.history):
        assert a.chosen == b.chosen
        assert a.rewards == b.rewards
        torch.testing.assert_close(torch.tensor(a.train_loss), torch.tensor(b.train_loss), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(seq.mu_trajectory), torch.tensor(vec.mu_trajectory), rtol=0, atol=1e-6)
    for i in range(4):
        pa, pb = seq_s.executor.export(i), vec_s.executor.export(i)
        torch.testing.assert_close(params_of(pa), params_of(pb), rtol=0, atol=1e-5)
        for (na, ba), (nb, bb) in zip(pa.model.named_buffers(), pb.model.named_buffers()):
            torch.testing.assert_close(ba.double(), bb.double(), rtol=0, atol=1e-5)
    # the exported optimizer (momentum) of the final model matches too
    ma = [v["momentum_buffer"] for v in seq.state.optimizer.state.values()]
    mb = [v["momentum_buffer"] for v in vec.state.optimizer.state.values()]
    for x, y in zip(ma, mb):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- interfaces
def test_callback_task_runs_with_sequential_executor():
    x, y = toy_data()

    def make_state():
        model = nn.Linear(12, 4)
        return lfs.TrainState(model, torch.optim.SGD(model.parameters(), lr=0.5))

    def train_epoch(state, theta, epoch, seed):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(256, generator=g)[:128]
        loss = lfs.am_lfs_loss(state.model(x[idx]), y[idx], theta)  # logits as cos, scale 1
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        return float(loss.detach())

    def reward(state):
        with torch.no_grad():
            return float((state.model(x[256:]).argmax(1) == y[256:]).float().mean())

    res = lfs.search(lfs.CallbackTask(make_state, train_epoch, reward), epochs=2, B=3, seed=0)
    assert len(res.history) == 2 and isinstance(res.state.model, nn.Linear)
    with pytest.raises(TypeError, match="SupervisedTask"):
        lfs.search(lfs.CallbackTask(make_state, train_epoch, reward), epochs=1, B=2, executor="vectorized")


def test_sampled_losses_stay_in_the_search_space():
    from lfs.search_space import in_search_space

    _, res = run(make_task(), mode="fixed", seed=3, B=8, epochs=2)
    thetas = torch.tensor([t for r in res.history for t in r.thetas], dtype=torch.float64)
    assert in_search_space(thetas).all()
    _, raw = run(make_task(), mode="fixed", seed=3, B=8, epochs=2, constraint="none")
    raw_thetas = torch.tensor([t for r in raw.history for t in r.thetas], dtype=torch.float64)
    assert not in_search_space(raw_thetas).all()  # the raw Gaussian leaves the space


@pytest.mark.parametrize("key,value", [("B", 0), ("M", 0), ("sigma", 0.0), ("sigma", -1.0), ("epochs", 0),
                                       ("mode", "evolve"), ("executor", "gpu"), ("failed_reward", "zero"),
                                       ("constraint", "strict")])
def test_config_errors_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"search.{key}"):
        SearchConfig(**{"epochs": 1, key: value})


def test_mu_outside_the_search_space_never_ends_the_search(caplog):
    """A mean driven out of AM-LFS's space (negative slopes of t) used to end the run with
    "fewer than B ... lie in the search space"; the search now goes on and says so."""
    task = make_task()
    s = LossSearch(task, SearchConfig(epochs=2, B=4, seed=3, sigma=0.01, sigma_is="std"))
    with torch.no_grad():
        s.searcher.policy.mu[:6] = -1.0  # a_t < 0: no draw of N(mu, 0.01^2) is in the space
    with pytest.raises(ValueError, match="mu has left it"):
        s.searcher.policy.sample(4, torch.Generator().manual_seed(0), constraint="positive", max_draws=256)
    with caplog.at_level("WARNING"):
        res = s.run()
    assert [r.searcher["outside_space"] for r in res.history] == [4, 4]
    assert s.searcher.summary()["samples_outside_space"] == 8
    assert "mu has left the search space" in caplog.text
    assert all(not lfs.search_space.in_search_space(torch.tensor(r.candidates)).any() for r in res.history)
    # in the space, records and summaries keep their old shape
    _, ok = run(make_task(), seed=1)
    assert all("outside_space" not in r.searcher for r in ok.history)


def test_natural_policy_step_by_hand_in_a_search():
    """policy_optimizer="natural" (ours): each epoch mu moves by lr * 1/B sum_i R_i (theta_i - mu),
    R the recorded normalized rewards, theta the recorded draws (the natural gradient var * g)."""
    s, res = run(make_task(), mode="learn", seed=4, B=6, policy_optimizer="natural", lr=0.25, sigma=0.04)
    assert s.searcher.config()["policy_optimizer"] == "natural"
    for r in res.history:
        mu, R = torch.tensor(r.mu, dtype=torch.float64), torch.tensor(r.normalized_rewards, dtype=torch.float64)
        thetas = torch.tensor(r.thetas, dtype=torch.float64)
        step = 0.25 * (R[:, None] * (thetas - mu)).mean(0)
        torch.testing.assert_close(torch.tensor(r.mu_next, dtype=torch.float64), mu + step, rtol=0, atol=1e-15)
        assert step.abs().max() > 0
    # the step is part of what a checkpoint must agree on
    other, _ = run(make_task(), mode="learn", seed=4, B=6, lr=0.25, sigma=0.04)
    assert other.identity()["searcher.policy_optimizer"] == "adam" != s.identity()["searcher.policy_optimizer"]
    with pytest.raises(ValueError, match="search.policy_optimizer=.natural"):
        other.load_state_dict(s.state_dict())


def test_policy_optimizer_error_names_the_key_in_one_line():
    with pytest.raises(ValueError, match=r"search.policy_optimizer must be one of \('adam', 'sgd', 'natural'\), "
                                         "got 'nat'") as e:
        SearchConfig(epochs=1, policy_optimizer="nat")
    assert "\n" not in str(e.value)
