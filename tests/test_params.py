"""params.yaml is validated before any work: unknown keys and bad values stop the run, listing the options."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from dmtl import config as C
from dmtl import params as P

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    """params.yaml as its YAML tree (what overrides are applied to)."""
    return P.load(REPO / "params.yaml").to_dict()


def test_params_yaml_itself_validates(base: dict[str, Any]) -> None:
    study = P.validate(base)
    assert set(base) == set(C.GROUPS)
    assert study.eval.reference in study.students.names
    assert study.to_dict() == base  # the typed study gives its tree back unchanged


def test_typed_groups_and_one_name_per_meaning(base: dict[str, Any]) -> None:
    study = P.validate(base)
    assert isinstance(study.train.seeds, tuple) and study.train.batch_size == base["train"]["batch_size"]
    # A student without a teacher takes no distillation settings; one with a teacher takes them all.
    assert study.students["ctr"].distill is None
    assert study.students["dmtl"].distill.distill_loss == base["students"]["dmtl"]["distill_loss"]
    # The cosine and the KL temperature are two keys, so one can never overwrite the other.
    assert "cosine_temperature" in base["students"]["common"] and "kl_temperature" in base["students"]["dmtl"]
    with pytest.raises(P.ParamsError, match=r"unknown key\(s\) \['students.ctr.hard_weight'\]"):
        P.apply_overrides(base, {"students.ctr.hard_weight": 0.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.train.max_epochs = 99  # type: ignore[misc]


def test_every_key_is_documented() -> None:
    for cls in (C.DataConfig, C.TrainConfig, C.TeacherConfig, C.TowersConfig, C.DistillConfig, C.EvalConfig):
        assert all(doc for doc in C.describe(cls).values()), cls.__name__


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # unknown keys: the message names the key and lists the valid ones at that level
        ({"trian": {}}, r"unknown key\(s\) \['trian'\] in params.yaml; valid keys: \['data', 'eval'"),
        (
            {"students.dmtl.los": "mse"},
            r"\['students.dmtl.los'\] in students.dmtl; valid keys: \[.*'distill_loss'",
        ),
        ({"train.epochs": 3}, r"\['train.epochs'\] in train; valid keys: \[.*'max_epochs'"),
        (
            {"students.common.dropout": 0.1},
            r"in students.common; valid keys: \['cosine_temperature', 'objective', 'out_dim'",
        ),
        # bad choices: the options are listed
        ({"data.source": "kandian"}, r"data.source = 'kandian' is not valid; choose one of \['simulated'"),
        ({"students.dmtl.distill_loss": "hinge"}, r"choose one of \['bce', 'mse', 'kl', 'logit_mse'\]"),
        ({"teacher.backbone": "ple"}, r"choose one of \['mmoe', 'shared_bottom'\]"),
        ({"students.names": ["ctr", "dssm"]}, r"unknown entries \['dssm'\]; choose from \['dmtl', 'ctr'"),
        ({"students.names": ["ctr", "ctr"]}, "repeats an entry"),
        (
            {"teacher.variants": ["ple"]},
            r"choose from \['shared_bottom', 'no_esmm', 'position_feature', 'no_position'\]",
        ),
        # wrong types
        ({"train.max_epochs": 2.0}, "train.max_epochs = 2.0 must be an integer"),
        ({"train.max_epochs": "2"}, "must be an integer"),
        ({"train.batch_size": True}, "must be an integer"),
        ({"teacher.lr": "fast"}, "teacher.lr = 'fast' must be a number"),
        ({"teacher.esmm": "yes"}, "teacher.esmm = 'yes' must be true or false"),
        ({"teacher.expert_dims": 64}, "must be a list of integers"),
        ({"teacher": 3}, r"teacher must be a mapping with keys \['backbone'"),
        ({"data.sim": [1]}, "data.sim = .* must be a mapping"),
        # out-of-range and non-finite numbers (NaN passes every < / > comparison)
        ({"teacher.lr": 0.0}, r"teacher.lr = 0.0 must lie in \[1e-06, 1.0\]"),
        ({"teacher.lr": float("nan")}, "teacher.lr = nan must be a finite number"),
        ({"teacher.w_ctr": float("inf")}, "must be a finite number"),
        ({"data.tau": float("nan")}, "data.tau = nan must be a finite number"),
        ({"data.tau": -5}, r"data.tau = -5 must lie in \[0.0, None\]"),
        ({"data.tau": "median"}, "must be a number; use 'mean' .* or seconds >= 0"),
        ({"eval.ci_level": 1.0}, r"must lie in \[0.5, 0.999\]"),
        ({"eval.ks": [50, 0]}, r"eval.ks\[1\] = 0 must lie in \[1, None\]"),
        # a repeated seed is one run counted twice: it would narrow every interval
        ({"train.seeds": [0, 0, 1]}, r"train.seeds = \[0, 0, 1\] repeats an entry"),
        ({"sweeps.seeds": [1, 1]}, "repeats an entry"),
        ({"train.seeds": []}, "must be a list of integers"),
        # Lightning's devices
        ({"train.devices": "banana"}, r"train.devices = 'banana' is not valid; use a device count"),
        ({"train.devices": 0}, "is not valid"),
        # the generic loader's column mapping, checked before any data is read
        ({"data.columns": {"clicks": "clicked"}}, r"unknown schema column\(s\) \['clicks'\]; valid keys"),
        ({"data.columns": {"click": 3}}, "data.columns.click = 3 must be a non-empty string"),
        ({"data.columns": {"time": "ts", "day": "ts"}}, r"maps several schema names to one column"),
        # the real-data loaders' reading and plausibility rules
        (
            {"data.encoding": "klingon"},
            r"data.encoding = 'klingon' is not an encoding Python knows; use e.g.",
        ),
        ({"data.encoding": ""}, "must be a non-empty string"),
        ({"data.max_median_duration_s": 0}, r"must lie in \[1.0, None\]"),
        ({"data.max_duration_s": -1.0}, r"must lie in \[1.0, None\]"),
        ({"data.first_year": 1969}, r"data.first_year = 1969 must lie in \[1970, 9998\]"),
        ({"data.last_year": 2100.5}, "must be an integer"),
        ({"data.max_span_days": 0}, r"must lie in \[1, None\]"),
        # a repeated K is one column reported twice
        ({"eval.ks": [50, 50]}, r"eval.ks = \[50, 50\] repeats an entry"),
        # a sweep name becomes a folder and a shell argument in dvc.yaml
        (
            {"sweeps.grid": {"../x": {"param": "data.tau", "values": [1]}}},
            r"sweep name '../x' must be letters",
        ),
        ({"sweeps.grid": {"a;rm": {"param": "data.tau", "values": [1]}}}, "must be letters, digits"),
    ],
)
def test_bad_params_stop_with_the_options(base: dict[str, Any], overrides: dict, message: str) -> None:
    with pytest.raises(P.ParamsError, match=message):
        P.apply_overrides(base, overrides)


@pytest.mark.parametrize("devices", [1, 4, -1, "auto", [0, 1], "0,1", "2"], ids=lambda d: f"devices={d!r}")
def test_lightning_device_forms_are_accepted(base: dict[str, Any], devices: Any) -> None:
    got = P.apply_overrides(base, {"train.devices": devices}).train.devices
    assert (list(got) if isinstance(got, tuple) else got) == devices


def test_missing_key_is_named(base: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(base))
    del broken["teacher"]["n_experts"]
    with pytest.raises(P.ParamsError, match=r"missing key\(s\) \['teacher.n_experts'\]"):
        P.validate(broken)


def test_p_ctr_x_duration_needs_the_duration_head(base: dict[str, Any]) -> None:
    with pytest.raises(P.ParamsError, match="set teacher.w_duration > 0"):
        P.apply_overrides(base, {"students.dmtl.soft_target": "p_ctr_x_duration", "teacher.w_duration": 0.0})
    ok = P.apply_overrides(base, {"students.dmtl.soft_target": "p_ctr_x_duration", "teacher.w_duration": 0.5})
    assert ok.teacher.w_duration == 0.5


def test_eval_reference_must_be_a_trained_student(base: dict[str, Any]) -> None:
    with pytest.raises(P.ParamsError, match="eval.reference = 'dmtl' must be one of students.names"):
        P.apply_overrides(base, {"students.names": ["ctr", "weighted_lr"]})
    ok = P.apply_overrides(base, {"students.names": ["ctr", "dmtl"]})
    assert ok.students.names == ("ctr", "dmtl")


def test_bad_simulator_override_lists_the_knobs(base: dict[str, Any]) -> None:
    with pytest.raises(
        P.ParamsError, match=r"data.sim: unknown simulator knob.*valid: \[.*'clickbait_share'"
    ):
        P.apply_overrides(base, {"data.sim.clickbait_shares": 0.2})
    with pytest.raises(P.ParamsError, match=r"data.sim: .*clickbait_share must lie in \[0, 1\]"):
        P.apply_overrides(base, {"data.sim.clickbait_share": 1.5})
    with pytest.raises(P.ParamsError, match="data.preset = 'huge' is not valid"):
        P.apply_overrides(base, {"data.preset": "huge"})


def test_simulator_knobs_are_checked_only_for_the_simulated_source(base: dict[str, Any]) -> None:
    # data.sim is ignored for real data, so a real-data run is not stopped by it...
    real = P.apply_overrides(base, {"data.source": "generic", "data.sim": {"clickbait_shares": 0.2}})
    assert real.data.source == "generic"
    # ...but it is checked as soon as the source is the simulator again.
    with pytest.raises(P.ParamsError, match="unknown simulator knob"):
        P.apply_overrides(real, {"data.source": "simulated"})


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            {"x": {"param": "students.dmtl.distill_loss", "values": ["bce", "hinge"]}},
            r"sweeps.grid.x: .*'hinge'.*bce",
        ),
        ({"x": {"param": "students.dmtl.los", "values": ["bce"]}}, r"sweeps.grid.x: unknown key.*dmtl.los"),
        ({"x": {"param": "teacher.lr.x", "values": [1]}}, r"sweeps.grid.x: .*'lr' is not a group"),
        ({"x": {"param": "data.sim.clickbait_share", "values": [0.1, 2.0]}}, r"sweeps.grid.x: data.sim"),
        ({"x": {"param": "train.seeds", "values": [[0, 0]]}}, "sweeps.grid.x: .*repeats an entry"),
        # a string is not a list of values: it would otherwise be swept one character at a time
        ({"x": {"param": "students.dmtl.distill_loss", "values": "bce"}}, r"values: \[a non-empty list\]"),
        ({"x": {"param": "students.dmtl.distill_loss", "values": []}}, "non-empty list"),
        ({"x": {"param": "students.dmtl.distill_loss"}}, "must be {param: dotted.key"),
        ({"x": {"param": "students.dmtl.distill_loss", "values": ["bce"], "seeds": [0]}}, "must be {param"),
    ],
)
def test_bad_sweep_values_fail_before_any_run(base: dict[str, Any], grid: dict, message: str) -> None:
    with pytest.raises(P.ParamsError, match=message):
        P.apply_overrides(base, {"sweeps.grid": grid})


def test_every_sweep_value_of_params_yaml_validates(base: dict[str, Any]) -> None:
    for sweep in base["sweeps"]["grid"].values():
        for value in sweep["values"]:
            assert P.apply_overrides(base, {sweep["param"]: value}) is not None


def test_json_string_overrides_as_papermill_passes_them(tmp_path: Path) -> None:
    text = json.dumps(
        {"train.max_epochs": 2, "students.dmtl.distill_loss": "kl", "data.sim.clickbait_share": 0.3}
    )
    study = P.load(REPO / "params.yaml", text)
    assert study.train.max_epochs == 2
    assert study.students["dmtl"].distill.distill_loss == "kl"
    assert study.data.sim == {"clickbait_share": 0.3}
    assert P.load(REPO / "params.yaml", "  ") == P.load(REPO / "params.yaml")
    with pytest.raises(P.ParamsError, match="are not valid JSON"):
        P.load(REPO / "params.yaml", "{train.max_epochs: 2}")
    with pytest.raises(P.ParamsError, match="must be a mapping of dotted keys"):
        P.load(REPO / "params.yaml", "[1, 2]")
    with pytest.raises(P.ParamsError, match="params.yaml: .*students.dmtl.distill_loss = 'hinge'"):
        P.load(REPO / "params.yaml", json.dumps({"students.dmtl.distill_loss": "hinge"}))


def test_overrides_do_not_touch_the_base(base: dict[str, Any]) -> None:
    before = json.dumps(base, sort_keys=True)
    P.apply_overrides(base, {"train.max_epochs": 1, "data.sim.clickbait_share": 0.3})
    assert json.dumps(base, sort_keys=True) == before


def test_dotted_overrides_create_keys_only_where_allowed(base: dict[str, Any]) -> None:
    # data.sim is free-form (the simulator checks its own knobs): a new knob may be created there.
    out = P.apply_overrides(base, {"data.sim.clickbait_share": 0.3})
    assert out.data.sim == {"clickbait_share": 0.3}
    # A new leaf elsewhere is an unknown key...
    with pytest.raises(P.ParamsError, match=r"unknown key\(s\) \['teacher.n_expert'\]"):
        P.apply_overrides(base, {"teacher.n_expert": 8})
    # ...and no intermediate group is ever created, nor is a value walked into.
    with pytest.raises(P.ParamsError, match="unknown parameter 'tuner.lr': no key 'tuner'"):
        P.apply_overrides(base, {"tuner.lr": 0.1})
    with pytest.raises(P.ParamsError, match="no key 'knobs'"):
        P.apply_overrides(base, {"data.sim.knobs.clickbait_share": 0.3})
    with pytest.raises(P.ParamsError, match="'lr' is not a group"):
        P.apply_overrides(base, {"teacher.lr.value": 0.1})


def test_bad_params_file(tmp_path: Path) -> None:
    with pytest.raises(P.ParamsError, match="parameters file not found"):
        P.load(tmp_path / "absent.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- data\n- train\n")
    with pytest.raises(P.ParamsError, match=r"must be a mapping of the groups \['data'"):
        P.load(listed)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: {source: simulated\n")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load(broken)
    typo = tmp_path / "typo.yaml"
    typo.write_text((REPO / "params.yaml").read_text().replace("  max_epochs:", "  max_epoch:"))
    with pytest.raises(P.ParamsError, match=r"typo.yaml: unknown key\(s\) \['train.max_epoch'\]"):
        P.load(typo)


def test_load_options_defaults_are_the_params_yaml_values(base: dict[str, Any]) -> None:
    from dmtl.schema import LoadOptions

    assert LoadOptions.from_params(base["data"]) == LoadOptions()


def _line_of(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def test_yaml_errors_name_the_file_line_and_fix(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text()
    path = tmp_path / "bad.yaml"

    def message(old: str, new: str) -> str:
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(P.ParamsError) as err:
            P.load(path)
        assert "\n" not in str(err.value)
        return str(err.value)

    tau = _line_of(text, "  tau: mean")
    assert message("  tau: mean", "  tau: mean\n  tau: 25") == (
        f'{path}, line {tau + 1}, column 3: not valid YAML: found duplicate key "tau" with value "25" '
        f"(original value: \"mean\"). Fix: keep one 'tau:' in that mapping (it is first set on line {tau}); "
        "YAML allows each key once"
    )
    epochs = _line_of(text, "  max_epochs:")
    assert message("  max_epochs:", "\tmax_epochs:") == (
        f"{path}, line {epochs}, column 1: not valid YAML: a tab character where YAML expects indentation or "
        "a value. Fix: indent with spaces only: replace the tab on that line with spaces"
    )
    ks = _line_of(text, "  ks: [50, 100, 200]")
    assert message("ks: [50, 100, 200]", "ks: [50, 100, 200").endswith(
        f"Fix: close the bracket opened on line {ks}, column 7"
    )


def test_params_path_that_is_a_folder_or_not_text(tmp_path: Path) -> None:
    with pytest.raises(
        P.ParamsError, match=f"^{tmp_path}: is a folder, not a parameters file. Fix: pass the"
    ):
        P.load(tmp_path)
    (tmp_path / "params.yaml").write_text("")
    with pytest.raises(P.ParamsError, match=r"e.g. .*params.yaml$"):
        P.load(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"data:\n  source: caf\xe9\n")
    with pytest.raises(P.ParamsError, match=r"binary.yaml: not UTF-8 text \(byte 0xe9 at offset 19\)"):
        P.load(binary)
