"""Tables and figures of the benchmark report (``notebooks/benchmarks.ipynb``), built from ``results.json``.

The notebook only reads ``benchmarks/results.json`` and shows what these functions return, so the report
holds no arithmetic of its own: every number it shows is in the results file or computed here from it.
Each function takes one benchmark's section of the file (``results["benchmarks"][name]``) unless it says
otherwise.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

MODELS = ("teacher", "student")


# ---------------------------------------------------------------------------------------------- overview


def header(results: dict[str, Any]) -> str:
    """When and where the benchmarks ran, the load average at the start and the thread count."""
    load = results.get("load_average") or {}
    m = results["machine"]
    return (
        f"generated {results['generated_at']} on {m['cpu_count']} CPU(s), {m['platform']}\n"
        f"1/5/15-min load average when the run started: {load.get('at_start')} "
        f"(waited {load.get('waited_seconds', 0):.0f} s)\n"
        f"threads (torch and faiss): {results.get('threads') or 'each benchmark default, 2'}"
    )


def runs_table(results: dict[str, Any]) -> pd.DataFrame:
    """Each benchmark's status, seconds and the load average at its start and end."""
    return pd.DataFrame(results["runs"]).T


def figures_table(results: dict[str, Any]) -> pd.DataFrame:
    """Every figure next to its target (the table the README quotes)."""
    return pd.DataFrame(results["figures"])[["name", "measured", "target", "met"]]


# ---------------------------------------------------------------------------------------------- roofline


def roofline_table(r: dict[str, Any]) -> pd.DataFrame:
    """Per model: FLOPs per sample, then samples/s, GFLOP/s and shares of model-only, its GEMMs and loop."""
    rows = {}
    for model in MODELS:
        f = r["models"][model]
        only, ceil, loop = f["model_only"], f["gemm_ceiling"], f["loop"]
        rows[model] = {
            "FLOP/sample (training)": only["flops_per_sample"],
            "model-only samples/s": only["samples_per_second"],
            "model-only GFLOP/s": only["gflops"],
            "model-only / GEMM rate": only["share_of_gemm"],
            "its GEMMs alone / GEMM rate": ceil["share_of_gemm"],
            "loop samples/s": loop["samples_per_second"],
            "loop / model-only": loop["share_of_model_only"],
            "loop / GEMM rate": loop["share_of_gemm"],
        }
    return pd.DataFrame(rows).T


ROOFLINE_FORMAT = {
    "FLOP/sample (training)": "{:,.0f}",
    "model-only samples/s": "{:,.0f}",
    "model-only GFLOP/s": "{:.1f}",
    "model-only / GEMM rate": "{:.0%}",
    "its GEMMs alone / GEMM rate": "{:.0%}",
    "loop samples/s": "{:,.0f}",
    "loop / model-only": "{:.0%}",
    "loop / GEMM rate": "{:.0%}",
}


def roofline_plot(r: dict[str, Any]) -> plt.Figure:
    """GFLOP/s of the GEMM rate, each model's GEMMs alone, its model-only step and its whole loop.

    The loop's bar is the model-only step times the loop's share of it (the median of paired runs, the
    figure the target reads), so a quieter moment during the loop runs does not lift it above model-only.
    """
    gemm = r["gemm"]["gflops"]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    labels = ("its GEMMs alone", "model-only step", "whole loop (model-only x paired share)")
    width = 0.25
    for i, model in enumerate(MODELS):
        f = r["models"][model]
        values = [
            f["gemm_ceiling"]["gflops"],
            f["model_only"]["gflops"],
            f["model_only"]["gflops"] * f["loop"]["share_of_model_only"],
        ]
        for j, (label, v) in enumerate(zip(labels, values, strict=True)):
            ax.bar(i + (j - 1) * width, v, width, color=f"C{j}", label=label if i == 0 else None)
    ax.axhline(gemm, color="k", lw=1, label=f"GEMM rate ({r['gemm']['n']}², same run)")
    target = r["targets"]["model_only_share_of_gemm"]
    ax.axhline(gemm * target, color="r", ls="--", lw=1, label=f"target: {target:.0%} of it")
    ax.set_xticks(range(len(MODELS)), MODELS)
    ax.set_ylabel("GFLOP/s")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def flops_table(r: dict[str, Any]) -> pd.DataFrame:
    """Forward FLOPs per sample by layer, and the training totals counted two ways."""
    rows = []
    for model in MODELS:
        f = r["flops"][model]
        for layer, flops in f["forward_by_layer"].items():
            rows.append({"model": model, "layer": layer, "forward FLOP/sample": flops})
        rows.append(
            {
                "model": model,
                "layer": "training = 3 x forward",
                "forward FLOP/sample": f["training_per_sample"],
            }
        )
        rows.append(
            {
                "model": model,
                "layer": "torch.utils.flop_counter (matrix products of one step)",
                "forward FLOP/sample": f["flop_counter_per_sample"],
            }
        )
    return pd.DataFrame(rows).set_index(["model", "layer"])


