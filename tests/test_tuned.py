"""A tuned arm (a method file with ``tune``): every grid point trained, the best on the
validation split kept, its test metrics reported with the choice and the cost; resumable."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks import methods, runner
from benchmarks.methods import Method, tune_points, with_values

CONF = Path(__file__).resolve().parents[1] / "benchmarks" / "conf"


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+table=cifar10", "tier=smoke", "dataset=mnist1d", "subsample=300",
                                           "progress=false", *overrides])
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def test_grid_points_are_the_product_in_file_order_with_factors():
    m = Method("t", "d", family={"name": "piecewise_linear"}, searcher={"name": "gaussian"},
               tune={"search.sigma": [0.05, 0.2], "train.lr": {"times": [0.5, 2]}})
    cfg = {"search": {"sigma": 0.2}, "train": {"lr": 0.1}}
    assert tune_points(m, cfg) == [{"search.sigma": 0.05, "train.lr": 0.05}, {"search.sigma": 0.05, "train.lr": 0.2},
                                   {"search.sigma": 0.2, "train.lr": 0.05}, {"search.sigma": 0.2, "train.lr": 0.2}]
    changed = with_values(cfg, {"train.lr": 0.3})
    assert changed["train"]["lr"] == 0.3 and cfg["train"]["lr"] == 0.1  # a copy
    with pytest.raises(ValueError, match="tune key 'train.nope' is not a config key"):
        tune_points(Method("u", "d", loss={"name": "cross_entropy"}, tune={"train.nope": [1]}), cfg)
    with pytest.raises(ValueError, match="tune.train.lr must be a list of values or"):
        Method("v", "d", loss={"name": "cross_entropy"}, tune={"train.lr": 0.1})


@pytest.mark.slow
def test_tuned_arm_keeps_the_best_validation_point_and_equals_its_plain_run(tmp_path, monkeypatch):
    cfg = config("method=learn_tuned", "seed=1")
    metrics, extra, history = runner.run(cfg, checkpoint=tmp_path / "seed=1.ckpt")
    tune = extra["tune"]
    assert len(tune["points"]) == 4 and tune["model_epochs"] == extra["model_epochs"] == 4 * 2 * 2  # 4 x B x epochs
    best = max(tune["points"], key=lambda p: p["val_reward"])  # ties: the first
    assert tune["chosen"] == best["point"] and tune["selected_on"].startswith("validation")
    # the same as a plain run of the chosen point (the test split never chose anything)
    plain = with_values(cfg, tune["chosen"])
    plain["method"] = "learn"
    plain["search"]["sigma_is"] = "std"
    again, extra_again, _ = runner.run(plain)
    assert again == metrics and extra_again["val_reward"] == best["val_reward"]
    assert not list(tmp_path.glob("*.tune*"))  # the run's files are gone once it returns

    # a kill after two points: the rerun trains only the two left
    calls = []
    real = runner.train

    def dies_on_third(point_cfg, ckpt=None):
        calls.append(ckpt)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(point_cfg, ckpt)

    monkeypatch.setattr(runner, "train", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, checkpoint=tmp_path / "seed=1.ckpt")
    assert (tmp_path / "seed=1.ckpt.tune").exists()
    calls.clear()
    monkeypatch.setattr(runner, "train", lambda c, k=None: (calls.append(k), real(c, k))[1])
    resumed, extra_resumed, _ = runner.run(cfg, checkpoint=tmp_path / "seed=1.ckpt")
    assert [Path(k).name for k in calls] == ["seed=1.ckpt.tune2", "seed=1.ckpt.tune3"]
    assert resumed == metrics and extra_resumed["tune"]["chosen"] == tune["chosen"]


def test_tuned_methods_give_the_cross_entropy_control_the_same_budget():
    cfg = config()
    learn, select = methods.get("learn_tuned"), methods.get("select_tuned")
    assert len(tune_points(learn, cfg)) == len(tune_points(select, cfg)) == 4
    assert learn.B == select.B and learn.searcher["mode"] == "learn" and select.searcher["mode"] == "select"
