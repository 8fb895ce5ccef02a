"""Tables and sentences of the report, generated from the metrics file (never typed by hand).

Strings that come from the user (a data folder's name in ``source``, sweep names and values, ids) are
escaped before they enter Markdown (:func:`md_text`, :func:`md_code`): nbconvert passes raw HTML in Markdown
through to the rendered report, so ``<script>`` in a folder name would otherwise run in the reader's
browser. Tables are DataFrames, which pandas renders with HTML escaping on.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl import vocab as V

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def md_text(text: Any) -> str:
    """``text`` as literal Markdown: HTML escaped (``<`` -> ``&lt;``) and Markdown's own syntax backslashed."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def md_code(text: Any) -> str:
    """``text`` as inline code in Markdown, HTML-escaped (a backtick span would show entities verbatim)."""
    return f"<code>{html.escape(str(text), quote=True)}</code>"


def sweep_heading(name: str, spec: Any, ran: bool = True) -> str:
    """The report's Markdown heading of one sweep (a :class:`dmtl.config.SweepSpec` or its mapping), user
    strings escaped."""
    if not ran:
        return f"### {md_code(name)} — not run (no sweeps/{md_text(name)}/results.csv)"
    param, values = (
        (spec["param"], spec["values"]) if isinstance(spec, Mapping) else (spec.param, spec.values)
    )
    return f"### {md_code(name)}: {md_code(param)} in {', '.join(md_code(v) for v in values)}"


