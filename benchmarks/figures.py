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
* The scale ablation (not in the paper): the metric against s * std (the head's scale times the
  sampling std), one panel per dataset, one line per method and policy step; below, how far mu
  drifted from mu_0 (in sampling stds).
"""
from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

import lfs  # noqa: E402
from benchmarks.results import load_history  # noqa: E402
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
        hist = load_history(r["_path"])
        if hist is not None:
            yield r, hist


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


#: the metric a dataset's panel shows: the first of these its rows have (classification: error,
#: retrieval: mAP, face: rank-1 identification)
SCALE_METRICS = ("top1_error", "mAP", "rank1")


def _knob(row: dict, group: str, key: str):
    """A row's ``key``: its setting's where the table records it, else its config's ``group.key``."""
    if key in row["setting"]:
        return row["setting"][key]
    return ((row.get("provenance") or {}).get("config") or {}).get(group, {}).get(key)


def mu_drift(row: dict) -> float | None:
    """How far the search moved mu: ``sqrt(mean_j (mu_T - mu_0)_j^2) / std`` (root mean square over
    the coordinates, in sampling stds), from the row's history (mu_0: the first epoch's mu, mu_T:
    the last epoch's mu_next); None without a history or a mu."""
    from benchmarks.report import sampling_std

    path = row.get("_path")
    hist = load_history(path) if path else None
    if hist is None:
        return None
    records = [searcher_record(h) for h in hist]
    if not records or not records[0].get("mu") or not records[-1].get("mu_next"):
        return None
    std = sampling_std({"sigma": _knob(row, "search", "sigma"), "sigma_is": _knob(row, "search", "sigma_is")})
    d = torch.tensor(records[-1]["mu_next"], dtype=torch.float64) - torch.tensor(records[0]["mu"], dtype=torch.float64)
    return float(d.pow(2).mean().sqrt()) / std


def scale_points(rows: list[dict], table: str = "ablation_scale") -> dict:
    """``{(dataset, metric, series, s * std): {"values": [...], "drift": [...], "outside": [...]}}``
    over seeds: the dataset's metric (:data:`SCALE_METRICS`), mu's drift (:func:`mu_drift`, where
    mu is learned) and the samples drawn outside the space (``samples_outside_space``, 0 if none).
    A series is a method with its other settings (the policy step), never pooled."""
    from benchmarks.report import logit_scale

    by_dataset = defaultdict(set)
    for r in rows:
        if r["table"] == table:
            by_dataset[r["dataset"]] |= set(r["metrics"])
    metric = {d: next((m for m in SCALE_METRICS if m in ms), None) for d, ms in by_dataset.items()}
    pts: dict = defaultdict(lambda: {"values": [], "drift": [], "outside": []})
    for r in rows:
        if r["table"] != table or metric.get(r["dataset"]) is None or metric[r["dataset"]] not in r["metrics"]:
            continue
        knobs = {"s": _knob(r, "model", "s"), "sigma": _knob(r, "search", "sigma"),
                 "sigma_is": _knob(r, "search", "sigma_is") or "variance"}
        x = logit_scale(knobs) if None not in (knobs["s"], knobs["sigma"]) else None
        if x is None:
            continue
        other = _setting_label({k: v for k, v in r["setting"].items() if k not in knobs})
        p = pts[(r["dataset"], metric[r["dataset"]], f"{r['method']}, {other}" if other else r["method"], x)]
        p["values"].append(r["metrics"][metric[r["dataset"]]])
        drift = mu_drift(r)
        if drift is not None:
            p["drift"].append(drift)
        p["outside"].append(int((r.get("extra") or {}).get("samples_outside_space", 0)))
    return pts


def scale_table(rows: list[dict], table: str = "ablation_scale") -> list[str]:
    """:func:`scale_points` as Markdown lines: per dataset, method and step, and s * std, the
    metric's mean ± std over seeds (n), mu's drift (mean ± std, in sampling stds; 0 where mu is
    fixed, "-" without a history) and the samples drawn outside the space (total over seeds).

        python -c "from benchmarks import figures, results; print(*figures.scale_table(results.load_rows('results/mini/ablation_scale')), sep=chr(10))"
    """
    from benchmarks.stats import summarize

    def ms(values: list[float]) -> str:
        if not values:
            return "-"
        st = summarize(values)
        return f"{st['mean']:.2f}" + (f" ± {st['std']:.2f}" if st["n"] > 1 else "") + f" ({st['n']})"

    lines = ["| dataset | method, step | s·std | metric: mean ± std (n) | drift of mu (stds) | samples outside the space |",
             "|---|---|---|---|---|---|"]
    for (dataset, metric, series, x), p in sorted(scale_points(rows, table).items()):
        lines.append(f"| {dataset} | {series} | {x:.2f} | {metric} {ms(p['values'])} | {ms(p['drift'])} | "
                     f"{sum(p['outside'])} |")
    return lines


