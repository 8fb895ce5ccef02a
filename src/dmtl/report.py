"""Tables and sentences of the report, generated from the metrics file (never typed by hand).

Strings that come from the user (a data folder's name in ``source``, sweep names and values, ids) are
escaped before they enter Markdown (:func:`md_text`, :func:`md_code`): nbconvert passes raw HTML in Markdown
through to the rendered report, so ``<script>`` in a folder name would otherwise run in the reader's
browser. Tables are DataFrames, which pandas renders with HTML escaping on.
"""

from __future__ import annotations

import html
import json
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
    """Paired difference reference - competitor with interval, Holm-corrected p and verdict, for each
    headline metric (by default) and every other model."""
    metrics = metrics or primary_metrics(summary)
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
                    "p (Holm)": _p(d),
                    "verdict": d.get("verdict", ""),
                }
            )
    return pd.DataFrame(rows)


def primary_metrics(summary: Mapping[str, Any]) -> list[str]:
    """The headline metrics of the run: the primary Holm family of its verdicts (docs/protocol.md section 4)."""
    k = V.main_k(summary["meta"]["ks"])
    names = [*V.headline(summary["meta"]["ks"])]
    if summary["meta"].get("simulated"):
        names.append(f"oracle_p_long@{k}")
    return names


def _distilled(model: str) -> bool:
    return model in V.STUDENT_NAMES and V.student(model).needs_teacher


def strongest_competitor(summary: Mapping[str, Any], metric: str) -> str | None:
    """The best non-distilled model on ``metric`` (its mean, in the metric's direction): students trained on
    labels and popularity lists; the teacher is the distillation source, not a competitor of retrieval."""
    ref = summary["reference"]
    candidates = [
        m
        for m, metrics in summary["models"].items()
        if m not in (ref, V.TEACHER)
        and not _distilled(m)
        and (metrics.get(metric) or {}).get("mean") is not None
    ]
    if not candidates:
        return None
    sign = 1.0 if V.higher_is_better(metric) else -1.0
    return max(candidates, key=lambda m: sign * summary["models"][m][metric]["mean"])


def _comparison(summary: Mapping[str, Any], other: str, metric: str) -> Mapping[str, Any] | None:
    return summary["comparisons"].get(f"{summary['reference']}_vs_{other}", {}).get(metric)


def _p(d: Mapping[str, Any]) -> str:
    p = d.get("p_holm")
    return "—" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def headline_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per headline metric: the reference, the strongest non-distilled model, their difference with its
    bootstrap interval, the Holm-corrected p-value and the verdict."""
    ref, rows = summary["reference"], []
    for metric in primary_metrics(summary):
        other = strongest_competitor(summary, metric)
        d = _comparison(summary, other, metric) if other else None
        if d is None:
            continue
        rows.append(
            {
                "metric": metric,
                ref: _fmt(summary["models"][ref].get(metric)),
                "strongest non-distilled": f"{other}: {_fmt(summary['models'][other][metric])}",
                f"{ref} − it": _fmt(d),
                "p (Holm)": _p(d),
                "verdict": d.get("verdict", ""),
            }
        )
    return pd.DataFrame(rows)


def verdict_text(summary: Mapping[str, Any]) -> str:
    """The study's answer in words, each sentence read from a verdict of the metrics file.

    The headline compares the reference (``dmtl``) with the *strongest* non-distilled model of each headline
    metric, then says where it wins and where it loses against every model, then how much the students gain
    over a non-personalised popularity list.
    """
    ref = summary["reference"]
    lines = []
    for i, metric in enumerate(primary_metrics(summary), 1):
        other = strongest_competitor(summary, metric)
        d = _comparison(summary, other, metric) if other else None
        if d is None:
            continue
        direction = "higher" if V.higher_is_better(metric) else "lower"
        lines.append(
            f"{i}. **`{metric}`** ({direction} is better): the strongest non-distilled model is `{other}`; "
            f"{ref} − {other} = {_fmt(d)} (Holm p {_p(d)}) → *{d.get('verdict', '')}*."
        )
    others = [k.split("_vs_", 1)[1] for k in summary["comparisons"]]
    for metric in primary_metrics(summary):
        by: dict[str, list[str]] = {}
        for o in others:
            d = _comparison(summary, o, metric)
            if d is not None:
                by.setdefault(d.get("decision", "undetermined"), []).append(f"`{o}`")
        parts = [f"{label} {', '.join(by[code])}" for code, label in _DECISION_WORDS if by.get(code)]
        lines.append(f"- `{metric}`: {ref} is " + "; ".join(parts) + ".")
    lift = popularity_lift_text(summary)
    if lift:
        lines.append(lift)
    return "\n".join(lines)


_DECISION_WORDS = (
    ("better", "better than"),
    ("worse", "worse than"),
    ("equivalent", "equivalent (within the margin) to"),
    ("no_difference", "identical to"),
    ("not_enough_evidence", "not distinguishable, on this evidence, from"),
    ("undetermined", "undetermined against"),
)


def popularity_lift_text(summary: Mapping[str, Any]) -> str:
    """Each student's recall of long reads over that of the best popularity list (the same top K for all)."""
    metric = f"recall_long@{V.main_k(summary['meta']['ks'])}"
    models = summary["models"]
    pops = [b for b in V.BASELINE_NAMES if (models.get(b, {}).get(metric) or {}).get("mean") is not None]
    if not pops:
        return ""
    best = max(pops, key=lambda b: models[b][metric]["mean"])
    base = models[best][metric]["mean"]
    lifts = [
        f"`{m}` {models[m][metric]['mean'] / base:.2f}x" if base else f"`{m}` —"
        for m in V.ordered_models(models)
        if m in V.STUDENT_NAMES and metric in models[m]
    ]
    return (
        f"- **Lift over the best popularity list** (`{best}`, {metric} = {base:.3f}): "
        + ", ".join(lifts)
        + "."
    )


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


