"""The harness's registries: every method file builds, every dataset names a protocol, method
arguments flow from the config, and the runner holds no branch on a dataset's or method's name."""
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import baselines
from benchmarks import methods, protocols, results
from benchmarks.config import ConfigError, build_method, validate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "benchmarks" / "conf"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_run import run  # noqa: E402


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+table=megaface", "tier=smoke", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("name", methods.available())
def test_every_method_file_builds_and_validates(name):
    method = methods.get(name)
    assert method.description and Path(method.source).name == f"{name}.yaml"
    cfg = config(f"method={name}", "dataset=synthetic_face")
    validate(cfg)
    built = build_method(cfg)
    if method.is_search:
        fam, srch = built["family"], built["searcher"]
        assert fam.name == method.family["name"] and srch.name == method.searcher["name"]
        # arguments the file leaves out come from the search group, by name
        if "M" in fam.config():
            assert fam.config()["M"] == cfg["search"]["M"]
        if "sigma" in srch.config() and "sigma" not in method.searcher:
            assert srch.config()["sigma"] == cfg["search"]["sigma"]
    elif method.transfer is not None:
        assert built["family"].name == "expression" and built["transfer"] == method.transfer
    elif method.is_evolution:
        assert built["family"].name == "expression" and built["evolution"].seed == cfg["seed"]
        assert built["evolution"].max_evaluations == cfg["evolve"]["max_evaluations"]  # the budget is the tier's
    else:
        name, kwargs = built["loss"]
        assert name in baselines.available()


def test_method_args_override_and_unknown_ones_name_the_key():
    cfg = config("method=poly1", "+method_args.loss.epsilon=0.0")
    name, kwargs = build_method(cfg)["loss"]
    assert (name, kwargs) == ("poly1", {"epsilon": 0.0})
    cos, y = torch.rand(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(baselines.get(name).training_loss(**kwargs)(cos, y, 5.0),
                               torch.nn.functional.cross_entropy(5.0 * cos, y), rtol=1e-15, atol=0)
    cfg = config("method=search_softmax", "+method_args.searcher.sigmaa=0.1")
    with pytest.raises(ConfigError, match="method_args.searcher.sigmaa: 'gaussian' has no such argument") as info:
        build_method(cfg)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="method: unknown method 'nope'; available: .*search_softmax"):
        build_method(config("method=nope"))
    with pytest.raises(ConfigError, match="no hyper-parameter 'q'"):
        build_method(config("method=cosface", "+method_args.loss.q=1"))


def test_a_bad_method_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("description: x\nfamily: {name: piecewise_linear}\nsearchr: {name: gaussian}\n")
    with pytest.raises(ValueError, match="unknown key 'searchr'"):
        methods.load_file(bad)
    bad.write_text("description: x\nfamily: {name: piecewise_linear}\n")
    with pytest.raises(ValueError, match="names both a family and a searcher"):
        methods.load_file(bad)


def test_every_dataset_names_a_registered_protocol():
    for path in sorted((CONF / "dataset").glob("*.yaml")):
        ds = yaml.safe_load(path.read_text())["dataset"]
        assert ds["protocol"] in protocols.available(), path.name
    assert protocols.available() == ["classification", "face", "retrieval"]


def test_harness_holds_no_branch_on_dataset_or_method_names():
    datasets = {yaml.safe_load(p.read_text())["dataset"]["name"] for p in (CONF / "dataset").glob("*.yaml")}
    # method names, less those that are also the Gaussian searcher's modes (the one-model path of
    # a fixed loss is a loop of one copy in mode "select")
    from lfs.searchers.gaussian import MODES

    method_names = set(methods.available()) - set(MODES)
    # report.py lists the tables in the paper's order; table names are not dataset names
    for f, names in (("runner.py", datasets | method_names), ("run.py", datasets | method_names),
                     ("config.py", datasets | method_names), ("report.py", method_names)):
        src = (ROOT / "benchmarks" / f).read_text()
        quoted = {n for n in names if re.search(rf"[\"']{re.escape(n)}[\"']", src)}
        assert not quoted, f"{f} names {sorted(quoted)}"