def scale_curves(rows: list[dict], out: Path, table: str = "ablation_scale") -> Path | None:
    """The scale ablation as a figure: per dataset (a column), the metric against s * std (top)
    and mu's drift in sampling stds (bottom), mean and a band of +-1 std over seeds, one line per
    method and policy step (one line style per method); the paper's sigma (Eq. 19's default,
    variance 0.2) is marked."""
    from lfs.search import SearchConfig

    from benchmarks.report import logit_scale

    pts = scale_points(rows, table)
    if not pts:
        return None
    datasets = sorted({d for d, _, _, _ in pts})
    methods = sorted({s.split(",")[0] for _, _, s, _ in pts}, reverse=True)
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.8 * len(datasets), 6.6), squeeze=False, sharex="col")
    for col, dataset in enumerate(datasets):
        top, bottom = axes[0][col], axes[1][col]
        metric = next(m for d, m, _, _ in pts if d == dataset)
        s_head = next((_knob(r, "model", "s") for r in rows if r["table"] == table and r["dataset"] == dataset), None)
        for series in sorted({s for d, _, s, _ in pts if d == dataset}):
            xs = sorted(x for d, _, s, x in pts if d == dataset and s == series)
            cells = [pts[(dataset, metric, series, x)] for x in xs]
            style = styles[methods.index(series.split(",")[0]) % len(styles)]
            mean = torch.tensor([sum(c["values"]) / len(c["values"]) for c in cells])
            sd = torch.tensor([torch.tensor(c["values"], dtype=torch.float64).std().item() if len(c["values"]) > 1
                               else 0.0 for c in cells])
            line, = top.plot(xs, mean, style, marker="o", label=series)
            top.fill_between(xs, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
            drift = [(x, c["drift"]) for x, c in zip(xs, cells) if c["drift"]]
            if drift:
                dx = [x for x, _ in drift]
                dm = torch.tensor([sum(v) / len(v) for _, v in drift])
                dsd = torch.tensor([torch.tensor(v, dtype=torch.float64).std().item() if len(v) > 1 else 0.0
                                    for _, v in drift])
                bottom.plot(dx, dm, style, marker="o", color=line.get_color(), label=series)
                bottom.fill_between(dx, (dm - dsd).clamp_min(0), dm + dsd, color=line.get_color(), alpha=0.15)
        if s_head is not None:
            paper = logit_scale({"s": s_head, "sigma": SearchConfig.sigma, "sigma_is": SearchConfig.sigma_is})
            for ax in (top, bottom):
                ax.axvline(paper, color="grey", lw=0.8, ls=":")
            top.annotate("paper's sigma", (paper, 1), xycoords=("data", "axes fraction"), fontsize=7,
                         ha="right", va="top", rotation=90, color="grey")
        ticks = sorted({x for d, _, _, x in pts if d == dataset})
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{x:.2g}" for x in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        top.set_title(f"{dataset} (s = {float(s_head):g})" if s_head is not None else dataset, fontsize=9)
        lower = metric in ("top1_error",)
        top.set_ylabel(f"{metric} (%)" + (", lower is better" if lower else ", higher is better"))
        bottom.set_xlabel("s * std: the sampled perturbation in logit units (log scale)")
        bottom.set_ylabel("drift of mu: RMS |mu_T - mu_0| (stds)")
    axes[0][0].legend(fontsize=7)
    n = min(len(p["values"]) for p in pts.values())
    fig.suptitle(f"{table}: metric and drift of mu against s * std (mean" + (", band +-1 std over seeds)" if n > 1
                 else f", n = {n})"), fontsize=9)
    return _save(fig, out / f"{table}_s_std.png")


def evolution_curves(rows: list[dict], out: Path, table: str = "autoloss_zero") -> Path | None:
    """The efficiency of a search over loss expressions, as the search saw it: the best validation reward found so far
    against the candidates explored (screened, reused or trained), one panel per dataset, one line
    per method: the mean over seeds as far as every seed went, and each seed's own curve (thin)
    to the end of its budget."""
    curves: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["table"] != table or not r.get("_path"):
            continue
        hist = load_history(r["_path"])
        if not hist:
            continue
        best, ys = -math.inf, []
        for h in hist:
            if h.get("fitness") is not None:
                best = max(best, h["fitness"])
            ys.append(best if best > -math.inf else math.nan)
        curves[r["dataset"]][r["method"]].append(ys)
    if not curves:
        return None
    datasets = sorted(curves)
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(7.0, 5 * len(datasets)), 4.0), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for k, (method, runs) in enumerate(sorted(curves[ds].items())):
            color = f"C{k}"
            n = min(len(y) for y in runs)  # the mean where every seed has explored that many
            mean = []
            for i in range(n):
                vals = [y[i] for y in runs if not math.isnan(y[i])]
                mean.append(sum(vals) / len(vals) if vals else math.nan)
            ax.plot(range(1, n + 1), mean, color=color, label=f"{method} (mean of {len(runs)})")
            for y in runs:  # each seed to the end of its budget
                ax.plot(range(1, len(y) + 1), y, color=color, alpha=0.3, linewidth=0.7)
        ax.set_xscale("log")
        ax.set_title(ds)
        ax.set_xlabel("candidates explored (log scale)")
        ax.set_ylabel("best validation reward so far")
        ax.legend(fontsize=7)
    fig.suptitle(f"{table}: best validation reward found against candidates explored (mean over seeds; thin: "
                 "each seed)",
                 fontsize=9)
    return _save(fig, out / f"{table}_best_reward.png")


