"""Configuration as data: frozen dataclasses with defaults, TOML presets, one validation pass.

Every setting is declared once, as a dataclass field made by `setting`: its default, the one line
of help `--help` shows, its help panel and whether it may change on `--resume`. The `train` and
`sample` options, the keys a TOML file may set and the `--resume` rules are all read from these
declarations. Keys are flat and equal to the command-line flags (``--batch-size`` is
``batch_size``), so a TOML file, a preset and the command line speak the same names. The defaults
below *are* the ``small`` preset: the recipe tuned for the best validation loss in a short CPU run.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import re
import sys
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from charrnn.errors import UsageError


class Choice(str, enum.Enum):
    """The words an option takes. A member added here is a choice of the setting everywhere:
    `--help` lists it, shell completion offers it, validation accepts it. Values are kept as plain
    text in configurations, config.json and checkpoints (which load with weights_only=True)."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The words, in declaration order."""
        return tuple(member.value for member in cls)


class Cell(Choice):
    """`--cell`: the recurrent layer."""

    LSTM = "lstm"
    GRU = "gru"
    RNN = "rnn"
    MINGRU = "mingru"  # gates from the input only: one product per window (model/network.py)


class Nonlinearity(Choice):
    """`--nonlinearity` of `--cell rnn`."""

    TANH = "tanh"
    RELU = "relu"


class Device(Choice):
    """`--device`: auto picks CUDA, then MPS, then the CPU (sampling: the CPU)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(Choice):
    """`--precision` of training."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class NormalForm(Choice):
    """`--normalize`: the Unicode normal form of the text."""

    NONE = "none"
    NFC = "nfc"
    NFKC = "nfkc"


class UnknownPolicy(Choice):
    """`sample --unknown`: what becomes of prime characters the model never saw."""

    ERROR = "error"
    SKIP = "skip"


class UnitState(Choice):
    """`inspect --state`: which value of a unit colours the text."""

    C = "c"  # an LSTM's cell state
    H = "h"  # the output


