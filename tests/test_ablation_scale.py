"""Issue 12: the policy step tied to sigma (``policy_optimizer="natural"``, our option), the
``ablation_scale`` table (its configs, s * std in the report) and its figure."""
import math
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import lfs
from benchmarks import figures, report, results
from benchmarks.config import ConfigError, build_method, validate
from lfs.searchers.gaussian import GaussianSearcher

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "benchmarks" / "conf"


# ------------------------------------------------------------------------- the policy step
def _draws(std: float, B: int = 8, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(B, dim, generator=g, dtype=torch.float64)
    rewards = torch.rand(B, generator=g, dtype=torch.float64)
    return eps, rewards


@pytest.mark.parametrize("sigma_is", ["variance", "std"])
def test_natural_step_is_lr_times_std_times_the_rewards_correlation(sigma_is):
    """mu_1 - mu_0 = lr * 1/B sum_i R_i (theta_i - mu_0) = lr * std * 1/B sum_i R_i eps_i (closed form)."""
    pol = lfs.GaussianPolicy(M=2, sigma=0.04, sigma_is=sigma_is, lr=0.25, optimizer="natural")
    eps, rewards = _draws(pol.std)
    mu0 = pol.mu.detach().clone()
    R = (rewards - rewards.mean()) / rewards.std(unbiased=False)
    step = pol.update(mu0 + pol.std * eps, rewards) - mu0
    torch.testing.assert_close(step, 0.25 * pol.std * (R[:, None] * eps).mean(0), rtol=1e-12, atol=0)
    # Cauchy-Schwarz: no coordinate moves more than lr times the draws' RMS deviation
    assert (step.abs() <= 0.25 * pol.std * eps.pow(2).mean(0).sqrt() + 1e-15).all()


def test_natural_step_is_proportional_to_sigma_and_adams_is_not():
    """The same standardized draws and rewards at std 0.05 and 0.2: the natural step is 4x as large;
    Adam's first step is lr * g / (|g| + eps), the same (to eps) whatever the std."""
    eps, rewards = _draws(1.0)
    steps = {}
    for opt in ("natural", "adam"):
        for std in (0.05, 0.2):
            pol = lfs.GaussianPolicy(M=2, sigma=std, sigma_is="std", lr=0.05, optimizer=opt)
            mu0 = pol.mu.detach().clone()
            steps[(opt, std)] = pol.update(mu0 + std * eps, rewards) - mu0
    torch.testing.assert_close(steps[("natural", 0.2)], 4 * steps[("natural", 0.05)], rtol=1e-12, atol=0)
    torch.testing.assert_close(steps[("adam", 0.2)], steps[("adam", 0.05)], rtol=1e-6, atol=0)
    assert steps[("adam", 0.05)].abs().max() == pytest.approx(0.05, rel=1e-6)


def test_default_step_is_the_papers_adam_bit_for_bit():
    """Defaults unchanged: Adam, lr 0.05, sigma 0.2 as a variance; the update is exactly
    torch.optim.Adam on -g (the same operations as before the natural option)."""
    cfg = yaml.safe_load((CONF / "config.yaml").read_text())["search"]
    assert (cfg["policy_optimizer"], cfg["lr"], cfg["sigma"], cfg["sigma_is"]) == ("adam", 0.05, 0.2, "variance")
    s = GaussianSearcher()
    assert (s.policy_optimizer, s.lr, s.sigma, s.sigma_is) == ("adam", 0.05, 0.2, "variance")
    pol = lfs.GaussianPolicy(M=2)
    mu = pol.mu.detach().clone().requires_grad_(True)
    adam = torch.optim.Adam([mu], lr=0.05)
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        thetas, rewards = pol.sample(8, g), torch.rand(8, generator=g, dtype=torch.float64)
        adam.zero_grad()
        mu.grad = -pol.reinforce_gradient(thetas, rewards)
        adam.step()
        assert torch.equal(pol.update(thetas, rewards), mu.detach())


def test_a_bad_policy_optimizer_is_one_line_naming_the_key():
    with pytest.raises(ValueError, match=r"^search.policy_optimizer must be one of .*'natural'.*got 'natual'$") as e:
        GaussianSearcher(policy_optimizer="natual")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="search.policy_optimizer"):
        validate(_compose("smoke", "search.policy_optimizer=natual"))