def _fmt(d: Mapping[str, Any] | None, digits: int = 4) -> str:
    if d is None or d.get("mean") is None:
        return "—"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    if lo is None or hi is None:
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def split_table(data_summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per split (train, val, test) of ``metrics/data.json``: counts as integers, rates as fractions.

    Built row by row, a table mixing counts and rates would turn every count into a float (19429.0).
    """
    table = pd.DataFrame({k: data_summary[k] for k in ("train", "val", "test")}).T
    counts = [c for c in ("impressions", "users", "items") if c in table]
    return table.astype({c: "int64" for c in counts})


def calibration_table(calibration: Mapping[str, Any], digits: int = 4) -> pd.DataFrame:
    """The simulator's calibration numbers (scalars only), one per row: counts as integers, the rest rounded.

    One column holds both counts and rates, so each value is formatted on its own (a float column would
    print 33,700 impressions as 33700.0000).
    """

    def fmt(v: Any) -> str:
        if isinstance(v, bool | np.bool_):
            return str(bool(v))
        if isinstance(v, int | np.integer):
            return f"{int(v):,}"
        return f"{float(v):.{digits}f}"

    values = {k: fmt(v) for k, v in calibration.items() if not isinstance(v, dict | list)}
    return pd.Series(values, name="value", dtype=object).to_frame()


def report_metrics(summary: Mapping[str, Any]) -> list[str]:
    """The metrics the results table shows, in vocabulary order (index checks are in the evaluation notebook)."""
    shown = [m.name for m in V.METRICS if m.family != "index"]
    present = {m for d in summary["models"].values() for m in d}
    return [m for m in V.reported(shown, summary["meta"]["ks"]) if m in present]


def results_numbers(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Long table (model, metric, mean, ci_low, ci_high, n) straight from the metrics file."""
    rows = []
    for model in V.ordered_models(summary["models"]):
        for metric in report_metrics(summary):
            d = summary["models"][model].get(metric)
            if d is not None:
                rows.append(
                    {
                        "model": model,
                        "metric": metric,
                        **{k: d.get(k) for k in ("mean", "ci_low", "ci_high", "n")},
                    }
                )
    return pd.DataFrame(rows)


def results_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Metric x model table of 'mean [low, high]' strings (the report's main table)."""
    nums = results_numbers(summary)
    nums["cell"] = [_fmt(r) for r in nums.to_dict("records")]
    table = nums.pivot(index="metric", columns="model", values="cell")
    metrics = [m for m in report_metrics(summary) if m in table.index]
    models = V.ordered_models(table.columns)
    return table.loc[metrics, models].fillna("—")


def teacher_table(teacher_summary: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    rows = {}
    for variant, splits in teacher_summary.items():
        if split in splits:
            rows[variant] = {m: _fmt(d) for m, d in splits[split].items()}
    return pd.DataFrame(rows).T


def verdict_table(summary: Mapping[str, Any], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Paired difference reference - competitor with interval and verdict, for each headline metric."""
    metrics = metrics or V.headline(summary["meta"]["ks"])
    rows = []
    ref = summary["meta"].get("reference", "dmtl")
    for key, per_metric in summary["comparisons"].items():
        other = key.split("_vs_", 1)[1]
        for metric in metrics:
            d = per_metric.get(metric)
            if d is None:
                continue
            rows.append(
                {
                    "comparison": f"{ref} − {other}",
                    "metric": metric,
                    "difference": _fmt(d),
                    "verdict": d.get("verdict", ""),
                }
            )
    return pd.DataFrame(rows)


def _claim(summary: Mapping[str, Any], other: str, metric: str) -> tuple[str, Mapping[str, Any] | None]:
    d = summary["comparisons"].get(f"dmtl_vs_{other}", {}).get(metric)
    return (d.get("verdict", "not measured") if d else "not measured"), d


def verdict_text(summary: Mapping[str, Any]) -> str:
    """The three claims of the study, each with the verdict its interval supports."""
    k = V.main_k(summary["meta"]["ks"])
    lines = []
    v1, d1 = _claim(summary, "ctr", "auc_ctcvr")
    v1b, d1b = _claim(summary, "ctr", f"recall_long@{k}")
    lines.append(
        f"1. **DMTL beats `ctr` on duration.** auc_ctcvr: dmtl − ctr = {_fmt(d1)} → *{v1}*; "
        f"recall_long@{k}: {_fmt(d1b)} → *{v1b}*."
    )
    v2, d2 = _claim(summary, "ctr", f"bait_share@{k}")
    lines.append(
        f"2. **DMTL retrieves fewer clickbait items than `ctr`.** bait_share@{k}: dmtl − ctr = {_fmt(d2)} "
        f"(lower is better) → *{v2}*."
    )
    models = summary["models"]
    if "teacher" in models and "ctr" in models and "dmtl" in models:
        t, c, s = (models[m]["auc_ctcvr"]["mean"] for m in ("teacher", "ctr", "dmtl"))
        share = (s - c) / (t - c) if t != c else float("nan")
        lines.append(
            f"3. **The student recovers most of the teacher's gain.** auc_ctcvr: teacher {t:.4f}, ctr {c:.4f}, "
            f"dmtl {s:.4f}: the student recovers {share:.0%} of the teacher's gain over `ctr` "
            f"(the teacher sees user × item interactions and position that no two-tower model can)."
        )
    others = [k_.split("_vs_", 1)[1] for k_ in summary["comparisons"]]
    for metric in ("auc_ctcvr", f"recall_long@{k}", f"bait_share@{k}"):
        wins = [o for o in others if _claim(summary, o, metric)[0].startswith("dmtl better")]
        losses = [o for o in others if _claim(summary, o, metric)[0].startswith("dmtl worse")]
        lines.append(
            f"- `{metric}`: dmtl is better than {', '.join(f'`{o}`' for o in wins) or 'none'}; worse than "
            f"{', '.join(f'`{o}`' for o in losses) or 'none'}; no significant difference with the rest."
        )
    return "\n".join(lines)


def setup_text(summary: Mapping[str, Any], data_summary: Mapping[str, Any]) -> str:
    meta = summary["meta"]
    return (
        f"**Setup.** Source: {md_code(meta['source'])}; seeds {meta['seeds']}; tau = {meta['tau_seconds']:.1f} s; "
        f"{data_summary['train']['impressions']:,} training, {data_summary['val']['impressions']:,} validation and "
        f"{meta['n_test_impressions']:,} test impressions; retrieval over {meta['n_items']:,} items for "
        f"{meta['n_retrieval_users']:,} test users with a click ({meta['n_retrieval_users_with_long_read']:,} with a "
        f"long read). Clickbait: {md_text(meta['bait_rule'])} ({meta['bait_items']:,} items)."
    )


def teacher_agreement(sample: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of each student's score with the teacher's p_ctcvr on test impressions."""
    rows = {}
    for model, g in sample.groupby("model", sort=False):
        rows[model] = g["student_score"].rank().corr(g["teacher_p_ctcvr"].rank())
    return pd.Series(rows, name="spearman(student score, teacher p_ctcvr)").to_frame()


def read_sweep(root: str | Path, name: str) -> pd.DataFrame | None:
    path = Path(root) / "sweeps" / name / "results.csv"
    return pd.read_csv(path) if path.exists() else None


def sweep_metrics(results: pd.DataFrame) -> list[str]:
    """The headline metrics a sweep's results hold, at the headline cut-off of their K."""
    names = set(results["metric"])
    ks = sorted({int(m.split("@")[1]) for m in names if "@" in m})
    return [m for m in V.headline(ks) if m in names] if ks else [m for m in V.HEADLINE if m in names]


def sweep_table(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """(value, model) x metric table of 'mean [low, high]' cells of one sweep."""
    part = results[results["metric"].isin(metrics or sweep_metrics(results))].copy()
    part["cell"] = [_fmt(r) for r in part.to_dict("records")]
    return part.pivot_table(
        index=["value", "model"], columns="metric", values="cell", aggfunc="first", sort=False
    )


def limitations_text(summary: Mapping[str, Any]) -> str:
    meta = summary["meta"]
    n = len(meta["seeds"])
    simulated = meta["source"] == "simulated"
    items = [
        f"- **Seeds.** {n} seeds: intervals use Student's t with {n - 1} degrees of freedom and are wide; "
        "seeds vary model initialisation and batch order, not the data (one simulated world / one log).",
        "- **Offline only.** The paper's main evidence is an online A/B test of reading duration; offline "
        "retrieval metrics on logged data inherit the logging policy's exposure bias (items never shown cannot be "
        "counted as positives).",
        "- **Unknown details.** The paper's tables, data size, hyper-parameters and exact distillation loss are not "
        "public; the defaults here are this study's choices (docs/protocol.md §2), and the sweeps show how much they matter.",
    ]
    if simulated:
        items.append(
            "- **Simulated data.** The default world is a simulator built to contain the paper's mechanism "
            "(clickbait clicked but not read); that DMTL can win there shows the method works when the mechanism "
            "exists, not how large the effect is on a real feed. Run the study on KuaiRand or your own logs for that."
        )
    else:
        items.append(
            "- **Real-data clickbait.** There is no ground truth: `bait_share` uses the documented rule "
            f"({md_text(meta['bait_rule'])}), a proxy."
        )
    return "\n".join(items)
