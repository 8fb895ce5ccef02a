"""Write the README's results sections from the pipeline's output files (numbers are never typed by hand).

``python -m dmtl.readme`` rewrites the text between ``<!-- results:NAME:start -->`` and
``<!-- results:NAME:end -->`` markers; ``python -m dmtl.readme --check`` fails when the README is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmtl import vocab as V
from dmtl.io import atomic_path, read_json
from dmtl.report import _fmt, primary_metrics, verdict_text

KEY_METRICS = (
    "auc_ctcvr",
    "auc_click",
    "auc_cvr",
    "recall_long",
    "recall_click",
    "bait_share",
    "oracle_p_long",
    "oracle_read_time",
)
"""The README table's columns (at-K ones at the headline cut-off)."""


def results_markdown(summary: dict[str, Any], title: str) -> str:
    """The results table (mean [95% interval]), the verdicts against the strongest competitors, and the
    paired differences of the reference against every model with their Holm-corrected verdicts."""
    meta, ref = summary["meta"], summary["reference"]
    k = V.main_k(meta["ks"])
    wanted = [f"{m}@{k}" if V.metric(m).at_k else m for m in KEY_METRICS]
    metrics = [m for m in wanted if any(m in d for d in summary["models"].values())]
    primary = primary_metrics(summary)
    method = summary.get("method", {})
    lines = [
        f"{title}: source `{meta['source']}`, seeds {meta['seeds']}, tau = {meta['tau_seconds']:.1f} s "
        f"(long reads: {meta.get('long_read_rule', 'duration')} rule), {meta['n_test_impressions']:,} test "
        f"impressions, retrieval over {meta['n_items']:,} items for {meta['n_retrieval_users']:,} users (items "
        f"each was shown on the training days left out). Mean over seeds [95% percentile interval of a bootstrap "
        f"over test users and seeds, {method.get('n_boot', '?')} replicates]; `bait_share`: lower is better.",
        "",
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for model in V.ordered_models(summary["models"]):
        cells = [_fmt(summary["models"][model].get(m), 3) for m in metrics]
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    lines += ["", "In short (Holm-corrected over the headline comparisons):", "", verdict_text(summary)]
    lines += ["", f"Paired difference `{ref} − competitor` [95% interval] and verdict:", ""]
    lines += ["| competitor | " + " | ".join(primary) + " |", "|---|" + "---|" * len(primary)]
    for key, per_metric in summary["comparisons"].items():
        other = key.split("_vs_", 1)[1]
        cells = []
        for m in primary:
            d = per_metric.get(m)
            cells.append("—" if d is None else f"{_fmt(d, 3)}: {d.get('verdict', '')}")
        lines.append(f"| `{other}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worlds_markdown(gathered: dict[str, Any]) -> str:
    """The full run across simulated worlds: per headline metric, dmtl against the strongest non-distilled model
    in each world, and across the worlds."""
    meta = gathered["meta"]
    ref = meta["reference"]
    worlds = [str(w) for w in meta["worlds"]]
    lines = [
        f"Full run (`make full`): {len(worlds)} simulated worlds (`data.sim_seed` {', '.join(worlds)}), seeds "
        f"{meta['seeds']} each, bootstrap over test users and seeds within a world. Per world: `{ref}` minus the "
        "strongest non-distilled model of that world [95% interval], Holm-corrected verdict; across worlds: the "
        "mean difference with a t-interval over the worlds.",
        "",
        "| metric | " + " | ".join(f"world {w}" for w in worlds) + " | across worlds |",
        "|---|" + "---|" * (len(worlds) + 1),
    ]
    for metric, block in gathered["metrics"].items():
        cells = []
        for w in worlds:
            r = block["worlds"].get(w)
            cells.append("—" if r is None else f"vs `{r['strongest']}`: {_fmt(r, 3)}, {r['verdict']}")
        agree = ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in block["decisions"].items())
        lines.append(f"| `{metric}` | " + " | ".join(cells) + f" | {_fmt(block, 3)} ({agree}) |")
    return "\n".join(lines)


def benchmark_markdown(results: dict[str, Any]) -> str:
    rows = results.get("figures", [])
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "—"}.get(r.get("met"), str(r.get("met")))
        lines.append(f"| {r.get('name')} | {r.get('measured')} | {r.get('target')} | {met} |")
    return "\n".join(lines)


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "simulated": ("metrics/metrics.json", lambda s: results_markdown(s, "Default study (simulated feed)")),
    "kuairand": (
        "results/kuairand/metrics/metrics.json",
        lambda s: results_markdown(s, "KuaiRand-Pure slice"),
    ),
    "full": ("results/full/metrics/worlds.json", worlds_markdown),
    "benchmarks": ("benchmarks/results.json", benchmark_markdown),
}


def render(readme: str, root: Path = Path(".")) -> str:
    for name, (path, fn) in SECTIONS.items():
        start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
        if start not in readme:
            continue
        file = root / path
        body = fn(read_json(file)) if file.exists() else f"_Not run yet: `{path}` is missing._"
        body += f"\n\n<sub>Generated by `python -m dmtl.readme` from `{path}`.</sub>"
        readme = re.sub(
            re.escape(start) + r".*?" + re.escape(end),
            lambda _, s=start, b=body, e=end: f"{s}\n{b}\n{e}",
            readme,
            flags=re.S,
        )
    return readme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the README differs from the output files")
    ap.add_argument("--readme", default="README.md")
    args = ap.parse_args(argv)
    path = Path(args.readme)
    old = path.read_text()
    new = render(old, path.parent)
    if args.check:
        if new != old:
            print(f"{path} is stale: run `python -m dmtl.readme`", file=sys.stderr)
            return 1
        return 0
    if new != old:
        with atomic_path(path) as tmp:
            tmp.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