def test_checkpoints_tell_the_steps_apart():
    assert GaussianSearcher(policy_optimizer="natural").config()["policy_optimizer"] == "natural"
    a, b = lfs.GaussianPolicy(M=1, optimizer="natural"), lfs.GaussianPolicy(M=1)
    with pytest.raises(ValueError, match="optimizer_name"):
        b.load_state_dict(a.state_dict())


# ------------------------------------------------------------------------------- the table
def _compose(tier, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+table=ablation_scale", f"tier={tier}", *overrides],
                      return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    plain["_sweep"] = params
    return plain


def test_steps_set_method_and_policy_step_and_rows_record_them():
    steps = yaml.safe_load((CONF / "table" / "ablation_scale.yaml").read_text())["steps"]
    for step, spec in steps.items():
        cfg = _compose("smoke", f"step={step}", "dataset=synthetic_face", "search.sigma=0.01")
        assert cfg["method"] == spec["method"]
        assert (cfg["search"]["lr"], cfg["search"]["policy_optimizer"]) == (spec["lr"], spec["policy_optimizer"])
        assert cfg["setting"] == {"step": step, "sigma": 0.01, "sigma_is": "variance", "s": 30.0}
        validate(cfg)
        searcher = build_method(cfg)["searcher"].config()
        assert searcher["mode"] == spec["method"] and searcher["policy_optimizer"] == spec["policy_optimizer"]
    # the paper's cell: Section 4.1's step (Adam, 0.05) at Eq. 19's sigma = 0.2 read as the variance
    assert steps["paper"] == {"method": "learn", "policy_optimizer": "adam", "lr": 0.05}
    assert steps["fixed"]["method"] == "fixed" and sum(s["method"] == "fixed" for s in steps.values()) == 1


def _grid(params: dict) -> list[dict]:
    import itertools

    keys = list(params)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(str(params[k]).split(",") for k in keys))]


def test_sweeps_cover_the_papers_cell_and_the_smoke_tier_is_tiny():
    mini = _grid(_compose("mini")["_sweep"])
    assert len(mini) == 144  # 3 datasets x 4 widths x 4 steps x 3 seeds: fixed is not swept over steps
    assert {j["dataset"] for j in mini} == {"mnist1d", "synthetic_face", "synthetic_reid_duke"}
    stds = sorted(math.sqrt(float(s)) for s in {j["search.sigma"] for j in mini})
    assert stds == pytest.approx([0.05, 0.1, 0.2, math.sqrt(0.2)])
    assert any(j["step"] == "paper" and float(j["search.sigma"]) == 0.2 for j in mini)
    smoke = _grid(_compose("smoke")["_sweep"])
    assert len(smoke) <= 2 and {j["dataset"] for j in smoke} == {"mnist1d"}
    full = _compose("full")["_sweep"]
    assert set(full["dataset"].split(",")) == {"cifar10", "megaface", "dukemtmc"}


def test_report_shows_s_times_std_beside_each_cell(tmp_path):
    assert report.logit_scale({"s": 10.0, "sigma": 0.2}) == pytest.approx(10 * math.sqrt(0.2))
    assert report.logit_scale({"s": "30.0", "sigma": "0.01", "sigma_is": "variance"}) == pytest.approx(3.0)
    assert report.logit_scale({"s": 14.0, "sigma": 0.1, "sigma_is": "std"}) == pytest.approx(1.4)
    assert report.logit_scale({"sigma": 0.2}) is None and report.logit_scale({"noise": 0.1}) is None
    assert report.parse_setting_key(results.setting_key({"s": 10.0, "step": "paper"})) == {"s": "10.0", "step": "paper"}
    rows = _rows(tmp_path)
    agg = report.aggregate(rows)
    csv, md = report.write_table("mini", "ablation_scale", agg, tmp_path / "out")
    text = md.read_text()
    assert "| setting | s·std | metric |" in text
    assert "| mnist1d | learn | s=10.0,sigma=0.2,sigma_is=variance,step=paper | 4.47 | top1_error |" in text
    assert "| synthetic_face | fixed | s=30.0,sigma=0.01,sigma_is=variance,step=fixed | 3.00 | rank1 |" in text
    header, *lines = csv.read_text().splitlines()
    assert header.split(",")[5] == "s_std"
    assert any(line.startswith('mini,ablation_scale,mnist1d,learn,"s=10.0,sigma=0.2,sigma_is=variance,step=paper",4.472,')
               for line in lines)  # the setting quoted: it holds commas
    # a table without s and sigma keeps its columns
    plain = [dict(r, table="ablation_b", setting={"B": 8}) for r in rows]
    _, md_b = report.write_table("mini", "ablation_b", report.aggregate(plain), tmp_path / "out")
    assert "s·std" not in md_b.read_text()


