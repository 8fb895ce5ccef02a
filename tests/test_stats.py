"""Tests of dmtl.stats: t intervals by hand, paired differences, verdicts and the JSON summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from dmtl.stats import mean_ci, paired_diff, summarise, verdict

T_975_DF2 = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (tables: 4.303)
T_975_DF3 = 3.182446305284263  # 3 degrees of freedom (tables: 3.182)


def test_t_quantiles_are_the_table_values() -> None:
    assert st.t.ppf(0.975, 2) == pytest.approx(T_975_DF2)
    assert st.t.ppf(0.975, 3) == pytest.approx(T_975_DF3)


def test_mean_ci_by_hand() -> None:
    r = mean_ci([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(5 / 3)  # squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3
    half = T_975_DF3 * sd / 2
    assert r["mean"] == 2.5 and r["sd"] == pytest.approx(sd) and r["n"] == 4 and r["n_missing"] == 0
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((2.5 - half, 2.5 + half))
    assert r["values"] == [1.0, 2.0, 3.0, 4.0]


def test_mean_ci_level_and_nan_seeds() -> None:
    r90 = mean_ci([1.0, 2.0, 3.0, 4.0], level=0.9)
    assert r90["ci_high"] - 2.5 == pytest.approx(st.t.ppf(0.95, 3) * math.sqrt(5 / 3) / 2)
    r = mean_ci([1.0, float("nan"), 3.0])
    assert r["mean"] == 2.0 and r["n"] == 2 and r["n_missing"] == 1
    assert r["ci_high"] - 2.0 == pytest.approx(st.t.ppf(0.975, 1))  # sd of [1, 3] is sqrt(2), over sqrt(n=2)
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=95)


def test_mean_ci_one_and_zero_values() -> None:
    one = mean_ci([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    none = mean_ci([float("nan")])
    assert math.isnan(none["mean"]) and none["n"] == 0 and none["n_missing"] == 1


def test_paired_diff_known_numbers() -> None:
    d = paired_diff([0.70, 0.72, 0.74], [0.68, 0.69, 0.70])
    # diffs 0.02, 0.03, 0.04: mean 0.03, sd 0.01, half-width 4.3027 * 0.01 / sqrt(3) = 0.024841.
    assert d["mean"] == pytest.approx(0.03) and d["sd"] == pytest.approx(0.01) and d["n"] == 3
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.03 - 0.0248414, 0.03 + 0.0248414), abs=1e-6)
    assert d["diffs"] == pytest.approx([0.02, 0.03, 0.04])


def test_paired_diff_is_narrower_than_unpaired_when_seeds_share_variance() -> None:
    seed_effect = np.array([0.0, 0.1, -0.1, 0.05])
    a, b = 0.7 + seed_effect + [0.01, 0.012, 0.009, 0.011], 0.7 + seed_effect
    d = paired_diff(a, b)
    assert d["ci_low"] > 0
    assert d["ci_high"] - d["ci_low"] < mean_ci(a)["ci_high"] - mean_ci(a)["ci_low"]


def test_paired_diff_drops_pairs_with_a_nan_and_checks_lengths() -> None:
    d = paired_diff([1.0, float("nan"), 3.0, 4.0], [0.5, 1.0, 2.0, float("nan")])
    assert d["n"] == 2 and d["n_missing"] == 2 and d["mean"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="per seed"):
        paired_diff([1.0, 2.0], [1.0])


def test_verdicts() -> None:
    better = {"mean": 0.03, "ci_low": 0.01, "ci_high": 0.05, "n": 3}
    worse = {"mean": -0.03, "ci_low": -0.05, "ci_high": -0.01, "n": 3}
    straddle = {"mean": 0.01, "ci_low": -0.01, "ci_high": 0.03, "n": 3}
    touching = {"mean": 0.01, "ci_low": 0.0, "ci_high": 0.02, "n": 3}  # interval must *exclude* zero
    assert verdict(better, True, name_b="ctr") == "dmtl better than ctr"
    assert verdict(worse, True, name_b="ctr") == "dmtl worse than ctr"
    # Lower is better (bait share): a positive difference means dmtl is worse.
    assert verdict(better, False, name_b="ctr") == "dmtl worse than ctr"
    assert verdict(worse, False, name_b="ctr") == "dmtl better than ctr"
    assert verdict(straddle, True) == "no significant difference"
    assert verdict(touching, True) == "no significant difference"
    assert verdict(paired_diff([0.7], [0.6]), True) == "undetermined (n=1 paired seeds)"
    assert verdict({"ci_low": None, "ci_high": None, "n": 0}, True).startswith("undetermined")


def test_summarise_structure_directions_and_json() -> None:
    per_seed = {
        "dmtl": {"auc_ctcvr": [0.70, 0.72, 0.74], "bait_share@50": [0.10, 0.11, 0.12]},
        "ctr": {"auc_ctcvr": [0.68, 0.69, 0.70], "bait_share@50": [0.20, 0.22, 0.21]},
        "teacher": {"auc_ctcvr": [0.75, 0.76, float("nan")]},
    }
    out = summarise(per_seed, "dmtl", {"auc_ctcvr": True, "bait_share": False})
    json.dumps(out, allow_nan=False)  # nan became None: strict JSON
    assert out["reference"] == "dmtl" and out["level"] == 0.95
    assert out["models"]["teacher"]["auc_ctcvr"]["n"] == 2
    assert out["models"]["teacher"]["auc_ctcvr"]["values"][2] is None
    ctr = out["comparisons"]["dmtl_vs_ctr"]
    assert ctr["auc_ctcvr"]["verdict"] == "dmtl better than ctr"
    assert ctr["auc_ctcvr"]["mean"] == pytest.approx(0.03)
    assert ctr["bait_share@50"]["verdict"] == "dmtl better than ctr"  # lower share, found by prefix
    assert set(out["comparisons"]["dmtl_vs_teacher"]) == {"auc_ctcvr"}  # teacher has no retrieval metrics
    assert out["comparisons"]["dmtl_vs_teacher"]["auc_ctcvr"]["n"] == 2


def test_summarise_rejects_missing_direction_reference_and_unpaired_seeds() -> None:
    per_seed = {"dmtl": {"loss": [1.0, 2.0]}, "ctr": {"loss": [1.0, 2.0]}}
    with pytest.raises(ValueError, match="direction"):
        summarise(per_seed, "dmtl", {})
    with pytest.raises(ValueError, match="reference"):
        summarise(per_seed, "nope", {"loss": False})
    with pytest.raises(ValueError, match="same seeds"):
        summarise({"dmtl": {"loss": [1.0, 2.0]}, "ctr": {"loss": [1.0]}}, "dmtl", {"loss": False})