def variants_table(r: dict[str, Any]) -> pd.DataFrame:
    """Every variant's samples/s, share of the GEMM rate and speed relative to its model's default."""
    cols = ["name", "batch_size", "samples_per_second", "gflops", "share_of_gemm", "relative_to_default"]
    return pd.DataFrame(r["variants"]).reindex(columns=cols).set_index("name")


VARIANTS_FORMAT = {
    "samples_per_second": "{:,.0f}",
    "gflops": "{:.1f}",
    "share_of_gemm": "{:.0%}",
    "relative_to_default": "{:.2f}",
}


def batch_plot(r: dict[str, Any]) -> plt.Figure:
    """Model-only samples/s and share of the GEMM rate against the batch size, per model."""
    rows = [v for v in r["variants"] if v["name"].startswith(("teacher, batch", "student, batch"))]
    for model in MODELS:
        only = r["models"][model]["model_only"]
        rows.append({**only, "model": model})
    frame = pd.DataFrame(rows).sort_values("batch_size")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for model, part in frame.groupby("model"):
        axes[0].plot(part["batch_size"], part["samples_per_second"], "o-", label=model)
        axes[1].plot(part["batch_size"], part["share_of_gemm"], "o-", label=model)
    for ax, label in zip(axes, ("model-only samples/s", "share of the GEMM rate"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.axvline(r["config"]["batch_size"], color="k", lw=0.5, ls=":")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def profile_tables(r: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Per model: the top operators by self time (share, ms and calls per step)."""
    return {
        model: pd.DataFrame(r["profile"][model]["top_ops"]).set_index("op")
        for model in MODELS
        if model in r.get("profile", {})
    }


def profile_plot(r: dict[str, Any]) -> plt.Figure:
    """Where a step's time goes: phase (forward, backward, optimizer) x kind of operator, per model."""
    split = pd.DataFrame({m: r["profile"][m]["split"] for m in MODELS if m in r.get("profile", {})}).fillna(
        0.0
    )
    fig, ax = plt.subplots(figsize=(9, 3.6))
    split.T.plot.barh(stacked=True, ax=ax, colormap="tab20")
    ax.set_xlabel("share of the profiled step's operator time")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def compile_table(r: dict[str, Any]) -> pd.DataFrame | None:
    """torch.compile against eager (only when the roofline benchmark ran with ``--compile``)."""
    c = r.get("compile")
    if not c:
        return None
    if "error" in c:
        return pd.DataFrame({"torch.compile": {"could not run": c["error"]}})
    rows = {}
    for model, f in c.items():
        rows[model] = {
            "compile seconds": f["compile_seconds"],
            "compiled samples/s": f["compiled"]["samples_per_second"],
            "eager samples/s": f["eager"]["samples_per_second"],
            "compiled / eager": f["compiled"]["samples_per_second"] / f["eager"]["samples_per_second"],
            "deterministic (two compiled runs equal)": f["deterministic"],
            "max |weight diff| vs eager": f["max_abs_weight_diff_vs_eager"],
        }
    return pd.DataFrame(rows).T


def disagreement_markdown(r: dict[str, Any], peer: dict[str, Any] | None) -> str:
    """The peer-shaped teacher at batches 2048 and 4096 in this run, beside the peer benchmark's figure."""
    rows = [v for v in r["variants"] if v["model"] == "teacher_peer"]
    if not rows:
        return "_The roofline run has no peer-shaped teacher figures._"
    g, threads = r["gemm"], r["config"]["threads"]
    lines = [
        f"This run (GEMM rate {g['gflops']:.0f} GFLOP/s, probes {g['gflops_min']:.0f}-{g['gflops_max']:.0f}), "
        f"teacher with experts {r['config']['peer_expert_dims']}, model-only, {threads} "
        f"thread{'s' if threads != 1 else ''}:",
        "",
    ]
    for v in rows:
        lines.append(
            f"- batch {v['batch_size']}: {v['samples_per_second']:,.0f} samples/s = {v['gflops']:.1f} GFLOP/s = "
            f"{v['share_of_gemm']:.0%} of the same-run GEMM rate"
        )
    if peer is not None:
        t = peer["teacher"]["this_project"]
        lines.append(
            f"- the peer benchmark's model-only figure (batch {peer['config']['batch_size']}, its own run): "
            f"{t['model_only_samples_per_second']:,.0f} samples/s"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- peer comparison


def peer_config_text(t: dict[str, Any]) -> str:
    """What both libraries trained in the peer comparison."""
    cfg = t["config"]
    teacher = {k: cfg["teacher"][k] for k in ("n_experts", "expert_dims", "tower_dims", "emb_dim", "lr")}
    student = {k: cfg["student"][k] for k in ("tower_dims", "out_dim", "emb_dim", "lr")}
    return (
        f"{cfg['preset']} preset: {cfg['train_impressions']:,} training impressions, batch {cfg['batch_size']}, "
        f"{cfg['epochs']} epoch(s), {cfg['threads']} threads, features {cfg['n_features']}\n"
        f"teacher: {teacher}\nstudent: {student}"
    )


def peer_table(t: dict[str, Any]) -> pd.DataFrame:
    """Loop and model-only samples/s and test AUCs of each library, per model."""
    rows = []
    for model in MODELS:
        for side, label in (("this_project", "this project"), ("torch_rechub", "torch-rechub")):
            r = t[model][side]
            rows.append(
                {
                    "model": model,
                    "library": label,
                    "loop samples/s": r["samples_per_second"],
                    "model-only samples/s": r["model_only_samples_per_second"],
                    "loop / model-only": r["loop_share_of_model_only"],
                    "test AUC click": r["auc_click"],
                    "test AUC click+long read": r["auc_ctcvr"],
                }
            )
    return pd.DataFrame(rows).set_index(["model", "library"])


PEER_FORMAT = {
    "loop samples/s": "{:,.0f}",
    "model-only samples/s": "{:,.0f}",
    "loop / model-only": "{:.0%}",
    "test AUC click": "{:.4f}",
    "test AUC click+long read": "{:.4f}",
}


def bound_table(t: dict[str, Any], results: dict[str, Any]) -> pd.DataFrame:
    """The measured ratio, its bound (a figure of results.json) and each side's loop share."""
    bound = {
        r["id"].split("_")[0]: r["value"] for r in results["figures"] if r["id"].endswith("_speedup_bound")
    }
    return pd.DataFrame(
        {
            model: {
                "measured ratio": t[model]["speedup"],
                "bound: our model-only / their loop": bound.get(model),
                "their loop / their model-only": t[model]["torch_rechub"]["loop_share_of_model_only"],
                "our loop / our model-only": t[model]["this_project"]["loop_share_of_model_only"],
            }
            for model in MODELS
        }
    ).round(3)


def dssm_text(t: dict[str, Any]) -> str | None:
    """torch-rechub's DSSM score range on the test days against the mean soft label."""
    peer = t["student"]["torch_rechub"]
    if "test_score_range" not in peer:
        return None
    lo, hi = peer["test_score_range"]
    return (
        f"torch-rechub DSSM test scores in [{lo:.4f}, {hi:.4f}]; mean soft label on the training days "
        f"{peer['train_soft_label_mean']:.4f}"
    )


def data_path_table(t: dict[str, Any]) -> pd.DataFrame:
    """Each library's data path alone and its share of its teacher loop."""
    dp = t["data_path"]
    return pd.Series(
        {
            "this project: samples/s": dp["this_project_samples_per_second"],
            "this project: share of its teacher loop": dp["this_project_share_of_teacher_loop"],
            "torch-rechub (numpy input): samples/s": dp["torch_rechub_samples_per_second"],
            "torch-rechub (numpy input): share of its teacher loop": dp["torch_rechub_share_of_teacher_loop"],
            "torch-rechub (DataFrame input): samples/s": dp["torch_rechub_dataframe_samples_per_second"],
            "torch-rechub (DataFrame input): teacher loop samples/s": dp.get(
                "torch_rechub_dataframe_teacher_loop_samples_per_second"
            ),
        }
    ).to_frame("data path alone")


def peer_plot(t: dict[str, Any]) -> plt.Figure:
    """Loop and model-only samples/s of both libraries, per model (log scale)."""
    peer = peer_table(t)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, model in zip(axes, MODELS, strict=True):
        part = peer.loc[model]
        x = range(len(part))
        ax.bar([i - 0.2 for i in x], part["loop samples/s"], width=0.4, label="training loop")
        ax.bar([i + 0.2 for i in x], part["model-only samples/s"], width=0.4, label="model-only limit")
        ax.set_xticks(list(x), part.index)
        ax.set_yscale("log")
        ax.set_ylabel("training samples per second")
        ax.set_title(f"{model}: this project / torch-rechub = {t[model]['speedup']:.1f}x")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ scale


def scale_tables(s: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float | None]]:
    """Seconds and peak memory per stage at each size of the sharded path, and the log-log slope of time
    (total and per stage) over the sizes."""

    def per_stage(key: str) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"impressions": p["impressions"], **{x["stage"]: x[key] for x in p["stages"]}}
                for p in s["points"]
            ]
        ).set_index("impressions")

    g = s.get("growth", {})
    raw = {"total": g.get("time_loglog_slope"), **g.get("stage_loglog_slope", {})}
    slopes = {k: None if v is None else round(v, 2) for k, v in raw.items()}
    return per_stage("seconds"), per_stage("peak_rss_gib"), slopes


