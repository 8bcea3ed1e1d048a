"""The suite's Hydra sweeper (hydra_plugins/lfs_bench_sweeper): Hydra's basic sweeper whose check
before launch composes one job per swept value (``covering``) instead of every job."""
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

from hydra_plugins.lfs_bench_sweeper.sweeper import LfsBenchSweeper, covering

CONF = Path(__file__).resolve().parents[1] / "benchmarks" / "conf"


def batch_of(params: dict, extra=()) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``params`` (one batch: max_batch_size None)."""
    args = [f"{k}={v}" for k, v in params.items()] + list(extra)
    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    return batch


@pytest.mark.parametrize("table", ["cifar10", "megaface", "ablation_scale", "loss_search"])
def test_covering_holds_every_swept_value_in_one_job_per_new_value(table):
    params = yaml.safe_load((CONF / "sweep" / f"{table}_mini.yaml").read_text())["hydra"]["sweeper"]["params"]
    batch = batch_of(params, ["+table=" + table])
    chosen = covering(batch)
    everything = {o for job in batch for o in job}
    assert {o for job in chosen for o in job} == everything  # every override is composed once before launch
    assert chosen[0] == batch[0]
    positions = [batch.index(job) for job in chosen]
    assert positions == sorted(positions)  # jobs of the batch, in its order
    # a product in Hydra's order: the first job, then one job per further value of each key
    sizes = [len(str(v).split(",")) for v in params.values()]
    assert len(chosen) == 1 + sum(n - 1 for n in sizes) < len(batch)
    if table == "cifar10":
        assert (len(chosen), len(batch)) == (15, 240)


def test_covering_of_an_irregular_batch():
    batch = [["a=1", "b=1"], ["a=1", "b=1"], ["a=2", "b=1"], ["a=2", "b=2"], ["a=1", "b=2"], []]
    assert covering(batch) == [["a=1", "b=1"], ["a=2", "b=1"], ["a=2", "b=2"]]
    assert covering([]) == [] and covering([[]]) == []


class RecordingLoader:
    """A config loader that records what it composes and fails on one override."""

    def __init__(self, bad=None):
        self.composed, self.bad = [], bad

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed.append(list(sweep_overrides))
        if self.bad in sweep_overrides:
            raise ValueError(f"cannot compose {self.bad}")


def sweeper_with(loader) -> LfsBenchSweeper:
    # the class as Hydra instantiates it: Hydra's plugin scan (once per process, at the first
    # compose) re-executes every plugin module in place, its own basic_sweeper included, so a class
    # imported before the scan subclasses a stale BasicSweeper
    Plugins.instance()
    cls = sys.modules["hydra_plugins.lfs_bench_sweeper.sweeper"].LfsBenchSweeper
    sweeper = cls(max_batch_size=None, params=None)
    sweeper.hydra_context, sweeper.config_loader, sweeper.config = None, loader, {"any": "config"}
    return sweeper


def test_the_check_before_launch_composes_the_covering_jobs_and_fails_on_a_late_value():
    batch = batch_of({"method": "ce,learn,fixed", "noise": "0.0,0.1", "seed": "0,1,2,3,4"})
    loader = RecordingLoader()
    sweeper_with(loader).validate_batch_is_legal(batch)
    assert loader.composed == covering(batch) and len(loader.composed) == 1 + 2 + 1 + 4 < len(batch) == 30
    # a value met only in the last jobs of the product still fails the sweep before launch
    late = RecordingLoader(bad="method=fixed")
    with pytest.raises(ValueError, match="cannot compose method=fixed"):
        sweeper_with(late).validate_batch_is_legal(batch)
    assert late.composed[-1][0] == "method=fixed"


def test_the_suite_runs_its_sweeps_with_this_sweeper():
    assert "LfsBenchSweeper" in [c.__name__ for c in Plugins.instance().discover(Sweeper)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+table=cifar10", "tier=mini"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.lfs_bench_sweeper.sweeper.LfsBenchSweeper"
    assert dict(cfg.hydra.sweeper.params)["seed"] == "0,1,2,3,4"  # the table's sweep reaches it