# ------------------------------------------------------------------------------ the figure
def _rows(tmp_path) -> list[dict]:
    """Synthetic rows of the table (two datasets, fixed and learn, two widths, 2 seeds) with
    histories whose mu moved by a known amount (written with results.write_history, as run.py does)."""
    for dataset, s, metric in (("mnist1d", 10.0, "top1_error"), ("synthetic_face", 30.0, "rank1")):
        for method, step in (("fixed", "fixed"), ("learn", "paper")):
            for sigma in (0.01, 0.2):
                for seed in (0, 1):
                    setting = {"step": step, "sigma": sigma, "sigma_is": "variance", "s": s}
                    value = 20.0 + 10 * sigma + seed + (5.0 if method == "learn" else 0.0)
                    metrics = {metric: value} if metric == "top1_error" else {metric: value, "reid_mAP": 1.0}
                    row = results.make_row(table="ablation_scale", tier="mini", dataset=dataset, method=method,
                                           setting=setting, seed=seed, metrics=metrics, provenance={},
                                           extra={"samples_outside_space": 3} if sigma == 0.2 and method == "learn"
                                           else {})
                    path = results.row_path(tmp_path / "res", "mini", "ablation_scale", dataset, method, setting, seed)
                    results.atomic_write_json(path, row)
                    mu0 = lfs.identity_theta(6, dtype=torch.float64)
                    moved = mu0 + (0.5 * (seed + 1) * math.sqrt(sigma) if method == "learn" else 0.0)
                    hist = [{"searcher": {"mu": mu0.tolist(), "mu_next": moved.tolist()}}]
                    results.write_history(path, hist)
    return results.load_rows(tmp_path / "res")


def test_scale_figure_from_rows(tmp_path):
    rows = _rows(tmp_path)
    pts = figures.scale_points(rows)
    x = 10 * math.sqrt(0.2)
    key = next(k for k in pts if k[:3] == ("mnist1d", "top1_error", "learn, step=paper") and k[3] == pytest.approx(x))
    cell = pts[key]
    assert cell["values"] == [27.0, 28.0] and cell["outside"] == [3, 3]
    assert cell["drift"] == pytest.approx([0.5, 1.0])  # RMS |mu_T - mu_0| in stds, as the histories moved it
    face = {k[1] for k in pts if k[0] == "synthetic_face"}
    assert face == {"rank1"}  # the face protocol's metric, not its reid_mAP
    fixed = next(k for k in pts if k[0] == "mnist1d" and k[2] == "fixed, step=fixed")
    assert pts[fixed]["drift"] == [0.0, 0.0]  # mu never moves
    written = figures.draw_all(rows, tmp_path / "fig", "ablation_scale")
    assert [p.name for p in written] == ["ablation_scale_s_std.png"] and written[0].stat().st_size > 10_000
    assert figures.scale_curves([], tmp_path) is None


def test_scale_table_lists_each_cell_with_drift_and_outside_counts(tmp_path):
    lines = figures.scale_table(_rows(tmp_path))
    assert lines[0].startswith("| dataset | method, step | s·std |")
    assert "| mnist1d | learn, step=paper | 4.47 | top1_error 27.50 ± 0.71 (2) | 0.75 ± 0.35 (2) | 6 |" in lines
    assert "| synthetic_face | fixed, step=fixed | 3.00 | rank1 20.60 ± 0.71 (2) | 0.00 ± 0.00 (2) | 0 |" in lines
    assert len(lines) == 2 + 8  # 2 datasets x 2 series x 2 widths