class ExportDtype(Choice):
    """`export --dtype`: the storage type of the weights (model/quantize.py maps it to torch)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class Quantize(Choice):
    """`export --quantize`: none, or int8 weight matrices with one scale per row."""

    NONE = "none"
    INT8 = "int8"


class ExportFormat(Choice):
    """`export --format`: a checkpoint, a self-contained web page or an ONNX graph."""

    PT = "pt"
    HTML = "html"
    ONNX = "onnx"


DYNAMIC_LR = 0.1  # SGD step of `eval --dynamic`: the best of a grid on tiny Shakespeare
DEFAULT_PRESET = "small"
# Every command's device: CUDA, then MPS, then the CPU (sampling: the CPU).
DEFAULT_DEVICE = Device.AUTO.value

# Runs go to runs/<corpus>-<time> unless --out says otherwise; encoded corpora are cached beside
# the runs that use them, so a default run's cache is runs/.cache (where `prepare` writes too).
RUNS_DIR = Path("runs")
CACHE_DIR_NAME = ".cache"
DEFAULT_CACHE_DIR = RUNS_DIR / CACHE_DIR_NAME

# The help panels of `charrnn train --help`.
MODEL_PANEL = "Model"
DATA_PANEL = "Data"
OPTIM_PANEL = "Optimisation"
LENGTH_PANEL = "Run length and evaluation"
RUN_PANEL = "Run"

DEVICE_HELP = "Where to run: auto is CUDA, then MPS, then the CPU."
THREADS_HELP = (
    "CPU threads for torch; 0 = auto (the cores other programs leave free, re-checked "
    "every second). N fixes the count."
)


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '1.5m', '2h' or '1d'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise UsageError(f"cannot read duration {text!r}: use e.g. 90s, 10m or 2h")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * scale


def format_duration(seconds: float) -> str:
    """`seconds` as `parse_duration` reads it, in the largest whole unit: 300 is '5m'."""
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= scale and seconds % scale == 0:
            return f"{seconds / scale:g}{unit}"
    return f"{seconds:g}s"


# ----------------------------------------------------------------------------- declaring settings


def setting(
    default: Any,
    help: str,
    panel: str | None = None,
    *,
    resumable: bool = False,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: type[Choice] | None = None,
) -> Any:
    """A dataclass field declaring one setting.

    `resumable`: it may change on `--resume` (it cannot make the run differ from one never
    stopped). `flag`: the option's spelling when not ``--key-name`` (``"--bytes/--chars"``).
    `parse`: how text sets it where its type is not text (durations); the command line passes text.
    `choices`: the words it takes (its value stays text; `validate` checks it).
    """
    info = dict(
        help=help, panel=panel, resumable=resumable, flag=flag, parse=parse, choices=choices
    )
    return field(default=default, metadata={"setting": info})


@dataclass(frozen=True)
class Setting:
    """One declared setting: its dataclass field joined with what `setting` said about it."""

    name: str
    default: Any
    type: type  # the type of a value (int for a field declared `int | None`)
    optional: bool  # None is a value: no limit, or not set
    help: str
    panel: str | None
    resumable: bool
    flag: str | None
    parse: Callable[[str], Any] | None
    choices: type[Choice] | None

    @property
    def option(self) -> str:
        """The command-line option that sets it (``--batch-size``, ``--bytes``)."""
        return (self.flag or "--" + self.name.replace("_", "-")).split("/")[0]


@functools.cache
def declared_settings(cls: type) -> tuple[Setting, ...]:
    """The settings a configuration dataclass declares, in declaration order."""
    hints = typing.get_type_hints(cls)
    declared = []
    for f in fields(cls):
        values = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
        declared.append(
            Setting(
                name=f.name,
                default=f.default,
                type=values[0] if values else hints[f.name],
                optional=type(None) in typing.get_args(hints[f.name]),
                **f.metadata["setting"],
            )
        )
    return tuple(declared)


def _flag_list(keys: Collection[str]) -> str:
    """'--hidden, --layers' for the keys `hidden` and `layers`, sorted."""
    return ", ".join("--" + key.replace("_", "-") for key in sorted(keys))


# ----------------------------------------------------------------------------- training settings


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network: embedding -> stacked recurrent layers -> linear to the vocabulary.

    `--init-from` keeps all of it from the checkpoint it starts from.
    """

    cell: str = setting(Cell.LSTM.value, "The recurrent cell.", MODEL_PANEL, choices=Cell)
    nonlinearity: str = setting(
        Nonlinearity.TANH.value,
        "For --cell rnn: its activation.",
        MODEL_PANEL,
        choices=Nonlinearity,
    )
    layers: int = setting(1, "Stacked recurrent layers.", MODEL_PANEL)
    hidden: int = setting(256, "Units per recurrent layer.", MODEL_PANEL)
    embed: int = setting(64, "Character embedding size.", MODEL_PANEL)
    dropout: float = setting(
        0.0, "Dropout in [0, 1) between layers and before the output.", MODEL_PANEL
    )


