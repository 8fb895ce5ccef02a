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


def read_sweep(root: str | Path, name: str) -> pd.DataFrame | None:
    path = Path(root) / "sweeps" / name / "results.csv"
    return pd.read_csv(path) if path.exists() else None


def sweep_metrics(results: pd.DataFrame) -> list[str]:
    """The headline metrics a sweep's results hold, at the headline cut-off of their K."""
    names = set(results["metric"])
    ks = sorted({int(m.split("@")[1]) for m in names if "@" in m})
    return [m for m in V.headline(ks) if m in names] if ks else [m for m in V.HEADLINE if m in names]


EVERY_VALUE = "(every value)"


def sweep_table(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """(value, model) x metric table of 'mean [low, high]' cells of one sweep.

    A model whose cells are the same at every value (a student the swept parameter does not touch, reused
    from the main run; the teacher across a student's parameter) is shown once, as ``(every value)``.
    """
    part = results[results["metric"].isin(metrics or sweep_metrics(results))].copy()
    part["cell"] = [_fmt(r) for r in part.to_dict("records")]
    table = part.pivot_table(
        index=["value", "model"], columns="metric", values="cell", aggfunc="first", sort=False
    )
    rows = []
    for model in V.ordered_models(dict.fromkeys(part["model"])):
        block = table.xs(model, level="model", drop_level=False)
        if len(block) > 1 and (block.nunique(dropna=False) <= 1).all():
            block = block.iloc[:1].rename(index={block.index[0][0]: EVERY_VALUE}, level="value")
        rows.append(block)
    return pd.concat(rows).fillna("—") if rows else table


def regime_map(root: str | Path, grid: Mapping[str, Any], reference: str) -> pd.DataFrame:
    """The map of where distillation helps: for each regime sweep, value and headline retrieval metric, the
    reference's difference with the strongest non-distilled model at that point, its interval and verdict."""
    rows = []
    for name, spec in grid.items():
        if not spec.regime:
            continue
        folder = Path(root) / "sweeps" / name
        if not (folder / "results.csv").exists() or not (folder / "comparisons.csv").exists():
            continue
        results, comps = pd.read_csv(folder / "results.csv"), pd.read_csv(folder / "comparisons.csv")
        for value in dict.fromkeys(results["value"].astype(str)):
            at = results[results["value"].astype(str) == value]
            summary = {
                "reference": reference,
                "models": {
                    m: dict(zip(g["metric"], g[["mean"]].to_dict("records"), strict=True))
                    for m, g in at.groupby("model")
                },
            }
            for metric in regime_metrics(results):
                other = strongest_competitor(summary, metric)
                hit = comps[
                    (comps["value"].astype(str) == value)
                    & (comps["competitor"] == other)
                    & (comps["metric"] == metric)
                ]
                if other is None or hit.empty:
                    continue
                row = hit.iloc[0]
                rows.append(
                    {
                        "sweep": name,
                        "param": spec.param,
                        "value": value,
                        "metric": metric,
                        "strongest": other,
                        **{k: row[k] for k in ("mean", "ci_low", "ci_high", "p_holm", "decision")},
                    }
                )
    return pd.DataFrame(rows)


def regime_metrics(results: pd.DataFrame) -> list[str]:
    """The retrieval metrics the regime map shows: long reads retrieved, and the oracle's P(long read)."""
    names = set(results["metric"])
    ks = sorted({int(m.split("@")[1]) for m in names if "@" in m})
    if not ks:
        return []
    k = V.main_k(ks)
    return [m for m in (f"recall_long@{k}", f"oracle_p_long@{k}") if m in names]


def regime_findings(table: pd.DataFrame, reference: str) -> str:
    """One sentence per regime knob and metric: the values where the reference beats the strongest
    non-distilled model, where it loses, and where the evidence does not separate them."""
    if table.empty:
        return "_No regime sweep has run._"
    lines = []
    for (sweep, metric), part in table.groupby(["sweep", "metric"], sort=False):

        def at(code: str, part: pd.DataFrame = part) -> str:
            hits = part[part["decision"] == code]
            return (
                ", ".join(
                    f"{md_code(r.value)} ({_fmt(r._asdict(), 3)} vs {md_code(r.strongest)})"
                    for r in hits.itertuples()
                )
                or "none"
            )

        param = md_code(part["param"].iloc[0])
        lines.append(
            f"- **{md_text(sweep)}** ({param}), `{metric}`: {reference} beats the strongest non-distilled model at "
            f"{at('better')}; loses at {at('worse')}; equivalent at {at('equivalent')}; not separated at "
            f"{at('not_enough_evidence')}."
        )
    return "\n".join(lines)


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