@pytest.mark.slow
def test_search_softmax_and_random_softmax_run_on_the_megaface_table(tmp_path):
    out = run(["+table=megaface", "tier=smoke", "method=search_softmax_local,random_softmax", "progress=false",
               "history_candidates=true"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {p.parent.parent.name: json.loads(p.read_text())
            for p in (tmp_path / "res" / "smoke" / "megaface").rglob("seed=0.json")}
    assert set(rows) == {"search_softmax_local", "random_softmax"}
    ss = rows["search_softmax_local"]
    assert set(ss["metrics"]) == {"rank1", "reid_mAP"}
    assert ss["extra"]["family"] == "search_softmax" and ss["extra"]["searcher"] == "gaussian"
    assert "a_i = 1 - exp(s * v_i)" in ss["extra"]["loss"] and len(ss["extra"]["final_mu"]) == 10
    hist = results.load_history(next((tmp_path / "res" / "smoke" / "megaface").rglob("random_softmax/*/seed=0.json")))
    assert all(len(h["candidates"]) == 1 for h in hist)  # one model, a factor drawn per epoch


def test_train_optimizer_is_read_and_checked():
    from benchmarks.runner import optimizer_factory

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(optimizer_factory(config("train.optimizer=adam"))(params), torch.optim.Adam)
    sgd = optimizer_factory(config())(params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="train.optimizer must be one of sgd, adam, got 'rmsprop'"):
        validate(config("train.optimizer=rmsprop"))


def test_the_baseline_method_takes_the_datasets_own_loss():
    assert build_method(config("method=baseline", "dataset=synthetic_face"))["loss"] == ("sphereface", {"m": 4})
    assert build_method(config("method=baseline", "dataset=digits"))["loss"] == ("focal", {"gamma": 2.0})
    assert build_method(config("method=baseline", "dataset=synthetic_reid_market"))["loss"] == ("cosface", {"m": 0.35})
    with pytest.raises(ConfigError, match="method 'baseline' takes its loss from dataset.baseline, which this run's "
                                          "config does not set") as info:
        build_method(config("method=baseline", "dataset=digits", "dataset.baseline=null"))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="loss.ref must be a dotted config key"):
        methods.Method(name="x", description="x", loss={"ref": ""})


def test_a_transfer_retrains_the_source_rows_formula_and_says_what_to_run_without_it(tmp_path):
    from benchmarks import runner

    cfg = config("method=transfer_autoloss_zero", "dataset=digits", f"results_dir={tmp_path}")
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    with pytest.raises(ConfigError, match=r"retrains the loss found by autoloss_zero on digits .* does not exist: "
                                          r"run `python benchmarks/run.py \+table=autoloss_zero tier=smoke "
                                          r"dataset=digits method=autoloss_zero seed=0` first") as info:
        runner.run(cfg)
    assert "\n" not in str(info.value)
    formula = "neg(dot(y, log(softmax(x))))"
    src = results.row_path(tmp_path, "smoke", "autoloss_zero", "digits", "autoloss_zero", {}, 0)
    results.atomic_write_json(src, results.make_row(
        table="autoloss_zero", tier="smoke", dataset="digits", method="autoloss_zero", setting={}, seed=0,
        metrics={"top1_error": 1.0}, provenance={"git_commit": "abc"}, extra={"loss": formula, "model_epochs": 9}))
    metrics, extra, history = runner.run(cfg)
    assert extra["loss"] == formula and extra["model_epochs"] == cfg["train"]["epochs"] and history == []
    assert extra["source"]["path"] == str(src) and extra["source"]["model_epochs"] == 9
    assert 0 <= metrics["top1_error"] <= 100
    with pytest.raises(ValueError, match="transfer takes {table, dataset, method}"):
        methods.Method(name="x", description="x", family={"name": "expression"}, transfer={"table": "t"})


def test_a_ref_loss_takes_the_method_files_other_keys_as_overrides_and_array_settings_are_checked():
    m = methods.Method(name="x", description="x", loss={"ref": "dataset.baseline", "m": 0.4})
    assert methods.resolve(m, {"dataset": {"baseline": {"name": "cosface", "m": 0.35}}}) == {"loss": ("cosface", {"m": 0.4})}
    from benchmarks.evolution import check_array

    good = {"cpus_per_task": 1, "timeout_min": 60, "parallelism": 4, "mem_gb": 4}
    check_array(good)
    for key, bad in (("cpus_per_task", None), ("timeout_min", 0), ("mem_gb", -1), ("parallelism", True)):
        with pytest.raises(ValueError, match=f"evolve.array.{key} must be a positive number"):
            check_array({**good, key: bad})


def test_a_failed_array_task_is_named_by_its_own_exception():
    from submitit.core.utils import FailedJobError

    from benchmarks.evolution import _task_error

    class Job:  # what submitit raises for a task whose function raised (submitit/core/core.py)
        def result(self):
            raise FailedJobError("Job (task=0) failed during processing with trace:\n----------------------\n"
                                 "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n"
                                 "----------------------\nYou can check full logs with 'job.stderr(0)' and "
                                 "'job.stdout(0)'or at paths:\n  - /tmp/e\n  - /tmp/o")

    assert _task_error(Job()) == "ValueError: boom"


def test_history_candidates_must_be_a_boolean():
    from benchmarks.config import validate

    validate(config("history_candidates=true"))
    with pytest.raises(ConfigError, match="history_candidates must be true or false, got 'maybe'") as info:
        validate(config("history_candidates=maybe"))
    assert "\n" not in str(info.value)


def test_flush_denormal_must_be_a_boolean_and_is_run_only():
    from benchmarks.config import is_run_only, row_setting, validate

    validate(config("flush_denormal=false"))
    with pytest.raises(ConfigError, match="flush_denormal must be true or false, got 'sometimes'") as info:
        validate(config("flush_denormal=sometimes"))
    assert "\n" not in str(info.value)
    # how the CPU rounds, not what is computed: it never enters a row's setting (like device)
    assert is_run_only("flush_denormal") and row_setting({}, {}, ["flush_denormal=false"]) == {}


def test_set_threads_flushes_denormals_unless_told_not_to():
    from benchmarks.runner import set_threads

    def tiny():  # a float32 denormal times 1, made under the current mode (an earlier run in this
        return float(torch.tensor([1e-39], dtype=torch.float32) * 1.0)  # process may have set it)

    try:
        set_threads({"flush_denormal": False, "threads": None})
        assert tiny() != 0.0
        set_threads({"flush_denormal": True, "threads": None})
        if torch.backends.cpu.get_cpu_capability() != "DEFAULT":  # x86 with SSE3: the flag exists
            assert tiny() == 0.0
    finally:
        torch.set_flush_denormal(False)


def test_tier_jobs_must_be_a_positive_integer_and_is_run_only():
    from benchmarks.config import is_run_only, validate

    validate(config("tier.jobs=3"))
    for bad in ("0", "-1", "abc"):
        with pytest.raises(ConfigError, match=r"tier.jobs must be an integer >= 1 .*, got") as info:
            validate(config(f"tier.jobs={bad}"))
        assert "\n" not in str(info.value)
    assert is_run_only("tier.jobs")


def test_the_local_launcher_runs_the_tiers_jobs_at_once():
    """The smoke tier runs a table's jobs one at a time in its own process; mini, two at a time."""
    for tier, jobs in (("smoke", 1), ("mini", 2), ("full", 2)):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["+table=megaface", f"tier={tier}"], return_hydra_config=True)
        assert cfg.hydra.launcher.n_jobs == jobs
