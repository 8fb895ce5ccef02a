"""The sweeps in the report: one table per sweep, and the regime map of where distillation helps.

Every cell is read from a sweep's ``results.csv`` and ``comparisons.csv`` (written by :mod:`dmtl.sweep` from each
grid point's own evaluation: bootstrap intervals, Holm-corrected verdicts); nothing is computed here beyond
choosing, at each grid point, the strongest non-distilled model to compare the reference with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dmtl import vocab as V
from dmtl.report import _fmt, md_code, md_text, strongest_competitor


def sweep_heading(name: str, spec: Any, ran: bool = True) -> str:
    """The report's Markdown heading of one sweep (a :class:`dmtl.config.SweepSpec` or its mapping), user
    strings escaped."""
    if not ran:
        return f"### {md_code(name)} — not run (no sweeps/{md_text(name)}/results.csv)"
    param, values = (
        (spec["param"], spec["values"]) if isinstance(spec, Mapping) else (spec.param, spec.values)
    )
    return f"### {md_code(name)}: {md_code(param)} in {', '.join(md_code(v) for v in values)}"


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