@dataclass(frozen=True)
class DataConfig:
    """How a corpus becomes a stream of symbol ids."""

    encoding: str = setting("utf-8", "Text encoding of the corpus files.", DATA_PANEL)
    bytes: bool = setting(  # the vocabulary is then at most 256 symbols
        False, "Model raw bytes instead of characters.", DATA_PANEL, flag="--bytes/--chars"
    )
    val_frac: float = setting(  # the last tenth, as nanoGPT's shakespeare_char: numbers compare
        0.1, "Fraction of the text, at its end, kept for validation.", DATA_PANEL
    )
    # Preprocessing (text/preprocess.py): stored with the run and applied again to primes and
    # eval files. None of it may change on --resume: the corpus would become another text.
    lowercase: bool = setting(False, "Lower-case the text.", DATA_PANEL)
    ascii: bool = setting(
        False, "Fold accents to ASCII (é -> e); drop characters with no ASCII form.", DATA_PANEL
    )
    normalize: str = setting(
        NormalForm.NONE.value,
        "Unicode normal form (none: as written).",
        DATA_PANEL,
        choices=NormalForm,
    )
    strip_control: bool = setting(
        False, "Remove ANSI escapes and control characters but newline and tab.", DATA_PANEL
    )
    min_char_count: int = setting(  # 0: no unknown symbol, unseen characters are errors
        0,
        "Characters seen fewer than N times become one unknown symbol, which also stands for "
        "unseen characters in primes and eval files; 0 = off.",
        DATA_PANEL,
    )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, run length, evaluation and hardware.

    What may change on `--resume` is how long the run goes on, how often it reports and where it
    runs: nothing that would make the resumed run differ from one that was never stopped.
    """

    batch_size: int = setting(32, "Parallel streams per step.", OPTIM_PANEL)
    seq_len: int = setting(32, "Characters per window of truncated backprop.", OPTIM_PANEL)
    lr: float = setting(6e-3, "Peak learning rate (AdamW).", OPTIM_PANEL)
    min_lr: float = setting(0.0, "Learning rate at the end of the cosine decay.", OPTIM_PANEL)
    warmup_steps: int = setting(20, "Steps of linear warmup.", OPTIM_PANEL)
    weight_decay: float = setting(0.1, "AdamW weight decay (matrices only).", OPTIM_PANEL)
    beta1: float = setting(0.9, "AdamW beta1.", OPTIM_PANEL)
    beta2: float = setting(0.99, "AdamW beta2.", OPTIM_PANEL)
    grad_clip: float = setting(1.0, "Clip the gradient norm to this; 0 turns it off.", OPTIM_PANEL)
    max_steps: int | None = setting(
        None, "Stop after this many steps (default: no limit).", LENGTH_PANEL, resumable=True
    )
    max_epochs: float | None = setting(
        10.0, "Stop after this many passes over the training text.", LENGTH_PANEL, resumable=True
    )
    max_time: float | None = setting(  # seconds
        None,
        "Stop after this long (90s, 10m, 2h); the schedule spans it (default: no limit).",
        LENGTH_PANEL,
        resumable=True,
        parse=parse_duration,
    )
    eval_every: int = setting(
        2000, "Evaluate and checkpoint every N steps.", LENGTH_PANEL, resumable=True
    )
    eval_streams: int = setting(  # not resumable: the stream count changes the scores
        16, "Score validation as this many stateful streams.", LENGTH_PANEL
    )
    eval_chars: int = setting(  # not resumable: the prefix changes the scores
        0,
        "Validation characters scored at each evaluation, a fixed prefix; "
        "0 = auto (evaluation takes under ~1/10 of the run).",
        LENGTH_PANEL,
    )
    log_every: int = setting(
        50, "Write a metrics line every N steps.", LENGTH_PANEL, resumable=True
    )
    preview_chars: int = setting(  # drawn with its own generator: the run is the same without
        160,
        "Characters of sample text shown under the bar at each evaluation; 0 = none.",
        LENGTH_PANEL,
        resumable=True,
    )
    seed: int = setting(1337, "Random seed (same seed, same machine: same run).", RUN_PANEL)
    device: str = setting(DEFAULT_DEVICE, DEVICE_HELP, RUN_PANEL, resumable=True, choices=Device)
    threads: int = setting(0, THREADS_HELP, RUN_PANEL, resumable=True)
    precision: str = setting(
        Precision.AUTO.value,
        "auto: bf16 on CUDA; on a CPU, by rule: bf16 where the CPU has bf16 instructions and the "
        "model is large enough for them to pay, else fp32 (a resume keeps the choice).",
        RUN_PANEL,
        resumable=True,
        choices=Precision,
    )
    compile: bool = setting(
        False, "torch.compile the model.", RUN_PANEL, resumable=True, flag="--compile/--no-compile"
    )
    collective_timeout: float = setting(  # seconds; bounds the wait for a rank that died or hung
        300.0,
        "Under torchrun: how long a rank waits for the others before the job stops.",
        RUN_PANEL,
        resumable=True,
        parse=parse_duration,
    )
    auto: bool = setting(  # not resumable: the choice is made once, recorded in config.json
        False,
        "Choose layers, hidden, batch, window, lr and dropout for the corpus and --max-time, "
        "after a short probe of this machine's speed; flags given with it are kept.",
        MODEL_PANEL,
        flag="--auto/--no-auto",
    )


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
TRAINING_SETTINGS = tuple(s for cls in _SECTIONS.values() for s in declared_settings(cls))
# What may change when a run is resumed, and what `--init-from` takes from its checkpoint.
RESUMABLE_KEYS = frozenset(s.name for s in TRAINING_SETTINGS if s.resumable)
MODEL_KEYS = frozenset(s.name for s in declared_settings(ModelConfig))
TRAINING_KEYS = frozenset(s.name for s in TRAINING_SETTINGS)
# What `--auto` chooses unless the command line or a --config file sets it.
AUTO_KEYS = frozenset({"layers", "hidden", "batch_size", "seq_len", "lr", "dropout", "precision"})


def _key_sections() -> dict[str, str]:
    """Map each flat key to the section that holds it."""
    return {s.name: name for name, cls in _SECTIONS.items() for s in declared_settings(cls)}


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    """Check a value's type against the setting it sets; accept ints for floats."""
    key, expected = setting.name, setting.type
    if value is None:
        if setting.optional:
            return None
        raise UsageError(f"{source}: '{key}' cannot be empty")
    if setting.parse is not None and isinstance(value, str):
        return setting.parse(value)
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
    declared = {s.name: s for s in TRAINING_SETTINGS}
    changes: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in flat.items():
        if key not in key_sections:
            raise UsageError(f"{source}: unknown configuration key '{key}'")
        changes[key_sections[key]][key] = _coerce(declared[key], value, source)
    updated = RunConfig(
        **{
            name: dataclasses.replace(getattr(config, name), **values)
            for name, values in changes.items()
        }
    )
    validate(updated)
    return updated


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


