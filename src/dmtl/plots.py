"""Figures of the study, drawn from the files the pipeline writes (never from numbers typed by hand).

Every figure function draws, writes its PNG (when given a path) and hands the figure to :func:`show`: in a
Jupyter kernel (a stage notebook run by papermill, or JupyterLab) the figure is displayed where the cell
draws it, so the executed notebook and its HTML report carry it; anywhere else (sweeps, tests, scripts)
nothing is shown. Either way the figure is then closed, so a long run never piles up open figures.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (where figures are displayed), not a script or a test."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


# Headless outside a kernel: scripts and tests never open a window. In a kernel the backend is left as the
# user (or ipykernel's inline default) set it, so their own figures still show.
if not in_kernel():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from dmtl.vocab import TEACHER, model_color, ordered_models  # noqa: E402

# The teacher's variants (teacher figure only): the default keeps the teacher's colour, the others get colours
# no model uses.
VARIANT_COLORS = {"default": model_color(TEACHER), "shared_bottom": "#17becf", "no_esmm": "#c49c94"}
PNG_DPI = 110


def palette(values: Sequence[str]) -> dict[str, str]:
    """The colour of each model (:func:`dmtl.vocab.model_color`) or teacher variant in ``values``."""
    return {v: VARIANT_COLORS.get(v) or model_color(v) for v in values}


def show(fig: plt.Figure, png: bytes | None = None) -> plt.Figure:
    """Display ``fig`` in a Jupyter kernel (as the PNG written to plots/, when given), then close it.

    Outside a kernel it is only closed. The returned figure can still be saved or inspected; ending a cell
    with ``fig = plots....(...)`` (not a bare call) keeps IPython from displaying it a second time.
    """
    if in_kernel():
        from IPython.display import Image, display

        display(Image(data=png if png is not None else _png(fig), format="png"))
    plt.close(fig)
    return fig


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, bbox_inches="tight")
    return buf.getvalue()


def plain(text: Any) -> str:
    """``text`` for a title, label or tick as it is: a ``$`` would otherwise start matplotlib's mathtext.

    A sweep value or folder name holding ``$x_$`` would be parsed as a formula (and one that does not parse
    makes ``savefig`` raise); escaped, it is drawn literally. PNGs hold no markup, so nothing else needs
    escaping.
    """
    return str(text).replace("$", r"\$")


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Write ``fig`` as a PNG at ``path`` (atomically; skipped when None), then :func:`show` it."""
    png = _png(fig)
    if path is not None:
        from dmtl.io import atomic_path

        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(png)
    return show(fig, png)


def learning_curves(curves: pd.DataFrame, hue: str, path: str | Path | None = None) -> plt.Figure:
    """Train and validation loss per epoch, one line per ``hue`` value and seed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharex=True)
    for ax, col in zip(axes, ("train_loss", "val_loss"), strict=True):
        sns.lineplot(
            data=curves,
            x="epoch",
            y=col,
            hue=hue,
            palette=palette(list(curves[hue].unique())),
            units="seed",
            estimator=None,
            ax=ax,
            marker="o",
        )
        ax.set_title(plain(col.replace("_", " ")))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole numbers
    fig.tight_layout()
    return save(fig, path)


def metric_bars(
    summary: Mapping[str, Any], metrics: Sequence[str], path: str | Path | None = None
) -> plt.Figure:
    """Mean and 95% interval per model for each metric (one panel per metric)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics, strict=True):
        models = ordered_models([m for m, d in summary["models"].items() if metric in d])
        means = [summary["models"][m][metric]["mean"] for m in models]
        lo = [summary["models"][m][metric]["ci_low"] for m in models]
        hi = [summary["models"][m][metric]["ci_high"] for m in models]
        err = np.array(
            [
                [mu - (a if a is not None else mu) for mu, a in zip(means, lo, strict=True)],
                [(b if b is not None else mu) - mu for mu, b in zip(means, hi, strict=True)],
            ]
        )
        colors = [model_color(m) for m in models]
        ax.bar(range(len(models)), means, yerr=err, color=colors, capsize=4)
        ax.set_xticks(range(len(models)), [plain(m) for m in models], rotation=35, ha="right")
        finite = [x for x in lo + hi if x is not None]
        if finite:
            pad = (max(finite) - min(finite)) * 0.3 + 1e-3
            ax.set_ylim(max(0.0, min(finite) - pad), max(finite) + pad)
        ax.set_title(plain(metric))
    fig.tight_layout()
    return save(fig, path)


