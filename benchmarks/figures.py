"""The paper's figures, drawn from result rows (and their search histories) only.

* Figure 1: each known loss (solid) and its piecewise-linear fit from the search space (dotted),
  log-scale loss, for the M values the figure1 rows were run with.
* Figure 3: the mu trajectory of AM-LFS runs (``learn``) over epochs: one panel per block of theta
  (a_t, b_t, a_tau, b_tau), one line per interval.
* Figure 4: the gradient norm of the intra-class term, ``|dL/df_y|`` (Eq. 8), against the
  activation ``f_y = cos(theta_y)``, for the final learned mu of AM-LFS runs vs the baseline
  (identity theta = softmax cross entropy), in a reference context: the other C - 1 classes at
  cosine 0 and the run's head scale s.
* Ablations: the metric against B (Table 6) and M (Table 7), mean and 95 % interval over seeds.
* Table 2: the error against the label noise, one line per method; Section 4.6: bars per method.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import lfs  # noqa: E402
from lfs.fit import curve_kind, fit_theta, loss_curve  # noqa: E402
from benchmarks.runner import fit_spec  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure1(rows: list[dict], out: Path) -> Path | None:
    Ms = sorted({r["setting"].get("M") for r in rows if r["table"] == "figure1"})
    if not Ms:
        return None
    M = 6 if 6 in Ms else Ms[0]
    errors = {r["method"]: r["metrics"]["approx_error"] for r in rows
              if r["table"] == "figure1" and r["setting"].get("M") == M}
    order = ("cross_entropy", "sphereface", "cosface", "arcface", "focal")  # the paper's panel order
    names = sorted(errors, key=lambda n: (order.index(n) if n in order else len(order), n))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0))
    for ax, name in zip(axes if len(names) > 1 else [axes], names):
        t, tau, method = fit_spec(name)
        x, exact = loss_curve(t, tau)
        _, fitted = loss_curve(t, tau, fit_theta(t, tau, M, method))
        ax.plot(x, exact, "-", label="loss")
        ax.plot(x, fitted, ":", lw=2, label=f"search space, M={M}")
        ax.set_yscale("log")
        ax.set_title(f"{name}\nerror {errors[name]:.3f}", fontsize=9)
        ax.set_xlabel("target probability p" if curve_kind(t, tau) == "tau" else "target cosine")
    axes_list = axes if len(names) > 1 else [axes]
    axes_list[0].set_ylabel("loss (log scale)")
    axes_list[0].legend(fontsize=7)
    return _save(fig, out / "figure1_search_space.png")


def _histories(rows: list[dict], method: str = "learn"):
    for r in rows:
        if r["method"] != method:
            continue
        path = Path(r["_path"])
        hist = path.with_name(path.stem + ".history.json")
        if hist.exists():
            yield r, json.loads(hist.read_text())


def searcher_record(epoch: dict) -> dict:
    """The Gaussian searcher's record of one epoch (``mu``, ``mu_next``, ...): an epoch record's
    ``searcher`` entry (rows written before loss families kept them at the top level)."""
    return epoch.get("searcher", epoch)


def _setting_label(setting: dict) -> str:
    """``noise=0.2, B=8`` (empty for a table without settings): no Python dict in a figure."""
    return ", ".join(f"{k}={v}" for k, v in sorted(setting.items()))


def figure3(rows: list[dict], out: Path) -> list[Path]:
    """mu over epochs, one figure per (table, dataset, setting): the mean over seeds with a band
    from the lowest to the highest seed, one line per interval, one panel per block of theta."""
    written = []
    groups = defaultdict(list)
    for r, hist in _histories(rows):
        if r["table"] in ("cifar10", "market1501", "dukemtmc", "megaface") and hist and searcher_record(hist[0]).get("mu"):
            groups[(r["table"], r["dataset"], _setting_label(r["setting"]))].append((r, hist))
    for (table, dataset, setting), runs in sorted(groups.items()):
        mus = [torch.tensor([searcher_record(h)["mu"] for h in hist] + [searcher_record(hist[-1])["mu_next"]])
               for _, hist in runs]
        T = min(len(m) for m in mus)
        mu = torch.stack([m[:T] for m in mus])  # seeds x epochs+1 x 4M
        M = mu.shape[2] // 4
        epochs = range(T)
        fig, axes = plt.subplots(1, 4, figsize=(13, 3))
        blocks = [("a_t", "slope of t"), ("b_t", "bias of t"), ("a_tau", "slope of tau"), ("b_tau", "bias of tau")]
        for k, (ax, (name, what)) in enumerate(zip(axes, blocks)):
            for i in range(M):
                col = mu[:, :, k * M + i]
                line, = ax.plot(epochs, col.mean(0), label=f"interval {i}")
                if len(runs) > 1:
                    ax.fill_between(epochs, col.min(0).values, col.max(0).values, color=line.get_color(), alpha=0.15)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"mu of {what}")
        axes[0].legend(fontsize=6)
        where = f", {setting}" if setting else ""
        fig.suptitle(f"Figure 3: mu over epochs ({dataset}, {table}{where}): mean of {len(runs)} seed(s)"
                     + (", band = lowest to highest seed" if len(runs) > 1 else ""), fontsize=9)
        suffix = "" if not setting else "_" + setting.replace(", ", "_").replace("=", "")
        written.append(_save(fig, out / f"figure3_mu_{table}_{dataset}{suffix}.png"))
    return written


def intra_class_gradient(theta: torch.Tensor, f_y: torch.Tensor, s: float, num_classes: int) -> torch.Tensor:
    """|dL/df_y| of the unified loss with the other classes at cosine 0 (Eq. 8, with tau)."""
    cos = torch.zeros(len(f_y), num_classes, dtype=torch.float64)
    cos[:, 0] = f_y
    cos.requires_grad_(True)
    target = torch.zeros(len(f_y), dtype=torch.long)
    loss = lfs.am_lfs_loss(cos, target, theta.to(torch.float64), s, reduction="sum")
    (grad,) = torch.autograd.grad(loss, cos)
    return grad[:, 0].abs()


def figure4(rows: list[dict], out: Path) -> list[Path]:
    written = []
    groups = defaultdict(list)
    for r in rows:
        mu = (r.get("extra") or {}).get("final_mu")
        if r["method"] == "learn" and mu and r["table"] in ("market1501", "dukemtmc", "megaface", "cifar10"):
            groups[(r["table"], r["dataset"])].append(r)
    for (table, dataset), runs in sorted(groups.items()):
        cfg = runs[0]["provenance"].get("config", {})
        s = float(cfg.get("model", {}).get("s", 1.0))
        C = int(runs[0]["extra"]["num_classes"])
        f = torch.linspace(-0.999, 0.999, 400, dtype=torch.float64)
        M = len(runs[0]["extra"]["final_mu"]) // 4
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(f, intra_class_gradient(lfs.identity_theta(M), f, s, C), "k-", lw=2, label="baseline (softmax)")
        base = intra_class_gradient(lfs.identity_theta(M), f, s, C)
        curves = [base]
        for r in sorted(runs, key=lambda r: (_setting_label(r["setting"]), r["seed"]))[:6]:
            theta = torch.tensor(r["extra"]["final_mu"], dtype=torch.float64)
            g = intra_class_gradient(theta, f, s, C)
            curves.append(g)
            where = _setting_label(r["setting"])
            ax.plot(f, g, "--", label=f"AM-LFS final mu, {where + ', ' if where else ''}seed {r['seed']}")
        # robust limits: one learned loss with a huge gradient must not flatten the others
        top = float(torch.quantile(torch.cat(curves), 0.98))
        ax.set_ylim(0, max(top, float(base.max())) * 1.1)
        ax.set_xlabel("activation f_y = cos(theta_y)")
        ax.set_ylabel("|dL / df_y| (clipped at the 98th percentile)")
        ax.set_title(f"Figure 4: intra-class gradient ({dataset}, s={s:g}, C={C})", fontsize=9)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / f"figure4_gradient_{table}_{dataset}.png"))
    return written


def ablation(rows: list[dict], out: Path, table: str, knob: str, metric: str = "mAP") -> Path | None:
    from benchmarks.stats import summarize

    pts = defaultdict(list)
    for r in rows:
        if r["table"] == table and knob in r["setting"] and metric in r["metrics"]:
            pts[(r["dataset"], r["setting"][knob])].append(r["metrics"][metric])
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for dataset in sorted({d for d, _ in pts}):
        xs = sorted(k for d, k in pts if d == dataset)
        stats = [summarize(pts[(dataset, x)]) for x in xs]
        means = [st["mean"] for st in stats]
        err = [0 if math.isnan(st["ci95_high"]) else st["ci95_high"] - st["mean"] for st in stats]
        ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label=dataset)
    ax.set_xlabel(knob)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_xticks(sorted({k for _, k in pts}))
    n = min(len(v) for v in pts.values())
    ax.set_title(f"{table}: {metric} vs {knob} (mean" + (", 95 % CI)" if n > 1 else f", n = {n}: no interval)"),
                 fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out / f"{table}_{knob}.png")


def _error_bar(values: list[float]) -> tuple[float, float]:
    from benchmarks.stats import summarize

    st = summarize(values)
    return st["mean"], (0.0 if math.isnan(st["ci95_high"]) else st["ci95_high"] - st["mean"])


def noise_points(rows: list[dict], table: str = "cifar10", metric: str = "top1_error") -> dict:
    """``{(dataset, series, noise): [values over seeds]}``; a series is a method, or a method with
    its other settings (``learn (search.lr=0.2)``): a variant is its own line, never pooled."""
    pts = defaultdict(list)
    for r in rows:
        if r["table"] == table and "noise" in r["setting"] and metric in r["metrics"]:
            other = _setting_label({k: v for k, v in r["setting"].items() if k != "noise"})
            series = r["method"] if not other else f"{r['method']} ({other})"
            pts[(r["dataset"], series, float(r["setting"]["noise"]))].append(r["metrics"][metric])
    return pts


def noise_curves(rows: list[dict], out: Path, table: str = "cifar10", metric: str = "top1_error") -> Path | None:
    """Table 2 as a figure: the metric against the label-noise ratio, one line per method, one
    panel per dataset, mean and 95 % interval over seeds."""
    pts = noise_points(rows, table, metric)
    if not pts:
        return None
    datasets = sorted({d for d, _, _ in pts})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method in sorted({m for d, m, _ in pts if d == dataset}):
            xs = sorted(x for d, m, x in pts if d == dataset and m == method)
            stats = [_error_bar(pts[(dataset, method, x)]) for x in xs]
            ax.errorbar([100 * x for x in xs], [m for m, _ in stats], yerr=[e for _, e in stats], marker="o",
                        capsize=3, label=method)
        ax.set_xlabel("label noise (%)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(dataset, fontsize=9)
        ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{table}: {metric} against label noise (mean, 95 % CI over seeds; log scale)", fontsize=9)
    return _save(fig, out / f"{table}_noise.png")


def method_bars(rows: list[dict], out: Path, table: str, metric: str = "mAP") -> Path | None:
    """A table without a swept knob (Section 4.6's controls) as bars: mean and 95 % interval."""
    pts = defaultdict(list)
    for r in rows:
        if r["table"] == table and metric in r["metrics"]:
            pts[(r["dataset"], r["method"])].append(r["metrics"][metric])
    if not pts:
        return None
    keys = sorted(pts)
    stats = [_error_bar(pts[k]) for k in keys]
    fig, ax = plt.subplots(figsize=(1.2 * len(keys) + 2, 3.4))
    ax.bar(range(len(keys)), [m for m, _ in stats], yerr=[e for _, e in stats], capsize=4, color="tab:blue")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{m}\n({d})" if len({d for d, _ in keys}) > 1 else m for d, m in keys], fontsize=8)
    low = min(m - e for m, e in stats)
    ax.set_ylim(max(0.0, low - 5), max(m + e for m, e in stats) + 2)
    ax.set_ylabel(f"{metric} (%)")
    n = min(len(v) for v in pts.values())
    ax.set_title(f"{table}: {metric} (mean" + (", 95 % CI)" if n > 1 else f", n = {n})"), fontsize=9)
    return _save(fig, out / f"{table}_{metric}.png")


def draw_all(rows: list[dict], out: Path, table: str | None = None) -> list[Path]:
    if table is not None:
        rows = [r for r in rows if r["table"] == table]
    written: list[Path] = []
    if table in (None, "figure1"):
        p = figure1(rows, out)
        written += [p] if p else []
    written += figure3(rows, out) + figure4(rows, out)
    for tb, knob in (("ablation_b", "B"), ("ablation_m", "M")):
        if table in (None, tb):
            p = ablation(rows, out, tb, knob)
            written += [p] if p else []
    if table in (None, "cifar10"):
        p = noise_curves(rows, out)
        written += [p] if p else []
    if table in (None, "ablation_search"):
        p = method_bars(rows, out, "ablation_search")
        written += [p] if p else []
    return written