def given_keys(overrides: dict[str, Any]) -> set[str]:
    """The flat keys the command line actually set (None means not given)."""
    return {key for key, value in overrides.items() if value is not None}


# What `charrnn train` takes to start a run; `--resume` takes them from the saved run instead.
NEW_RUN_INPUTS = frozenset({"corpus", "preset", "config", "out", "init_from"})


def check_resume_flags(given: Collection[str]) -> None:
    """Raise `UsageError` unless `given` either starts a run from a corpus or resumes one
    changing only resumable settings.

    `given` names what the command line set: setting keys, and `resume` or the keys of
    `NEW_RUN_INPUTS` for the run options of the same names.
    """
    given = set(given)
    if "resume" not in given:
        if "corpus" not in given:
            raise UsageError("give a CORPUS to train on (or --resume RUN_DIR)")
        return
    if given & NEW_RUN_INPUTS:
        raise UsageError(
            "--resume takes the corpus, settings and directory of the saved run; "
            "give only run-length, logging and device options with it"
        )
    refused = (given & TRAINING_KEYS) - RESUMABLE_KEYS
    if refused:
        raise UsageError(
            f"--resume continues the saved configuration; {_flag_list(refused)} cannot change "
            "(start a new run with --init-from to change them)"
        )


def check_init_from_flags(
    given: Collection[str], *, bytes_: bool | None = None, checkpoint_bytes: bool | None = None
) -> None:
    """Raise `UsageError` where `--init-from` (`init_from` in `given`, as for
    `check_resume_flags`) meets a setting it cannot honour: a model-shape flag, since the
    checkpoint's network is kept, or, once the checkpoint is read, a different `--bytes`."""
    if "init_from" not in given:
        return
    if "auto" in given:
        raise UsageError("--init-from keeps the checkpoint's network; --auto cannot choose one")
    shape_flags = set(given) & MODEL_KEYS
    if shape_flags:
        raise UsageError(
            f"--init-from keeps the checkpoint's network; {_flag_list(shape_flags)} cannot change"
        )
    if checkpoint_bytes is not None and checkpoint_bytes != bytes_:
        raise UsageError("--init-from: the checkpoint and --bytes disagree on bytes vs characters")


def check_train_options(settings: dict[str, Any], **run_options: Any) -> None:
    """Raise `UsageError` for a `train` request that neither starts a run nor resumes one
    cleanly (see `check_resume_flags`, `check_init_from_flags`); `run_options` are `corpus`
    and the keys of `NEW_RUN_INPUTS` and `resume`, None (or empty) when not given."""
    given = given_keys({**{k: v or None for k, v in run_options.items()}, **settings})
    check_resume_flags(given)
    check_init_from_flags(given)
    check_auto_flags(settings.get("auto"), run_options.get("preset"))


def check_auto_flags(auto: bool | None, preset: str | None) -> None:
    """Raise `UsageError` for `--auto` with `--preset`: a preset is a model choice of its own."""
    if auto and preset is not None:
        raise UsageError(
            "--auto chooses the model itself; give --preset or --auto, not both "
            "(flags given with --auto are kept)"
        )


# A new run given at least this long and no model of the user's is sized by --auto unasked.
# Measured (benchmarks/RESULTS.md, "Quality for time"): at 90 s --auto picks the default's own
# 1 x 256 and would only spend its probe; from a few minutes on, the default model ends its
# 10 passes before the budget does, while --auto's larger model uses the time.
AUTO_BY_DEFAULT_FROM_S = 180.0
AUTO_UNASKED = (
    f"chosen because --max-time is {format_duration(AUTO_BY_DEFAULT_FROM_S)} or more and no "
    "model was given; --no-auto keeps the default model"
)