def at_k_curves(table: pd.DataFrame, columns: Sequence[str], path: str | Path | None = None) -> plt.Figure:
    """Retrieval metrics against K, one line per model in its colour; one legend above the panels."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.9))
    models = ordered_models(list(table["model"].unique()))
    for ax, col in zip(np.atleast_1d(axes), columns, strict=True):
        sns.lineplot(
            data=table,
            x="k",
            y=col,
            hue="model",
            hue_order=models,
            palette=palette(models),
            marker="o",
            ax=ax,
            legend=ax is np.atleast_1d(axes)[0],
        )
        ax.set_title(plain(f"{col}@K"))
    first = np.atleast_1d(axes)[0]
    handles, labels = first.get_legend_handles_labels()
    first.get_legend().remove()  # one legend for all panels, where it hides no line
    fig.legend(
        handles, [plain(x) for x in labels], loc="upper center", ncol=min(len(labels), 9), frameon=False
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return save(fig, path)


def paired_differences(summary: Mapping[str, Any], metric: str, path: str | Path | None = None) -> plt.Figure:
    """DMTL minus each competitor with its interval: the study's verdicts at a glance."""
    rows = [(k.split("_vs_")[1], d[metric]) for k, d in summary["comparisons"].items() if metric in d]
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * len(rows)))
    for i, (_name, d) in enumerate(rows):
        lo = d["ci_low"] if d["ci_low"] is not None else d["mean"]
        hi = d["ci_high"] if d["ci_high"] is not None else d["mean"]
        ax.plot([lo, hi], [i, i], color="k")
        ax.plot([d["mean"]], [i], "o", color=model_color("dmtl"))
    ax.axvline(0, color="grey", ls="--")
    ax.set_yticks(range(len(rows)), [plain(f"dmtl - {n}") for n, _ in rows])
    ax.set_title(plain(f"paired difference: {metric}"))
    fig.tight_layout()
    return save(fig, path)


