"""Configuration: defaults, presets, TOML files, flags and validation (charrnn.config)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.config import (
    MODEL_KEYS,
    NEW_RUN_INPUTS,
    RESUMABLE_KEYS,
    TRAINING_SETTINGS,
    DataConfig,
    DistillConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    apply_overrides,
    check_init_from_flags,
    check_resume_flags,
    declared_settings,
    format_duration,
    load_preset,
    parse_duration,
    preset_names,
    presets_dir,
    read_toml,
    resolve_config,
    resume_config,
    setting,
    validate_distill_config,
)
from charrnn.errors import UsageError

FLAT_KEYS = sorted(
    f.name
    for section in (RunConfig().model, RunConfig().data, RunConfig().train)
    for f in dataclasses.fields(section)
)


def flat(config: RunConfig) -> dict:
    return {k: v for section in config.to_dict().values() for k, v in section.items()}


# A valid value other than the default for every training setting (a new setting needs one).
OTHER_VALUES = {
    "cell": "gru", "nonlinearity": "relu", "layers": 2, "hidden": 32, "embed": 8, "dropout": 0.5,
    "encoding": "latin-1", "bytes": True, "val_frac": 0.2,
    "lowercase": True, "ascii": True, "normalize": "nfkc", "strip_control": True,
    "min_char_count": 5,
    "batch_size": 4, "seq_len": 8, "lr": 0.01, "min_lr": 0.001, "warmup_steps": 3,
    "weight_decay": 0.2, "beta1": 0.8, "beta2": 0.9, "grad_clip": 2.0,
    "max_steps": 5, "max_epochs": 2.0, "max_time": 90.0, "eval_every": 7, "eval_streams": 3,
    "eval_chars": 500,
    "log_every": 9, "preview_chars": 40,
    "seed": 5, "device": "cpu", "threads": 1, "precision": "fp32",
    "collective_timeout": 30.0,
    "compile": True, "auto": True,
}  # fmt: skip
# The same for sampling: (command-line text, value); `stop` understands \n.
OTHER_SAMPLE_VALUES = {
    "length": ("7", 7), "temperature": ("0.5", 0.5), "top_k": ("3", 3), "top_p": ("0.5", 0.5),
    "greedy": (None, True), "seed": ("4", 4), "num_samples": ("2", 2), "stop": (r"\n", "\n"),
    "unknown": ("skip", "skip"), "beam": ("3", 3),
}  # fmt: skip


def test_precedence_defaults_preset_file_flags(tmp_path):
    defaults = resolve_config()
    assert defaults == RunConfig()
    tiny = load_preset("tiny")
    assert tiny["hidden"] != RunConfig().model.hidden  # the preset changes something to test
    preset = resolve_config(preset="tiny")
    assert preset.model.hidden == tiny["hidden"] and preset.model.embed == tiny["embed"]
    assert preset.data == defaults.data  # keys the preset leaves alone keep their defaults
    config_file = tmp_path / "run.toml"
    config_file.write_text('hidden = 48\ncell = "gru"\nmax_time = "1.5m"\n', "utf-8")
    with_file = resolve_config(preset="tiny", config_file=config_file)
    assert with_file.model.hidden == 48 and with_file.model.cell == "gru"
    assert with_file.model.embed == tiny["embed"]  # from the preset, not the file
    assert with_file.train.max_time == 90.0
    flags = resolve_config(
        preset="tiny", config_file=config_file, overrides={"hidden": 24, "cell": None, "seed": 5}
    )
    assert flags.model.hidden == 24  # the flag wins
    assert flags.model.cell == "gru"  # None means the flag was not given
    assert flags.train.seed == 5
    assert flags.model.embed == tiny["embed"]


def test_config_round_trips_through_a_dict():
    config = resolve_config(overrides={"hidden": 7, "bytes": True, "max_time": "2h"})
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.replace(hidden=9).model.hidden == 9
    # Keys written by a newer version are ignored by this one.
    nested = config.to_dict()
    nested["model"]["future_key"] = 1
    assert RunConfig.from_dict(nested) == config


def test_unknown_key_error_names_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("hiden = 3\n", "utf-8")
    calls = [
        lambda: resolve_config(config_file=path),
        lambda: resolve_config(overrides={"hiden": 3}),
        lambda: apply_overrides(RunConfig(), {"hiden": 3}, "preset x"),
    ]
    for call in calls:
        with pytest.raises(UsageError, match="'hiden'"):
            call()


@pytest.mark.parametrize(
    "text", ["hidden = ", "hidden = 3\nhidden = 4\n", "[model]\nhidden = 3\n", "= 3", "x = [1,"]
)
def test_malformed_or_nested_toml_is_a_usage_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(UsageError) as info:
        resolve_config(config_file=path)
    assert str(path) in str(info.value)


def test_unreadable_config_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        resolve_config(config_file=tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"hidden = \xff\n")
    with pytest.raises(UsageError):
        resolve_config(config_file=binary)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (" 10m ", 600.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", "1.5.2m", "m", "5 minutes"])
def test_parse_duration_rejects_nonsense(text):
    with pytest.raises(UsageError, match="duration"):
        parse_duration(text)


def test_max_time_accepts_numbers_and_durations():
    assert resolve_config(overrides={"max_time": "2h"}).train.max_time == 7200.0
    assert resolve_config(overrides={"max_time": 30}).train.max_time == 30.0
    with pytest.raises(UsageError):
        resolve_config(overrides={"max_time": "soon"})


def test_presets_are_shipped():
    assert "tiny" in preset_names()
    assert presets_dir().is_dir()
    with pytest.raises(UsageError, match="unknown preset 'huge'"):
        resolve_config(preset="huge")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_validates(name):
    keys = load_preset(name)
    assert set(keys) <= set(FLAT_KEYS)
    config = resolve_config(preset=name)
    for key, value in keys.items():
        expected = parse_duration(value) if key == "max_time" and isinstance(value, str) else value
        assert flat(config)[key] == expected


def test_small_preset_is_the_defaults():
    assert (presets_dir() / "small.toml").is_file()
    keys = load_preset("small")
    assert keys, "configs/small.toml sets no keys"
    defaults = flat(RunConfig())
    assert {k: defaults[k] for k in keys} == keys
    assert resolve_config(preset="small") == RunConfig()


@pytest.mark.parametrize(
    "overrides",
    [
        {"hidden": 0},
        {"hidden": -3},
        {"layers": 0},
        {"embed": 0},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"cell": "transformer"},
        {"nonlinearity": "sigmoid"},
        {"val_frac": 0.0},
        {"val_frac": 1.0},
        {"lr": -1e-3},
        {"lr": 0.0},
        {"lr": math.nan},
        {"min_lr": 1.0},  # above lr
        {"batch_size": 0},
        {"seq_len": 0},
        {"warmup_steps": -1},
        {"beta1": 1.0},
        {"grad_clip": -1.0},
        {"max_steps": 0},
        {"max_epochs": 0},
        {"max_epochs": math.inf},
        {"max_time": 0},
        {"eval_every": 0},
        {"log_every": 0},
        {"eval_streams": 0},
        {"device": "tpu"},
        {"precision": "fp8"},
        {"encoding": ""},
        {"seed": 2**64},
        {"hidden": "big"},
        {"hidden": 1.5},
        {"hidden": True},
        {"bytes": 1},
        {"lr": 10**400},
        {"cell": None},
    ],
    ids=lambda o: "-".join(f"{k}={v!r}"[:30] for k, v in o.items()),
)
def test_invalid_values_are_usage_errors(overrides):
    with pytest.raises(UsageError):
        RunConfig().replace(**overrides)


def test_whole_numbers_and_ints_are_accepted_where_they_mean_the_same():
    config = RunConfig().replace(hidden=32.0, lr=1, max_epochs=2)
    assert config.model.hidden == 32 and isinstance(config.model.hidden, int)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.max_epochs == 2.0


def test_at_least_one_run_length_limit():
    with pytest.raises(UsageError, match="at least one"):
        RunConfig().replace(max_epochs=None)
    assert RunConfig().replace(max_epochs=None, max_steps=10).train.max_epochs is None


# ----------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class _Declared:
    count: int | None = setting(None, "How many.", "Panel", resumable=True)
    span: float = setting(60.0, "How long.", flag="--span/--no-span", parse=parse_duration)


def test_settings_reads_each_declaration():
    count, span = declared_settings(_Declared)
    assert (count.name, count.default, count.type, count.optional) == ("count", None, int, True)
    assert (count.help, count.panel, count.resumable, count.flag) == (
        "How many.",
        "Panel",
        True,
        None,
    )
    assert count.option == "--count" and count.parse is None
    assert (span.name, span.default, span.type, span.optional) == ("span", 60.0, float, False)
    assert (span.help, span.panel, span.resumable) == ("How long.", None, False)
    assert span.option == "--span" and span.parse is parse_duration
    assert _Declared() == _Declared(count=None, span=60.0)  # still a plain dataclass


def test_every_field_is_a_declared_setting_with_help():
    for cls in (ModelConfig, DataConfig, TrainConfig, SampleConfig, DistillConfig):
        declared = declared_settings(cls)
        assert [s.name for s in declared] == [f.name for f in dataclasses.fields(cls)]
        assert [s.default for s in declared] == [f.default for f in dataclasses.fields(cls)]
        for s in declared:
            assert s.help.endswith(".") and "\n" not in s.help, s.name
    assert {s.name for s in TRAINING_SETTINGS} == set(FLAT_KEYS) == set(OTHER_VALUES)
    assert set(OTHER_SAMPLE_VALUES) == {f.name for f in dataclasses.fields(SampleConfig)}
    panels = {s.panel for s in TRAINING_SETTINGS}
    assert panels == {"Model", "Data", "Optimisation", "Run length and evaluation", "Run"}


def test_other_values_are_valid_and_not_the_defaults():
    config = RunConfig().replace(**OTHER_VALUES)
    assert flat(config) == OTHER_VALUES
    assert all(flat(RunConfig())[key] != value for key, value in OTHER_VALUES.items())


def test_resumable_and_model_keys_come_from_the_declarations():
    # The policy: how long the run goes on, how it reports and where it runs; nothing that
    # would make a resumed run differ from one never stopped.
    assert {
        "max_steps", "max_epochs", "max_time", "eval_every", "log_every", "preview_chars",
        "device", "threads", "precision", "compile", "collective_timeout",
    } == RESUMABLE_KEYS  # fmt: skip
    assert {s.name for s in TRAINING_SETTINGS if s.resumable} == RESUMABLE_KEYS
    assert {f.name for f in dataclasses.fields(ModelConfig)} == MODEL_KEYS


@pytest.mark.parametrize("key", sorted(OTHER_VALUES))
def test_resume_changes_only_resumable_settings(key):
    saved = RunConfig()
    if key in RESUMABLE_KEYS:
        resumed = resume_config(saved, {key: OTHER_VALUES[key], "hidden": None})
        assert flat(resumed) == {**flat(saved), key: OTHER_VALUES[key]}
        check_resume_flags({"resume", key})
        return
    expected = (
        f"--resume continues the saved configuration; --{key.replace('_', '-')} cannot change "
        "(start a new run with --init-from to change them)"
    )
    for call in (
        lambda: resume_config(saved, {key: OTHER_VALUES[key]}),
        lambda: check_resume_flags({"resume", key, "max_steps"}),
    ):
        with pytest.raises(UsageError) as info:
            call()
        assert str(info.value) == expected


def test_resume_flags_rules_and_messages():
    check_resume_flags({"corpus", "hidden", "preset", "out"})  # a new run
    with pytest.raises(UsageError) as info:
        check_resume_flags({"hidden"})
    assert str(info.value) == "give a CORPUS to train on (or --resume RUN_DIR)"
    assert {"corpus", "preset", "config", "out", "init_from"} == NEW_RUN_INPUTS
    for name in NEW_RUN_INPUTS:
        with pytest.raises(UsageError) as info:
            check_resume_flags({"resume", name, "max_steps"})
        assert str(info.value) == (
            "--resume takes the corpus, settings and directory of the saved run; "
            "give only run-length, logging and device options with it"
        )
    with pytest.raises(UsageError, match="; --hidden, --seq-len cannot change"):
        check_resume_flags({"resume", "seq_len", "hidden", "threads"})


@pytest.mark.parametrize("key", sorted(OTHER_VALUES))
def test_init_from_refuses_exactly_the_model_flags(key):
    check_init_from_flags({key})  # no --init-from: any flag
    if key == "auto":
        with pytest.raises(UsageError, match="^--init-from keeps the checkpoint's network; "):
            check_init_from_flags({"init_from", key, "corpus"})
        return
    if key not in MODEL_KEYS:
        check_init_from_flags({"init_from", key, "corpus"})
        return
    with pytest.raises(UsageError) as info:
        check_init_from_flags({"init_from", key, "corpus"})
    assert str(info.value) == (
        f"--init-from keeps the checkpoint's network; --{key.replace('_', '-')} cannot change"
    )


def test_init_from_flags_rules_and_messages():
    with pytest.raises(UsageError, match="network; --embed, --hidden cannot change$"):
        check_init_from_flags({"init_from", "hidden", "embed", "lr"})
    check_init_from_flags({"init_from"}, bytes_=True, checkpoint_bytes=True)
    for bytes_, saved in [(True, False), (False, True)]:
        with pytest.raises(UsageError) as info:
            check_init_from_flags({"init_from"}, bytes_=bytes_, checkpoint_bytes=saved)
        assert str(info.value) == (
            "--init-from: the checkpoint and --bytes disagree on bytes vs characters"
        )


# ----------------------------------------------------------------------------- fuzzing

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["lstm", "gru", "rnn", "relu", "cpu", "90s", "1.5m", "fp32", "utf-8"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)
KEYS = st.sampled_from(FLAT_KEYS) | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_apply_overrides_raises_only_usage_errors(overrides):
    try:
        config = apply_overrides(RunConfig(), overrides, "fuzz")
    except UsageError:
        pass
    else:
        for key, value in overrides.items():
            assert key in FLAT_KEYS
            if isinstance(value, str) and key == "max_time":
                continue
            assert flat(config)[key] == value


def toml_value(value) -> str:
    """A TOML literal for a scalar (strings via JSON escapes, floats via repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


TOML_SCALARS = (
    st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["lstm", "2h", "cpu"])
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, TOML_SCALARS, max_size=6), st.text(max_size=40))
def test_config_files_raise_only_usage_errors(table, garbage):
    body = "".join(
        f"{json.dumps(key, ensure_ascii=False)} = {toml_value(v)}\n" for key, v in table.items()
    )
    with tempfile.TemporaryDirectory() as tmp:
        for text in (body, garbage, body + garbage):
            path = Path(tmp) / "fuzz.toml"
            path.write_text(text, "utf-8")
            with contextlib.suppress(UsageError):
                resolve_config(config_file=path)
            with contextlib.suppress(UsageError):
                read_toml(text, "fuzz")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((0.0, 0.5), "distill_temperature must be > 0, got 0.0"),
        ((float("inf"), 0.5), "distill_temperature must be > 0, got inf"),
        ((2.0, -0.1), "distill_alpha must be in [0, 1], got -0.1"),
        ((2.0, 1.01), "distill_alpha must be in [0, 1], got 1.01"),
    ],
)
def test_distill_settings_are_range_checked(values, message):
    validate_distill_config(DistillConfig(1.0, 0.0))  # the edges are fine
    validate_distill_config(DistillConfig(0.5, 1.0))
    with pytest.raises(UsageError, match=re.escape(message)):
        validate_distill_config(DistillConfig(*values))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300.0, "5m"), (90.0, "90s"), (7200.0, "2h"), (86400.0, "1d"), (1.5, "1.5s")],
)
def test_a_duration_is_shown_as_it_is_typed(seconds, text):
    assert format_duration(seconds) == text and parse_duration(text) == seconds