def auto_by_default(settings: dict[str, Any], **run_options: Any) -> bool:
    """Whether a new run is sized by `--auto` without being asked: it has `--max-time` of at
    least `AUTO_BY_DEFAULT_FROM_S` and the user chose nothing about the model (no `--auto` or
    `--no-auto`, `--preset`, `--config`, `--init-from`, `--resume`, nor a key of `AUTO_KEYS`
    but `precision`). `run_options` as for `check_train_options`."""
    chosen = given_keys({**{k: v or None for k, v in run_options.items()}, **settings})
    model_choices = (AUTO_KEYS - {"precision"}) | {
        "auto",
        "preset",
        "config",
        "init_from",
        "resume",
    }
    if chosen & model_choices:
        return False
    max_time = settings.get("max_time")
    if isinstance(max_time, str):
        max_time = parse_duration(max_time)
    return max_time is not None and max_time >= AUTO_BY_DEFAULT_FROM_S


def auto_kept_keys(config_file: Path | None, overrides: dict[str, Any]) -> set[str]:
    """With `--auto`, the keys it must leave as the user set them: those of `AUTO_KEYS` given
    as flags or in the `--config` file."""
    from_file = set(load_config_file(config_file)) if config_file is not None else set()
    return (from_file | given_keys(overrides)) & AUTO_KEYS


def resume_config(saved: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A saved run's config with only run-length, logging and device settings changed."""
    check_resume_flags({"resume", *given_keys(overrides)})
    given = {k: v for k, v in overrides.items() if v is not None}
    return apply_overrides(saved, given, "command line")


MAX_PARAMETERS = 2_000_000_000  # beyond this a model cannot train on any single machine
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "mingru": 2}
MAX_THREADS = 1024


def validate_threads(threads: int) -> None:
    """Raise `UsageError` unless `threads` is 0 (auto) or a sane count."""
    _check(
        0 <= threads <= MAX_THREADS, f"threads must be between 0 and {MAX_THREADS}, got {threads}"
    )


MAX_PREVIEW_CHARS = 10_000  # two lines of it under the bar; more is not a preview
MIN_EVAL_CHARS = 100_000  # below this, validation losses are too noisy to compare


