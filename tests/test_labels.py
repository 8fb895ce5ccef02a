"""The three long-read labels of dmtl.labels on hand-built logs, and their choice per source."""

from __future__ import annotations

import numpy as np
import pytest

from dmtl.labels import apply_long_read, fit_long_read, resolve_rule
from dmtl.schema import DataError

#            impression:   0     1     2     3     4     5     6
DURATION = np.array([30.0, 90.0, 12.0, 5.0, 200.0, 0.0, 40.0])
CLICK = np.array([1, 1, 1, 1, 1, 0, 1])
TRAIN = np.array([True, True, True, True, True, True, False])
LENGTH = np.array([20.0, 300.0, 10.0, 10.0, 300.0, 20.0, np.nan])  # the last item's length is unknown


def labels(rule, tau=50.0, **kw):
    info = fit_long_read(
        DURATION, CLICK, TRAIN, LENGTH, rule, tau, kw.get("completion", 1.0), kw.get("bands", 2)
    )
    y = apply_long_read(DURATION, CLICK, LENGTH, info)
    return y.tolist(), info


def test_duration_rule_is_the_papers():
    y, info = labels("duration")
    assert y == [0, 1, 0, 0, 1, 0, 0] and info["long_read_rule"] == "duration"


def test_completion_rule_reads_the_played_share_and_falls_back_without_a_length():
    y, info = labels("completion", completion=1.0)
    # 30/20 >= 1, 90/300 < 1, 12/10 >= 1, 5/10 < 1, 200/300 < 1, not clicked, unknown length -> 40 > 50? no
    assert y == [1, 0, 1, 0, 0, 0, 0]
    assert info["impressions_without_length"] == 1 and info["completion_threshold"] == 1.0
    y, _ = labels("completion", completion=0.5)
    assert y == [1, 0, 1, 1, 1, 0, 0]


def test_length_band_rule_applies_the_mean_rule_within_each_band():
    y, info = labels("length_band", bands=2)
    # Clicked training lengths [20, 300, 10, 10, 300]: the median 20 splits them into short (10, 20 -> band 1
    # holds lengths >= 20 with side='right') and long. Band taus: the mean clicked training duration inside.
    edges, taus = info["band_edges_s"], info["band_tau_s"]
    assert edges == [20.0]
    assert taus == pytest.approx([(12.0 + 5.0) / 2, (30.0 + 90.0 + 200.0) / 3])
    # A long read beats its own band's tau: 12 > 8.5 (short item); 200 > 106.7 (long item); 90 is not.
    assert y == [0, 0, 1, 0, 1, 0, 0]


def test_auto_and_missing_lengths():
    assert resolve_rule("auto", "simulated", has_length=True) == "duration"
    assert resolve_rule("auto", "kuairand-pure", has_length=True) == "length_band"
    assert resolve_rule("auto", "generic", has_length=False) == "duration"
    with pytest.raises(DataError, match="length_s.*Fix: add length_s"):
        resolve_rule("completion", "generic", has_length=False)


@pytest.mark.skipif(
    not __import__("pathlib").Path("/work/shared/data/kuairand-pure").exists(), reason="no slice"
)
def test_kuairand_slice_length_aware_label_does_not_reduce_to_video_length():
    """On the shared KuaiRand slice the duration rule's long reads are mostly long videos; per length band
    the share of long reads among clicks is about the same in every band."""
    from dmtl.features import LabelRule, prepare
    from dmtl.sources.kuairand.load import load_kuairand

    log = load_kuairand("/work/shared/data/kuairand-pure")
    by = {}
    for rule in ("duration", "length_band"):
        p = prepare(log, 1, 2, "mean", LabelRule(rule, 1.0, 5))
        imp = p.impressions[p.impressions["click"] == 1]
        length = log.items.set_index("item_id").loc[imp["item_id"], "length_s"].to_numpy()
        short = length < np.nanmedian(length)
        by[rule] = (imp["long_read"].to_numpy()[short].mean(), imp["long_read"].to_numpy()[~short].mean())
    assert by["duration"][0] < 0.5 * by["duration"][1]  # absolute tau: short videos are rarely long reads
    assert abs(by["length_band"][0] - by["length_band"][1]) < 0.15  # per band: about as often as long ones
