"""Configuration as data: frozen dataclasses with defaults, TOML presets, one validation pass.

Keys are flat and equal to the command-line flags (``--batch-size`` is ``batch_size``), so a TOML
file, a preset and the command line all speak the same names. The defaults below *are* the
``small`` preset: the recipe tuned for the best validation loss in a short CPU run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from charrnn.errors import UsageError

CELLS = ("lstm", "gru", "rnn")
NONLINEARITIES = ("tanh", "relu")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_PRESET = "small"


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network: embedding -> stacked recurrent layers -> linear to the vocabulary."""

    cell: str = "lstm"  # lstm | gru | rnn
    nonlinearity: str = "tanh"  # rnn only: tanh | relu
    layers: int = 1  # stacked recurrent layers
    hidden: int = 256  # units per recurrent layer
    embed: int = 64  # character embedding size
    dropout: float = 0.0  # between layers and before the output layer


@dataclass(frozen=True)
class DataConfig:
    """How a corpus becomes a stream of symbol ids."""

    encoding: str = "utf-8"  # text encoding of every corpus file
    bytes: bool = False  # model raw bytes (vocabulary <= 256) instead of characters
    val_frac: float = 0.1  # the last fraction of the text is validation (as nanoGPT)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, run length, evaluation and hardware."""

    batch_size: int = 32  # parallel streams over the training text
    seq_len: int = 32  # characters per window of truncated backprop through time
    lr: float = 6e-3  # peak learning rate (AdamW)
    min_lr: float = 0.0  # learning rate at the end of the cosine decay
    warmup_steps: int = 20  # linear warmup before the cosine decay
    weight_decay: float = 0.1  # AdamW decoupled weight decay (recurrent and output matrices)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.99  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 turns clipping off)
    max_steps: int | None = None  # stop after this many optimiser steps
    max_epochs: float | None = 10.0  # stop after this many passes over the training text
    max_time: float | None = None  # stop after this many seconds; the schedule spans the time
    eval_every: int = 2000  # evaluate on the validation split every N steps (and at the end)
    eval_streams: int = 16  # validation is scored as this many stateful streams
    eval_chars: int = (
        0  # validation characters scored per evaluation; 0 = auto (<= 1/10 of the run)
    )
    log_every: int = 50  # write a metrics line every N steps
    seed: int = 1337  # seeds every random number generator
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # torch CPU threads; 0 = auto (torch's default, capped by the CPU quota)
    precision: str = "auto"  # auto (bf16 on CUDA, else fp32) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile the model (CUDA only pays off)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; saved with every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (JSON and checkpoint friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, nested: dict[str, dict[str, Any]]) -> RunConfig:
        """Inverse of `to_dict`; keys unknown to this version are ignored (older readers)."""
        sections = {}
        for name, section_cls in _SECTIONS.items():
            known = {f.name for f in fields(section_cls)}
            values = {k: v for k, v in nested.get(name, {}).items() if k in known}
            sections[name] = section_cls(**values)
        return cls(**sections)

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with flat keys (``hidden=256``) replaced, validated."""
        return apply_overrides(self, flat, source="override")


_SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _key_sections() -> dict[str, str]:
    """Map each flat key to the section that holds it."""
    return {f.name: name for name, cls in _SECTIONS.items() for f in fields(cls)}


def _field_types() -> dict[str, Any]:
    defaults = RunConfig()
    return {
        key: type(getattr(getattr(defaults, section), key))
        for key, section in _key_sections().items()
    }


_INT_KEYS = {"max_steps"}
_FLOAT_KEYS = {"max_epochs", "max_time"}


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check a value's type against the field it sets; accept ints for floats."""
    if value is None:
        if key in _INT_KEYS | _FLOAT_KEYS:
            return None
        raise UsageError(f"{source}: '{key}' cannot be empty")
    if key == "max_time" and isinstance(value, str):
        return parse_duration(value)
    expected = int if key in _INT_KEYS else float if key in _FLOAT_KEYS else _field_types()[key]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise UsageError(f"{source}: '{key}' is too large: {value}") from None
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise UsageError(
            f"{source}: '{key}' must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def apply_overrides(config: RunConfig, flat: dict[str, Any], source: str) -> RunConfig:
    """Return `config` with flat keys replaced; unknown keys are a `UsageError` naming the key."""
    key_sections = _key_sections()
    changes: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in flat.items():
        if key not in key_sections:
            raise UsageError(f"{source}: unknown configuration key '{key}'")
        changes[key_sections[key]][key] = _coerce(key, value, source)
    updated = RunConfig(
        **{
            name: dataclasses.replace(getattr(config, name), **values)
            for name, values in changes.items()
        }
    )
    validate(updated)
    return updated


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '1.5m', '2h' or '1d'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise UsageError(f"cannot read duration {text!r}: use e.g. 90s, 10m or 2h")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * scale


def presets_dir() -> Path:
    """The folder of shipped presets: charrnn/configs (a link to configs/ in a checkout)."""
    packaged = Path(str(resources.files("charrnn"))) / "configs"
    checkout = Path(__file__).resolve().parent.parent / "configs"
    return packaged if packaged.is_dir() else checkout


def preset_names() -> list[str]:
    """Names of the presets shipped in configs/."""
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def read_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML into a flat dict; tables are not allowed (keys are flat)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: malformed TOML: {exc}") from None
    for key, value in table.items():
        if isinstance(value, dict):
            raise UsageError(f"{source}: unknown configuration key '{key}' (keys are flat)")
    return table


def load_preset(name: str) -> dict[str, Any]:
    """The flat keys of a shipped preset."""
    if name not in preset_names():
        raise UsageError(f"unknown preset '{name}'; choose from {', '.join(preset_names())}")
    text = (presets_dir() / f"{name}.toml").read_text("utf-8")
    return read_toml(text, f"preset {name}")


def load_config_file(path: Path) -> dict[str, Any]:
    """The flat keys of a user's TOML file."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    return read_toml(text, str(path))


def resolve_config(
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults <- preset <- config file <- command-line flags (None means 'not given')."""
    config = RunConfig()
    if preset is not None:
        config = apply_overrides(config, load_preset(preset), f"preset {preset}")
    if config_file is not None:
        config = apply_overrides(config, load_config_file(config_file), str(config_file))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return apply_overrides(config, given, "command line")


# What may change when a run is resumed: how long it goes on and where it runs, nothing that
# would make the resumed run differ from one that was never stopped.
RESUMABLE_KEYS = frozenset(
    {
        "max_steps",
        "max_epochs",
        "max_time",
        "eval_every",
        "log_every",
        "device",
        "threads",
        "precision",
        "compile",
    }
)
# Fine-tuning keeps the network of the checkpoint it starts from.
MODEL_KEYS = frozenset(f.name for f in fields(ModelConfig))


def given_keys(overrides: dict[str, Any]) -> set[str]:
    """The flat keys the command line actually set (None means not given)."""
    return {key for key, value in overrides.items() if value is not None}


def resume_config(saved: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A saved run's config with only run-length, logging and device settings changed."""
    refused = sorted(given_keys(overrides) - RESUMABLE_KEYS)
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
        raise UsageError(
            f"--resume continues the saved configuration; {flags} cannot change "
            "(start a new run with --init-from to change them)"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    return apply_overrides(saved, given, "command line")


MAX_PARAMETERS = 2_000_000_000  # beyond this a model cannot train on any single machine
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MAX_THREADS = 1024


def validate_threads(threads: int) -> None:
    """Raise `UsageError` unless `threads` is 0 (auto) or a sane count."""
    _check(
        0 <= threads <= MAX_THREADS, f"threads must be between 0 and {MAX_THREADS}, got {threads}"
    )


def recurrent_parameters(model: ModelConfig) -> int:
    """Weights and biases of the recurrent layers (the embedding and output are extra)."""
    gates = GATES.get(model.cell, 1)
    first = gates * model.hidden * (model.embed + model.hidden + 2)
    rest = gates * model.hidden * (2 * model.hidden + 2) * (model.layers - 1)
    return first + rest


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def validate(config: RunConfig) -> None:
    """Raise `UsageError` for the first value out of range."""
    m, d, t = config.model, config.data, config.train
    _check(m.cell in CELLS, f"unknown cell '{m.cell}'; choose from {', '.join(CELLS)}")
    _check(
        m.nonlinearity in NONLINEARITIES,
        f"unknown nonlinearity '{m.nonlinearity}'; choose tanh or relu",
    )
    _check(1 <= m.layers <= 64, f"layers must be between 1 and 64, got {m.layers}")
    _check(1 <= m.hidden <= 16384, f"hidden must be between 1 and 16384, got {m.hidden}")
    _check(1 <= m.embed <= 16384, f"embed must be between 1 and 16384, got {m.embed}")
    _check(0.0 <= m.dropout < 1.0, f"dropout must be in [0, 1), got {m.dropout}")
    parameters = recurrent_parameters(m)
    _check(
        parameters <= MAX_PARAMETERS,
        f"a {m.layers} x {m.hidden} {m.cell} has {parameters:,} recurrent parameters; "
        f"the limit is {MAX_PARAMETERS:,} (use fewer --layers or a smaller --hidden)",
    )
    _check(bool(d.encoding), "encoding cannot be empty")
    _check(0.0 < d.val_frac < 1.0, f"val_frac must be in (0, 1), got {d.val_frac}")
    _check(
        1 <= t.batch_size <= 65536, f"batch_size must be between 1 and 65536, got {t.batch_size}"
    )
    _check(1 <= t.seq_len <= 1_000_000, f"seq_len must be between 1 and 1000000, got {t.seq_len}")
    _check(math.isfinite(t.lr) and t.lr > 0, f"lr must be positive, got {t.lr}")
    _check(
        math.isfinite(t.min_lr) and 0 <= t.min_lr <= t.lr,
        f"min_lr must be between 0 and lr ({t.lr}), got {t.min_lr}",
    )
    _check(t.warmup_steps >= 0, f"warmup_steps cannot be negative, got {t.warmup_steps}")
    _check(t.weight_decay >= 0, f"weight_decay cannot be negative, got {t.weight_decay}")
    _check(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "beta1 and beta2 must be in [0, 1)")
    _check(t.grad_clip >= 0, f"grad_clip cannot be negative (0 turns it off), got {t.grad_clip}")
    _check(t.max_steps is None or t.max_steps >= 1, f"max_steps must be >= 1, got {t.max_steps}")
    _check(
        t.max_epochs is None or 0 < t.max_epochs < math.inf,  # inf would overflow the step budget
        f"max_epochs must be a positive number, got {t.max_epochs}",
    )
    _check(t.max_time is None or t.max_time > 0, f"max_time must be > 0, got {t.max_time}")
    _check(
        not (t.max_steps is None and t.max_epochs is None and t.max_time is None),
        "give at least one of max_steps, max_epochs or max_time",
    )
    _check(t.eval_every >= 1, f"eval_every must be >= 1, got {t.eval_every}")
    _check(t.eval_streams >= 1, f"eval_streams must be >= 1, got {t.eval_streams}")
    _check(t.eval_chars >= 0, f"eval_chars cannot be negative (0 = auto), got {t.eval_chars}")
    _check(t.log_every >= 1, f"log_every must be >= 1, got {t.log_every}")
    # The range torch.manual_seed accepts.
    _check(-(2**63) <= t.seed < 2**64, f"seed must be between -2**63 and 2**64 - 1, got {t.seed}")
    _check(t.device in DEVICES, f"unknown device '{t.device}'; choose from {', '.join(DEVICES)}")
    validate_threads(t.threads)
    _check(
        t.precision in PRECISIONS,
        f"unknown precision '{t.precision}'; choose from {', '.join(PRECISIONS)}",
    )


# ----------------------------------------------------------------------------- sampling

UNKNOWN_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class SampleConfig:
    """How to draw characters."""

    length: int = 500  # new characters per sample (the prime is not counted)
    temperature: float = 0.8  # < 1 is more conservative, > 1 more surprising
    top_k: int | None = None  # keep only the k most likely characters
    top_p: float | None = None  # keep the smallest set whose probability reaches p
    greedy: bool = False  # always take the most likely character
    seed: int | None = None  # None draws a fresh seed
    num_samples: int = 1  # samples generated together as one batch
    stop: str | None = None  # end a sample where this text appears (not included)
    unknown: str = "error"  # prime characters outside the vocabulary: error | skip


def validate_sample_config(config: SampleConfig) -> None:
    """Raise `UsageError` for the first value out of range."""
    if config.length < 0:
        raise UsageError(f"length cannot be negative, got {config.length}")
    if not config.temperature > 0:
        raise UsageError(f"temperature must be > 0, got {config.temperature}")
    if config.top_k is not None and config.top_k < 1:
        raise UsageError(f"top-k must be >= 1, got {config.top_k}")
    if config.top_p is not None and not 0 < config.top_p <= 1:
        raise UsageError(f"top-p must be in (0, 1], got {config.top_p}")
    if not 1 <= config.num_samples <= 4096:
        raise UsageError(f"num-samples must be between 1 and 4096, got {config.num_samples}")
    if config.stop == "":
        raise UsageError("stop text cannot be empty")
    if config.unknown not in UNKNOWN_POLICIES:
        raise UsageError(f"unknown policy '{config.unknown}'; choose error or skip")
    if config.seed is not None and not -(2**63) <= config.seed < 2**64:
        raise UsageError(f"seed must be between -2**63 and 2**64 - 1, got {config.seed}")