def sweep_summary(
    results: pd.DataFrame, param: str, metrics: Sequence[str], path: str | Path | None = None
) -> plt.Figure:
    """Mean and interval of each metric across a sweep's values, one line per model (same colours throughout)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5))
    handles: dict[str, Any] = {}
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        part = results[results["metric"] == metric]
        for model in ordered_models(list(part["model"].unique())):
            g = part[part["model"] == model]
            x = np.arange(len(g))
            h = ax.errorbar(
                x,
                g["mean"],
                yerr=[g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]],
                marker="o",
                capsize=3,
                label=plain(model),
                color=model_color(model),
            )
            handles.setdefault(model, h)
            ax.set_xticks(x, [plain(v) for v in g["value"]])
        ax.set_xlabel(plain(param))
        ax.set_title(plain(metric))
    fig.legend(
        list(handles.values()),
        [plain(m) for m in handles],
        loc="upper center",
        ncol=len(handles),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return save(fig, path)


def data_overview(prepared: Any, oracle: Any | None, path: str | Path | None = None) -> plt.Figure:
    """The feed at a glance (training days): clicked durations with tau, item CTRs, position, clickbait.

    Panels: duration of clicked impressions with tau; distribution of item CTR (items with at least 20
    impressions; split by the clickbait flag on simulated data); CTR by feed position when the source
    records positions; and, on simulated data, clickbait against the rest on CTR and long read given click.
    """
    imp = prepared.impressions
    train = imp[imp["split"] == 0]
    clicked = train[train["click"] == 1]
    tau = prepared.tau_seconds
    has_position = bool((train["position"] >= 0).any())
    bait = None
    if oracle is not None:
        raw = prepared.items["raw_item_id"].to_numpy()
        bait = oracle.items.set_index("item_id").loc[raw, "is_clickbait"].to_numpy().astype(bool)
    n = 2 + int(has_position) + int(bait is not None)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6))
    cap = float(np.quantile(clicked["duration"], 0.99)) if len(clicked) else 1.0
    axes[0].hist(clicked["duration"].clip(upper=cap), bins=60, color="#1f77b4")
    axes[0].axvline(tau, color="#d62728", ls="--", label=f"tau = {tau:.0f} s")
    axes[0].set_xlabel("duration of clicked impressions (s, clipped at p99)")
    axes[0].legend()
    per_item = train.groupby("item_idx").agg(n=("click", "size"), ctr=("click", "mean"))
    per_item = per_item[per_item["n"] >= 20]
    if bait is not None:
        flag = bait[per_item.index.to_numpy()]
        axes[1].hist(
            [per_item["ctr"][~flag], per_item["ctr"][flag]],
            bins=40,
            stacked=True,
            label=["rest", "clickbait"],
            color=["#1f77b4", "#d62728"],
        )
        axes[1].legend()
    else:
        axes[1].hist(per_item["ctr"], bins=40, color="#1f77b4")
    axes[1].set_xlabel("item CTR (items with >= 20 training impressions)")
    axes[1].set_title(f"overall CTR {train['click'].mean():.3f}")
    col = 2
    if has_position:
        pos = train[train["position"] >= 0]
        by_pos = pos.groupby(pos["position"].clip(upper=19))["click"].mean()
        axes[col].plot(by_pos.index, by_pos.values, marker="o")
        axes[col].set_xlabel("feed position (19 = 19+)")
        axes[col].set_ylabel("CTR")
        axes[col].set_title("position effect")
        col += 1
    if bait is not None:
        is_bait = bait[train["item_idx"].to_numpy()]
        stats = pd.DataFrame(
            {
                "group": np.where(is_bait, "clickbait", "rest"),
                "click": train["click"].to_numpy(),
                "long_read": train["long_read"].to_numpy(),
            }
        )
        g = stats.groupby("group").agg(
            ctr=("click", "mean"), long_read=("long_read", "sum"), clicks=("click", "sum")
        )
        g["long_read_given_click"] = g["long_read"] / g["clicks"]
        g[["ctr", "long_read_given_click"]].T.plot.bar(ax=axes[col], rot=0, color=["#d62728", "#1f77b4"])
        axes[col].set_title("clickbait vs rest")
    fig.tight_layout()
    return save(fig, path)


def student_vs_teacher(sample: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Each student's score against the teacher's p_ctcvr on a sample of test impressions."""
    models = ordered_models(list(sample["model"].unique()))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2))
    for ax, model in zip(np.atleast_1d(axes), models, strict=True):
        g = sample[sample["model"] == model]
        ax.scatter(g["teacher_p_ctcvr"], g["student_score"], s=3, alpha=0.3, color=model_color(model))
        ax.set_xscale("log")
        ax.set_title(plain(model))
        ax.set_xlabel("teacher p_ctcvr")
    np.atleast_1d(axes)[0].set_ylabel("student score <u, v>")
    fig.tight_layout()
    return save(fig, path)


DECISION_COLORS = {
    "better": "#2ca02c",
    "worse": "#d62728",
    "equivalent": "#1f77b4",
    "no_difference": "#1f77b4",
    "not_enough_evidence": "#7f7f7f",
    "undetermined": "#7f7f7f",
}


def regime_map(table: pd.DataFrame, reference: str, path: str | Path | None = None) -> plt.Figure:
    """The report's central figure: the reference minus the strongest non-distilled model at each value of
    each regime knob (one column per knob, one row per metric), with its interval; green where the reference
    is better after correction, red where worse, grey where the evidence does not separate them."""
    sweeps = list(dict.fromkeys(table["sweep"]))
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(
        len(metrics),
        len(sweeps),
        figsize=(3.4 * len(sweeps), 2.9 * len(metrics)),
        squeeze=False,
        sharey="row",
    )
    for i, metric in enumerate(metrics):
        for j, sweep in enumerate(sweeps):
            ax = axes[i][j]
            part = table[(table["sweep"] == sweep) & (table["metric"] == metric)].reset_index(drop=True)
            x = np.arange(len(part))
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
            for k, r in part.iterrows():
                color = DECISION_COLORS.get(r["decision"], "#7f7f7f")
                ax.errorbar(
                    [k],
                    [r["mean"]],
                    yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]],
                    marker="o",
                    capsize=3,
                    color=color,
                )
                ax.annotate(plain(r["strongest"]), (k, r["ci_high"]), fontsize=7, ha="center", va="bottom")
            ax.set_xticks(x, [plain(v) for v in part["value"]])
            if i == len(metrics) - 1:
                ax.set_xlabel(plain(part["param"].iloc[0] if len(part) else sweep).replace("data.sim.", ""))
            if j == 0:
                ax.set_ylabel(f"{plain(reference)} − strongest\n{plain(metric)}")
            if i == 0:
                ax.set_title(plain(sweep))
    fig.tight_layout()
    return save(fig, path)