def evaluation_chars(config: TrainConfig, n_val: int) -> int:
    """Validation characters scored at each evaluation during training (a fixed prefix).

    `eval_chars`, or for 0 (auto) a quarter of the characters trained between two evaluations,
    at least `MIN_EVAL_CHARS`: scoring a character costs about a third of training on one
    (benchmarks/RESULTS.md), so evaluation takes under a tenth of the run on any corpus size.
    Never more than the split.
    """
    if config.eval_chars:
        return min(n_val, config.eval_chars)
    between = config.eval_every * config.batch_size * config.seq_len
    return min(n_val, max(MIN_EVAL_CHARS, between // 4))


def recurrent_parameters(model: ModelConfig) -> int:
    """Weights and biases of the recurrent layers (the embedding and output are extra)."""
    gates = GATES.get(model.cell, 1)
    if model.cell == "mingru":  # no hidden-to-hidden weights, one bias per row
        return gates * model.hidden * (model.embed + 1 + (model.hidden + 1) * (model.layers - 1))
    first = gates * model.hidden * (model.embed + model.hidden + 2)
    rest = gates * model.hidden * (2 * model.hidden + 2) * (model.layers - 1)
    return first + rest


def count_parameters(model: ModelConfig, vocab_size: int) -> int:
    """Parameters of a `CharRNN` of this shape: embedding, recurrent layers, output layer."""
    return (
        vocab_size * model.embed
        + recurrent_parameters(model)
        + model.hidden * vocab_size
        + vocab_size
    )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def validate(config: RunConfig) -> None:
    """Raise `UsageError` for the first value out of range."""
    m, d, t = config.model, config.data, config.train
    _check(
        m.cell in Cell.values(), f"unknown cell '{m.cell}'; choose from {', '.join(Cell.values())}"
    )
    _check(
        m.nonlinearity in Nonlinearity.values(),
        f"unknown nonlinearity '{m.nonlinearity}'; choose {' or '.join(Nonlinearity.values())}",
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
        d.normalize in NormalForm.values(),
        f"unknown normal form '{d.normalize}'; choose from {', '.join(NormalForm.values())}",
    )
    _check(
        0 <= d.min_char_count <= 2**40,
        f"min_char_count must be between 0 (off) and 2**40, got {d.min_char_count}",
    )
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
    _check(
        not t.auto or t.max_time is not None,
        "--auto chooses the model for a time budget; give --max-time (e.g. 10m)",
    )
    _check(t.eval_every >= 1, f"eval_every must be >= 1, got {t.eval_every}")
    _check(t.eval_streams >= 1, f"eval_streams must be >= 1, got {t.eval_streams}")
    _check(t.eval_chars >= 0, f"eval_chars cannot be negative (0 = auto), got {t.eval_chars}")
    _check(t.log_every >= 1, f"log_every must be >= 1, got {t.log_every}")
    _check(
        0 <= t.preview_chars <= MAX_PREVIEW_CHARS,
        f"preview_chars must be between 0 and {MAX_PREVIEW_CHARS}, got {t.preview_chars}",
    )
    # The range torch.manual_seed accepts.
    _check(-(2**63) <= t.seed < 2**64, f"seed must be between -2**63 and 2**64 - 1, got {t.seed}")
    _check(
        t.device in Device.values(),
        f"unknown device '{t.device}'; choose from {', '.join(Device.values())}",
    )
    validate_threads(t.threads)
    _check(
        math.isfinite(t.collective_timeout) and t.collective_timeout >= 1,
        f"collective_timeout must be at least 1 second, got {t.collective_timeout}",
    )
    _check(
        t.precision in Precision.values(),
        f"unknown precision '{t.precision}'; choose from {', '.join(Precision.values())}",
    )


# ----------------------------------------------------------------------------- sampling

DEFAULT_TEMPERATURE = 0.8
MAX_BEAM = 4096


@dataclass(frozen=True)
class SampleConfig:
    """How to draw characters; each field is a `charrnn sample` option."""

    length: int = setting(500, "New characters per sample.")  # the prime is not counted
    temperature: float = setting(DEFAULT_TEMPERATURE, "Below 1: safer text; above 1: wilder.")
    top_k: int | None = setting(None, "Draw only from the K most likely characters (default: all).")
    top_p: float | None = setting(
        None,
        "Draw only from the most likely characters whose probability adds to P (default: all).",
    )
    greedy: bool = setting(False, "Always take the most likely character.", flag="--greedy")
    seed: int | None = setting(
        None, "Random seed for the same text again (default: a fresh one)."
    )  # None: a fresh one
    num_samples: int = setting(1, "Samples to generate, as one batch.")
    stop: str | None = setting(  # the text itself is not included
        None, r"End a sample where this text appears (\n, \t understood; default: never)."
    )
    unknown: str = setting(
        UnknownPolicy.ERROR.value,
        "Prime characters the model never saw: an error, or skipped.",
        choices=UnknownPolicy,
    )
    beam: int = setting(  # 0: sample
        0,
        "Beam search with N beams: the most likely text (by mean log-probability per "
        "character) instead of a random one; 0 samples.",
    )


# A temperature below this draws greedily, however it was given: 1 / temperature scales the
# logits, and past this their float32 values overflow (inf - inf is NaN, whose argmax is garbage).
GREEDY_BELOW = 1e-6


def as_drawn(config: SampleConfig) -> SampleConfig:
    """`config` as a draw reads it: a temperature below `GREEDY_BELOW` is `greedy`."""
    if config.greedy or config.temperature >= GREEDY_BELOW:
        return config
    return replace(config, greedy=True)


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
    if config.unknown not in UnknownPolicy.values():
        raise UsageError(
            f"unknown policy '{config.unknown}'; choose {' or '.join(UnknownPolicy.values())}"
        )
    if config.seed is not None and not -(2**63) <= config.seed < 2**64:
        raise UsageError(f"seed must be between -2**63 and 2**64 - 1, got {config.seed}")
    if not 0 <= config.beam <= MAX_BEAM:
        raise UsageError(f"beam must be between 0 (sample) and {MAX_BEAM}, got {config.beam}")
    if config.beam:
        check_beam_options(config)


def check_beam_options(config: SampleConfig) -> None:
    """Raise `UsageError` for a sampling option given with `--beam`: the search ranks texts by
    the model's own probabilities, so what shapes a random draw does not apply."""
    sampling_only = [
        flag
        for flag, given in (
            ("--temperature", config.temperature != DEFAULT_TEMPERATURE),
            ("--top-k", config.top_k is not None),
            ("--top-p", config.top_p is not None),
            ("--greedy", config.greedy),
            ("--seed", config.seed is not None),
        )
        if given
    ]
    if sampling_only:
        verb = "applies" if len(sampling_only) == 1 else "apply"
        raise UsageError(
            f"--beam searches for the most likely text; {', '.join(sampling_only)} "
            f"only {verb} to sampling"
        )
    if config.num_samples > config.beam:
        raise UsageError(
            f"--beam {config.beam} finds at most {config.beam} texts; "
            f"--num-samples {config.num_samples} asks for more"
        )


# ----------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class ServeConfig:
    """How `charrnn serve` listens and what one request may ask for; each field is an option."""

    host: str = setting("127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
    port: int = setting(8000, "Port to listen on (0: any free port).")
    name: str | None = setting(None, "The model's name in the API (default: the run's name).")
    api_key: str | None = setting(
        None, "Require 'Authorization: Bearer KEY' on all but /health (default: no key)."
    )
    max_tokens: int = setting(4096, "Most characters one completion may ask for.")
    max_n: int = setting(16, "Most completions one request may ask for (n x prompts).")
    max_streams: int = setting(
        64, "Most completions generated at once; more get 429 until one ends."
    )
    max_body: int = setting(1_000_000, "Largest request body in bytes.")
    max_prompt: int = setting(100_000, "Longest prompt (or text to score) in characters.")
    max_response: int = setting(
        4_000_000,
        "Largest response in bytes, bounded from the request before any work (400 beyond).",
    )
    request_timeout: float = setting(
        300.0, "Seconds a request may take before it is ended (10m, 1h understood).",
        parse=parse_duration,
    )  # fmt: skip
    idle_timeout: float = setting(
        5.0, "Seconds an idle keep-alive connection stays open.", parse=parse_duration
    )
    unknown: str = setting(
        UnknownPolicy.ERROR.value,
        "Prompt characters the model never saw: an error (a 400), or skipped.",
        choices=UnknownPolicy,
    )


def read_serve_config(values: dict[str, Any]) -> ServeConfig:
    """The serve settings from option values (durations may be text such as '10m'), checked."""
    declared = {s.name: s for s in declared_settings(ServeConfig)}
    config = ServeConfig(**{key: _coerce(declared[key], v, "serve") for key, v in values.items()})
    validate_serve_config(config)
    return config


def validate_serve_config(config: ServeConfig) -> None:
    """Raise `UsageError` for the first value out of range."""
    _check(0 <= config.port <= 65535, f"port must be between 0 and 65535, got {config.port}")
    _check(config.name != "", "name cannot be empty")
    _check(config.api_key != "", "api-key cannot be empty")
    for key in ("max_tokens", "max_n", "max_streams", "max_body", "max_prompt", "max_response"):
        value = getattr(config, key)
        _check(value >= 1, f"{key.replace('_', '-')} must be at least 1, got {value}")
    for key in ("request_timeout", "idle_timeout"):
        value = getattr(config, key)
        _check(
            math.isfinite(value) and value > 0,
            f"{key.replace('_', '-')} must be a positive duration, got {value}",
        )
    _check(
        config.unknown in UnknownPolicy.values(),
        f"unknown policy '{config.unknown}'; choose {' or '.join(UnknownPolicy.values())}",
    )


# ----------------------------------------------------------------------------- distillation

DISTILL_PANEL = "Distillation"


@dataclass(frozen=True)
class DistillConfig:
    """How `charrnn distill` mixes the teacher's softened predictions with the true characters.

    Saved with the student's checkpoints; a resumed distillation keeps them.
    """

    distill_temperature: float = setting(
        2.0, "Soften teacher and student predictions by this temperature.", DISTILL_PANEL
    )
    distill_alpha: float = setting(  # Hinton et al.: the soft term is scaled by temperature**2
        0.5,
        "Weight of the teacher's soft targets; 1 - alpha goes to the true next character.",
        DISTILL_PANEL,
    )


def validate_distill_config(config: DistillConfig) -> None:
    """Raise `UsageError` for the first value out of range."""
    temperature, alpha = config.distill_temperature, config.distill_alpha
    _check(
        math.isfinite(temperature) and temperature > 0,
        f"distill_temperature must be > 0, got {temperature}",
    )
    _check(0.0 <= alpha <= 1.0, f"distill_alpha must be in [0, 1], got {alpha}")