def scale_plot(s: dict[str, Any]) -> plt.Figure:
    """Time per stage (sharded), time per impression and peak memory against size, both data paths."""
    stages, _, slopes = scale_tables(s)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    labels = [f"{n / 1e6:.0f}M" for n in stages.index]
    stages.set_axis(labels).plot.bar(stacked=True, ax=axes[0], rot=0)
    axes[0].set(ylabel="seconds", title="time per stage (sharded)")
    axes[0].legend(fontsize=7)
    cap = s["targets"]["max_peak_rss_gib"]
    for key, label, style in (("points", "sharded", "o-"), ("memory_points", "in memory", "s--")):
        points = sorted(s.get(key, []), key=lambda p: p["impressions"])
        if not points:
            continue
        millions = [p["impressions"] / 1e6 for p in points]
        axes[1].plot(millions, [p["microseconds_per_impression"] for p in points], style, label=label)
        axes[2].plot(millions, [p["peak_rss_gib"] for p in points], style, label=label)
    axes[1].set_xscale("log")
    axes[1].set(xlabel="impressions (millions)", ylabel="microseconds per impression")
    axes[1].set_title(
        f"time per impression (log-log slope of time {slopes.get('total') or float('nan'):.2f})"
    )
    axes[1].legend(fontsize=8)
    axes[2].axhline(cap, color="r", ls="--", lw=1, label=f"target: under {cap:.0f} GiB")
    axes[2].set_xscale("log")
    axes[2].set_ylim(0, cap * 1.1)
    axes[2].set(xlabel="impressions (millions)", ylabel="GiB", title="peak memory (process tree)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------------- retrieval


def retrieval_text(r: dict[str, Any]) -> str:
    return f"{r['n_items']:,} items, {r['n_queries']:,} queries, dim {r['dim']}; corpus: {r['corpus']}"


def retrieval_table(r: dict[str, Any]) -> pd.DataFrame:
    """Every approximate setting with its speed-up over exact search."""
    ann = pd.DataFrame(r["approximate"])
    return ann.assign(speedup_vs_exact=ann["queries_per_second"] / r["exact"]["queries_per_second"])


def retrieval_plot(r: dict[str, Any]) -> plt.Figure:
    """Queries per second against recall@100, per index kind, with exact search and the recall target."""
    ann = pd.DataFrame(r["approximate"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for kind, part in ann.groupby("kind"):
        ax.plot(part["recall_at_100"], part["queries_per_second"], "o-", label=kind)
    ax.scatter([1.0], [r["exact"]["queries_per_second"]], color="k", marker="s", label="exact")
    ax.axvline(r["targets"]["min_recall_at_100"], color="r", ls="--", lw=1, label="target recall@100")
    ax.set_yscale("log")
    ax.set(xlabel="recall@100 against exact", ylabel="queries per second")
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------------------- study, simulator


def study_text(s: dict[str, Any]) -> str:
    c = s["config"]
    return (
        f"{c['preset']} preset, students {c['students']}, seeds {c['seeds']}, sweeps {c['sweeps']}, "
        f"{c['threads']} threads; total {s['total_seconds']:.0f} s (target {s['target_seconds']:.0f} s), "
        f"main comparison {s['main_comparison_seconds']:.0f} s, sweeps {s['sweeps_seconds']:.0f} s"
    )


def study_plot(s: dict[str, Any]) -> plt.Figure:
    """Seconds per DVC stage of ``dvc repro`` from nothing."""
    per_stage = pd.Series(s["stages"], name="seconds")
    fig, ax = plt.subplots(figsize=(9, 3.8))
    per_stage.plot.barh(ax=ax)
    ax.axvline(0, color="k", lw=0.5)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"dvc repro from nothing: {s['total_seconds']:.0f} s in all")
    fig.tight_layout()
    return fig


def simulator_table(s: dict[str, Any]) -> pd.DataFrame:
    keys = ("impressions", "seconds", "impressions_per_second", "peak_rss_mib")
    return pd.Series({k: s[k] for k in keys}).to_frame("value")