def found_losses(rows: list[dict], out: Path, table: str) -> Path | None:
    """The losses the searches found, beside cross entropy's: the loss and its derivative with
    respect to the target logit against p_y, on a 10-class path (the other logits 0, the target
    logit from -6 to +9). Per dataset and method, the formula with the best validation fitness
    over the seeds (chosen on validation, never on test)."""
    from lfs.evolve import ExpressionError, parse

    best: dict = {}
    for r in rows:
        e = r.get("extra") or {}
        if r["table"] != table or "explored" not in e or not e.get("loss"):
            continue
        key = (r["dataset"], r["method"])
        fit = e.get("best_fitness")
        if fit is not None and (key not in best or fit > best[key][0]):
            best[key] = (fit, e["loss"])
    if not best:
        return None
    z = torch.linspace(-6.0, 9.0, 200, dtype=torch.float64)
    x = torch.zeros(len(z), 10, dtype=torch.float64)
    x[:, 0] = z
    y = torch.zeros_like(x)
    y[:, 0] = 1.0
    p_y = torch.softmax(x, -1)[:, 0].numpy()

    def curve(formula: str):
        xx = x.clone().requires_grad_(True)
        loss = parse(formula)(xx, y)
        (grad,) = torch.autograd.grad(loss.sum(), xx)
        return loss.detach().numpy(), grad[:, 0].numpy()

    datasets = sorted({d for d, _ in best})
    fig, axes = plt.subplots(2, len(datasets), figsize=(max(7.0, 5 * len(datasets)), 7.0), squeeze=False)
    for col, ds in enumerate(datasets):
        top, bottom = axes[0][col], axes[1][col]
        lines = [("cross entropy", "neg(dot(y, log(softmax(x))))", "k", "--")]
        lines += [(f"{m}: {f}", f, f"C{k}", "-") for k, ((d, m), (_, f)) in
                  enumerate(sorted(best.items())) if d == ds]
        for label, formula, color, style in lines:
            try:
                value, grad = curve(formula)
            except ExpressionError as e:  # a formula this version cannot parse: left out, and said
                print(f"warning: {table} figure: {label}: {e}", file=sys.stderr)
                continue
            short = label if len(label) <= 60 else label[:57] + "..."
            top.plot(p_y, value, color=color, linestyle=style, label=short)
            bottom.plot(p_y, grad, color=color, linestyle=style)
        top.set_title(ds)
        top.set_yscale("symlog", linthresh=1.0)
        top.set_ylabel("loss (symlog)")
        bottom.set_ylabel("d loss / d target logit")
        bottom.set_xlabel("p_y (10 classes, other logits 0)")
        top.legend(fontsize=6)
    fig.suptitle(f"{table}: the found losses (best validation fitness over seeds) beside cross entropy", fontsize=9)
    return _save(fig, out / f"{table}_found_losses.png")


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
    if table in (None, "ablation_scale"):
        p = scale_curves(rows, out)
        written += [p] if p else []
    # every table whose rows ran searches over loss expressions (their extra has "explored")
    for tb in sorted({r["table"] for r in rows if "explored" in (r.get("extra") or {})}):
        for p in (evolution_curves(rows, out, tb), found_losses(rows, out, tb)):
            written += [p] if p else []
    return written