def stopping_table(root: str | Path) -> pd.DataFrame:
    """Every training run's epochs and whether early stopping ended it (``train.max_epochs`` did not)."""
    metrics = Path(root) / "metrics"
    rows = []
    teacher = metrics / "teacher_runs.parquet"
    if teacher.exists():
        runs = pd.read_parquet(teacher)
        runs = runs[runs["split"] == "test"]
        for r in runs.itertuples():
            rows.append(
                {
                    "model": f"teacher ({r.variant})",
                    "seed": r.seed,
                    "epochs": r.epochs,
                    "stopped early": bool(getattr(r, "stopped_early", False)),
                }
            )
    for path in sorted((metrics / "students").glob("*.json")):
        summary = json.loads(path.read_text())
        for r in summary["runs"]:
            rows.append(
                {
                    "model": summary["student"],
                    "seed": r["seed"],
                    "epochs": r["epochs"],
                    "stopped early": bool(r.get("stopped_early", False)),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {m: i for i, m in enumerate(V.ordered_models(dict.fromkeys(table["model"])))}
    return table.sort_values(
        ["model", "seed"], key=lambda c: c.map(order) if c.name == "model" else c
    ).reset_index(drop=True)


def limitations_text(summary: Mapping[str, Any]) -> str:
    """What the study cannot say, read from its own settings (docs/protocol.md, limitations)."""
    meta = summary["meta"]
    method = summary.get("method", {})
    n = len(meta["seeds"])
    items = [
        f"- **Seeds and users.** {n} seeds, and the test users resampled {method.get('n_boot', '?')} times: "
        "intervals cover the model's randomness and which users happened to be tested, not another world or "
        "another log (the full run repeats the study on three simulated worlds).",
        "- **Offline only.** The paper's main evidence is an online A/B test of reading duration; offline "
        "retrieval metrics on logged data inherit the logging policy's exposure bias (items a user was never shown "
        "cannot be counted as positives).",
        "- **Unknown details.** The paper's tables, data size, hyper-parameters and exact distillation loss are not "
        "public; the defaults here are this study's choices (docs/protocol.md §2), and the sweeps show how much "
        "they matter.",
    ]
    if meta.get("simulated"):
        items.append(
            "- **What the simulator builds in.** Clickbait is an item latent that only durations reveal, so a "
            "click-trained model is bound to retrieve it; the click and reading logits are sums of user, item and "
            "topic-match terms, which two towers can represent; the teacher's only privileged inputs are the logged "
            "position (a bias, not a feature, by default) and, when the privileged-information knob is on, the "
            "user's clicks on the item's publisher. A win or a loss here says what happens when these mechanisms "
            "hold, not how large the effect is on a real feed; run the study on KuaiRand or your own logs for that."
        )
    else:
        items.append(
            "- **Real-data clickbait.** There is no ground truth: `bait_share` uses the documented rule "
            f"({md_text(meta['bait_rule'])}), a proxy."
        )
    return "\n".join(items)
