"""Add your own search method: a loss family defined here, outside the package, searched by the
suite's Gaussian REINFORCE searcher and run on a mini table beside the suite's own methods.

The family: focal loss (Lin et al. 2017, ``-(1 - p_t)^gamma log p_t``) with its gamma searched
instead of fixed. Three steps, and nothing in ``lfs/`` or ``benchmarks/`` is edited:

1. a family class with ``@register_family`` (its loss, its cross-entropy candidate, its space);
2. a method: the family plus a searcher (here registered from Python; inside the suite it is one
   YAML file in ``benchmarks/methods/``);
3. run a table: the cells of the mini Table 2 analogue on sklearn's digits (3 noise levels), each
   built and run by the same harness code as ``benchmarks/run.py``, rows written with provenance.

    python examples/custom_family.py [--results runs/example] [--seeds 1]

About 30 s on 2 CPU cores. The rows go to ``<results>/mini/cifar10/digits/...``; the last lines
print the table (``benchmarks/report.py --results <results>`` draws it again). The methods beside
it are the suite's: cross entropy with early stopping, focal loss (gamma = 2), AM-LFS.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lfs.family import ParametricFamily, register_family  # noqa: E402
from lfs.loss import as_scale, gather_target  # noqa: E402


# 1. the family --------------------------------------------------------------------------------
@register_family("focal_gamma")
class FocalGamma(ParametricFamily):
    """Focal loss with a searched gamma: ``-(1 - p_t)^gamma log p_t``; gamma = 0 is CE."""

    stackable = True  # candidates are (1,) tensors: the vectorized executor vmaps over them
    dim = 1

    def loss(self, output, target, candidate):
        cos, scale = output
        log_p = gather_target(F.log_softmax(as_scale(scale, cos) * cos, dim=-1), target)
        gamma = candidate[0].to(log_p.dtype)
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        return (-one_minus_p.pow(gamma) * log_p).mean()

    def identity(self):
        return torch.zeros(1, dtype=torch.float64)

    def box(self):  # the space: gamma >= 0 (search.constraint=none lifts it)
        return torch.zeros(1, dtype=torch.float64), torch.full((1,), math.inf, dtype=torch.float64)

    def describe(self, candidate):
        return f"-(1 - p_t)^{float(candidate[0]):.3g} log p_t"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="runs/example", type=Path)
    ap.add_argument("--seeds", default=1, type=int)
    args = ap.parse_args()

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from benchmarks import methods, results, runner
    from benchmarks.report import aggregate, fmt

    # 2. the method: the family plus the suite's Gaussian searcher (B, sigma, lr from search.*)
    methods.register(methods.Method(name="focal_gamma_search", description="focal loss with gamma searched by REINFORCE",
                                    family={"name": "focal_gamma"}, searcher={"name": "gaussian", "mode": "learn"}))

    # 3. the table's cells, as benchmarks/run.py composes and runs them
    rows = []
    for noise in (0.0, 0.1, 0.2):
        for method in ("ce_es", "focal", "learn", "focal_gamma_search"):
            for seed in range(args.seeds):
                with initialize_config_dir(config_dir=str(ROOT / "benchmarks" / "conf"), version_base="1.3"):
                    cfg = compose("config", overrides=["+table=cifar10", "tier=mini", "dataset=digits", f"method={method}",
                                                       f"noise={noise}", f"seed={seed}", "progress=false"])
                plain = OmegaConf.to_container(cfg, resolve=True)
                start = time.perf_counter()
                metrics, extra, history = runner.run(plain)
                prov = results.provenance(overrides=[f"method={method}", f"noise={noise}", f"seed={seed}"])
                prov.update(wall_seconds=round(time.perf_counter() - start, 3), config=plain,
                            command="python examples/custom_family.py")
                row = results.make_row(table="cifar10", tier="mini", dataset="digits", method=method,
                                       setting={"noise": noise}, seed=seed, metrics=metrics, provenance=prov, extra=extra)
                path = results.row_path(args.results, "mini", "cifar10", "digits", method, {"noise": noise}, seed)
                results.atomic_write_json(path, row)
                row["_path"] = str(path)
                rows.append(row)
                found = f"  found: {extra['loss']}" if "loss" in extra else ""
                print(f"digits/{method}/noise={noise}/seed={seed}: top1_error={metrics['top1_error']:.2f} "
                      f"({prov['wall_seconds']:.1f}s){found}", flush=True)

    agg = aggregate(rows)
    print("\n| method | noise 0 | noise 0.1 | noise 0.2 |\n|---|---|---|---|")
    for method in ("ce_es", "focal", "learn", "focal_gamma_search"):
        cells = [fmt(agg.get(("mini", "cifar10", "digits", method, f"noise={n!r}", "top1_error")))
                 for n in (0.0, 0.1, 0.2)]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(f"\nrows in {args.results / 'mini' / 'cifar10' / 'digits'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
