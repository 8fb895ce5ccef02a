"""The long-read label ``y_d`` of docs/protocol.md section 1, by one of three rules (``data.long_read``).

The paper calls a click a long read when the reading duration exceeds tau, the mean duration of clicked
impressions. On a log where items differ a lot in length (short videos: KuaiRand's median clicked video lasts
29 s, its 90th percentile 250 s), an absolute tau mostly says "long item": every short video is a non-long
read however fully it was watched, so the "duration" task reduces to predicting item length. Two
length-aware rules keep the paper's idea (a read longer than is usual) without that:

- ``duration``: ``duration > tau`` (tau: ``data.tau``, the mean clicked training duration by default).
- ``completion``: ``duration / length >= data.completion_threshold`` (played at least that share of the
  item; replays count above 1).
- ``length_band``: ``duration > tau_b``, with items cut into ``data.length_bands`` quantile bands of their
  length (over clicked training impressions) and ``tau_b`` the paper's mean rule inside band ``b``.

``auto`` chooses ``duration`` for the simulator (the paper's setting, whose oracle defines long reads by
one tau) and ``length_band`` for real logs whose items carry their length. Items without a length fall back
to the duration rule, and the metadata says how many impressions did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmtl.schema import DataError


def resolve_rule(rule: str, source: str, has_length: bool) -> str:
    """``data.long_read`` with ``auto`` resolved for this source."""
    if rule != "auto":
        if rule != "duration" and not has_length:
            raise DataError(
                source,
                "length_s",
                f"data.long_read = {rule} needs each item's length, but the items table has no length_s column",
                "add length_s (seconds) to the items table, or set data.long_read: duration",
            )
        return rule
    return "length_band" if has_length and source != "simulated" else "duration"


def _band_edges(length: np.ndarray, n_bands: int) -> np.ndarray:
    edges = np.unique(np.quantile(length, np.linspace(0, 1, n_bands + 1)[1:-1]))
    return edges


def fit_long_read(
    duration: np.ndarray,
    click: np.ndarray,
    is_train: np.ndarray,
    length: np.ndarray | None,
    rule: str,
    tau_seconds: float,
    completion_threshold: float,
    n_bands: int,
) -> dict[str, Any]:
    """The rule's thresholds (what :func:`apply_long_read` needs, and the metadata), from training clicks.

    Only clicked training impressions move a threshold, so passing those alone (in the log's order) gives
    the same thresholds as passing every impression: what the sharded preparation (:mod:`dmtl.shard_prepare`)
    does. ``impressions_without_length`` counts the impressions passed.

    Args:
        duration: seconds per impression (0 when not clicked).
        click: 0/1 per impression.
        is_train: training-split mask: every threshold is computed on training impressions only.
        length: the item's length in seconds per impression (``nan`` when unknown), or ``None``.
        rule: ``duration``, ``completion`` or ``length_band`` (resolved).
        tau_seconds: the global tau (duration rule, and the fallback for items without a length).
        completion_threshold: the completion rule's share.
        n_bands: the length-band rule's number of bands.
    """
    info: dict[str, Any] = {"long_read_rule": rule, "tau_seconds": tau_seconds}
    if rule == "duration":
        return info
    known = np.isfinite(length) & (length > 0)
    info["impressions_without_length"] = int((~known).sum())
    if rule == "completion":
        info["completion_threshold"] = completion_threshold
        return info
    fit = (click == 1) & is_train & known
    if not fit.any():
        raise DataError(
            None, "length_s", "no clicked training impression has an item length", "check length_s"
        )
    edges = _band_edges(length[fit], n_bands)
    band = np.searchsorted(edges, np.where(known, length, 0.0), side="right")
    taus = np.array(
        [
            duration[fit & (band == b)].mean() if (fit & (band == b)).any() else tau_seconds
            for b in range(len(edges) + 1)
        ]
    )
    return info | {"band_edges_s": edges.tolist(), "band_tau_s": taus.tolist()}


def apply_long_read(
    duration: np.ndarray, click: np.ndarray, length: np.ndarray | None, info: dict[str, Any]
) -> np.ndarray:
    """``y_d`` (int8) of impressions under the thresholds :func:`fit_long_read` found (any rows, any order)."""
    clicked = click == 1
    long_read = clicked & (duration > info["tau_seconds"])
    rule = info["long_read_rule"]
    if rule == "duration":
        return long_read.astype(np.int8)
    known = np.isfinite(length) & (length > 0)
    if rule == "completion":
        ratio = np.divide(duration, length, out=np.zeros_like(duration, dtype=np.float64), where=known)
        long_read = np.where(known, clicked & (ratio >= info["completion_threshold"]), long_read)
        return long_read.astype(np.int8)
    edges, taus = np.asarray(info["band_edges_s"], dtype=np.float64), np.asarray(info["band_tau_s"])
    band = np.searchsorted(edges, np.where(known, length, 0.0), side="right")
    long_read = np.where(known, clicked & (duration > taus[band]), long_read)
    return long_read.astype(np.int8)
