"""The `charrnn` command line: parse options, call one function in `commands`, print the result.

`commands` loads torch, about 1.5 s of start-up, so it is imported inside the commands that need
it: `--help`, option errors and `prepare` (numpy only) answer at once. The options of `train` and
`sample` that set a configuration field are made from the field's declaration in `config`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from charrnn.config import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DEVICE,
    DEFAULT_PRESET,
    DEVICE_HELP,
    DYNAMIC_LR,
    RUN_PANEL,
    THREADS_HELP,
    TRAINING_SETTINGS,
    DataConfig,
    Device,
    DistillConfig,
    ExportDtype,
    ExportFormat,
    Quantize,
    SampleConfig,
    ServeConfig,
    Setting,
    UnitState,
    check_train_options,
    declared_settings,
    format_duration,
    parse_duration,
    preset_names,
    read_serve_config,
    resolve_config,
)
from charrnn.console import (
    ProgressBar,
    error_line,
    notice_line,
    print_columns,
    print_table,
    warning_line,
)
from charrnn.errors import CharRNNError, UsageError
from charrnn.system.cpuload import CpuSample, read_cpu_sample
from charrnn.text.corpus import prep_report, prepare_corpus
from charrnn.version import __version__

if TYPE_CHECKING:
    from charrnn import commands


def parse_error_line(message: str, command_path: str | None) -> str:
    """Typer's message for a bad option or argument, as one line in our style."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip()).rstrip(".")
    text = text[:1].lower() + text[1:]
    return f"{text} (see '{command_path} --help')" if command_path else text


class _OneLineErrors(TyperGroup):
    """Option and argument errors (unknown option, bad value, missing option) as one
    `charrnn: error:` line with exit code 2, like every other failure, not Click's usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:
            context = getattr(exc, "ctx", None)
            error_line(
                parse_error_line(exc.format_message(), getattr(context, "command_path", None))
            )
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            error_line("interrupted")
            sys.exit(EXIT_SIGINT)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    name="charrnn",
    cls=_OneLineErrors,
    help="Train character-level RNN/LSTM/GRU language models on text; sample and score them.",
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_SIGINT, EXIT_SIGTERM = 130, 143

SAMPLING_DEVICE_HELP = (
    "Where to run: auto is the CPU, since one small step per character is bound by latency and "
    "a GPU pays launch costs on every step."
)


def listed_choices(words: Iterable[str]) -> dict[str, Any]:
    """`typer.Option` arguments that list `words` in `--help` and offer them to shell completion.

    The value stays text and is checked where its setting is validated, so the command line, a
    TOML file and the Python API refuse a wrong word with the same message (docs/errors.md).
    """
    choices = tuple(words)

    def complete(incomplete: str) -> list[str]:
        return [word for word in choices if word.startswith(incomplete)]

    return {"metavar": "<" + "|".join(choices) + ">", "autocompletion": complete}


# Options several commands share, declared once.
CheckpointOption = Annotated[
    Path,
    typer.Option(
        help="A checkpoint file, a run directory (its best.pt), or shakespeare: the model built "
        "into charrnn (a file or directory of that name wins).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeviceOption = Annotated[str, typer.Option(help=DEVICE_HELP, **listed_choices(Device.values()))]
SamplingDeviceOption = Annotated[
    str, typer.Option(help=SAMPLING_DEVICE_HELP, **listed_choices(Device.values()))
]
ThreadsOption = Annotated[int, typer.Option(help=THREADS_HELP)]
# The memory analysis (`inspect`, `compare`): docs/memory.md.
MemoryOption = Annotated[
    bool,
    typer.Option(
        "--memory",
        help="Also measure how far back the model remembers: the loss when it sees only the "
        "last k characters (k = 1..1024) and its effective context, the gradient's decay with "
        "distance (up to 512) and its gates' timescales.",
    ),
]
MemoryPlotOption = Annotated[
    Path | None,
    typer.Option(
        help="Draw the --memory curves to this image: .png, .svg or .pdf (implies --memory; "
        "needs the plot extra; default: none).",
        show_default=False,
    ),
]

# The run options `train` and `distill` share.
PresetOption = Annotated[
    str | None,
    typer.Option(
        help=f"Start from this preset in configs/ (default: {DEFAULT_PRESET}, the settings' own "
        "defaults).",
        rich_help_panel=RUN_PANEL,
        **listed_choices(preset_names()),
    ),
]
ConfigFileOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML file of settings; flags given here override it (default: none).",
        rich_help_panel=RUN_PANEL,
    ),
]
RunDirOption = Annotated[
    Path | None,
    typer.Option(help="Run directory (default: runs/<corpus>-<time>).", rich_help_panel=RUN_PANEL),
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Where encoded corpora are cached (default: .cache beside the run).",
        rich_help_panel=RUN_PANEL,
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bar or summary.", rich_help_panel=RUN_PANEL),
]


def setting_option(setting: Setting, *, unset: bool = False) -> inspect.Parameter:
    """The Typer option for a declared setting: its flag, help, panel, type and default.

    `unset`: the option defaults to None, "not given", so that a preset or a TOML file can set
    the key, instead of to the declared default.
    """
    value_type: Any = str if setting.parse else setting.type  # `parse` reads the text later
    if unset or setting.optional:
        value_type = value_type | None
    option = typer.Option(
        *([setting.flag] if setting.flag else []),
        help=setting.help,
        rich_help_panel=setting.panel,
        show_default=shown_default(setting) if unset else True,
        **(listed_choices(setting.choices.values()) if setting.choices else {}),
    )
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[value_type, option],
        default=None if unset else setting.default,
    )


def shown_default(setting: Setting) -> str | bool:
    """The default `--help` shows for an option whose value is 'not given' (None), so that a
    preset or TOML file can set it: the declared default. A None default shows nothing; the
    setting's help says what it means."""
    if setting.default is None:
        return False
    if setting.parse is parse_duration:
        return format_duration(setting.default)
    if setting.type is bool and setting.flag and "/" in setting.flag:
        on, off = setting.flag.split("/")
        return (on if setting.default else off).lstrip("-")
    return str(setting.default)


def with_settings(
    declared: Iterable[Setting], *, after: str | None = None, unset: bool = False
) -> Callable[[F], F]:
    """Give a command that takes `**settings` one option per setting in `declared`, listed after
    its parameter `after` (default: after all of them); see `setting_option` for `unset`."""
    options = [setting_option(s, unset=unset) for s in declared]

    def add_options(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in signature.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        at = len(own) if after is None else [p.name for p in own].index(after) + 1
        # Typer reads a command's options from `inspect.signature`, which returns this.
        command.__signature__ = signature.replace(parameters=[*own[:at], *options, *own[at:]])  # type: ignore[attr-defined]
        return command

    return add_options


def user_errors(func: F) -> F:
    """Turn `CharRNNError` into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CharRNNError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(EXIT_SIGINT) from None
        except BrokenPipeError:
            sys.stderr.close()  # e.g. `charrnn sample ... | head`: not an error
            raise typer.Exit(0) from None

    return wrapper  # type: ignore[return-value]


def unescape(text: str | None) -> str | None:
    r"""Turn \n, \t and \\ typed on a command line into the characters."""
    if text is None:
        return None
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def version_callback(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def main_options(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Train character-level RNN/LSTM/GRU language models on text; sample and score them."""
    if context.invoked_subcommand is None:  # plain `charrnn`: the help, as for --help
        print(context.get_help())
        raise typer.Exit(2)


class _Interrupts:
    """SIGINT/SIGTERM ask training to stop after the current step; a second SIGINT exits now."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    def __enter__(self) -> _Interrupts:
        self.previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_number is not None and signum == signal.SIGINT:
            error_line("interrupted again: exiting without saving")
            raise SystemExit(EXIT_SIGINT)
        self.signal_number = signum

    def requested(self) -> bool:
        return self.signal_number is not None

    @property
    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signal_number == signal.SIGTERM else EXIT_SIGINT


@app.command()
@user_errors
@with_settings(TRAINING_SETTINGS, unset=True)
def train(
    corpus: Annotated[
        list[str] | None,
        typer.Argument(
            help="Text files, directories (their text files, sorted) or globs.", show_default=False
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run in this directory from its last.pt, exactly where it stopped "
            "(default: a new run).",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from this checkpoint's weights (fine-tuning); new characters are added "
            "(default: fresh weights).",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    preset: PresetOption = None,
    config: ConfigFileOption = None,
    out: RunDirOption = None,
    cache_dir: CacheDirOption = None,
    quiet: QuietOption = False,
    **overrides: Any,
) -> None:
    """Train a model on CORPUS and write checkpoints to a run directory.

    Example: charrnn train shakespeare.txt --max-time 10m
    """
    # Before torch loads, so that a wrong combination fails at once (the command checks again).
    check_train_options(
        overrides,
        corpus=corpus,
        resume=resume,
        init_from=init_from,
        preset=preset,
        config=config,
        out=out,
    )
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    request = commands.TrainRequest(
        corpus, overrides, resume, init_from, preset, config, out, cache_dir
    )
    _train_with_progress(quiet, load_since, functools.partial(commands.train_or_resume, request))


def _train_with_progress(
    quiet: bool,
    load_since: CpuSample | None,
    start: Callable[..., commands.TrainOutcome],
) -> commands.TrainOutcome:
    """Run `start(hooks=)` (a training run) with the progress bar, Ctrl-C handling and the
    closing table; exits 130/143 after an interruption."""
    from charrnn import commands  # already loaded by the caller

    bar = ProgressBar(disable=quiet)

    def started(outcome: commands.TrainOutcome) -> None:
        for warning in outcome.warnings:
            warning_line(warning)
        for notice in outcome.notices:
            notice_line(notice)
        bar.message(
            f"run {outcome.run_dir}: {outcome.corpus.n_chars:,} characters, vocabulary "
            f"{outcome.corpus.vocab.size}, {outcome.parameters:,} parameters"
            + (" (corpus from cache)" if outcome.corpus.cached else "")
            + _preprocessing_note(prep_report(outcome.corpus))
        )

    with _Interrupts() as interrupts:
        try:
            hooks = commands.TrainHooks(
                reporter=bar,
                should_stop=interrupts.requested,
                on_start=started,
                on_preview=None if quiet else bar.preview,
                load_since=load_since,
            )
            outcome = start(hooks=hooks)
        finally:
            bar.close()
    progress = outcome.progress
    if not outcome.writer:  # another rank of a torchrun job: rank 0 reports for all of them
        raise typer.Exit(interrupts.exit_code if interrupts.requested() else 0)
    if interrupts.requested():
        notice_line(
            f"stopped at step {progress.step:,}; saved {outcome.run.last}. "
            f"Resume with: charrnn train --resume {outcome.run_dir}"
        )
        raise typer.Exit(interrupts.exit_code)
    if not quiet:
        print_table(f"trained {outcome.run_dir}", training_summary(outcome))
    return outcome


def training_summary(outcome: commands.TrainOutcome) -> list[tuple[str, Any]]:
    """The rows of the table `train` ends with, down to the command that samples the best model."""
    best, progress = outcome.run.best, outcome.progress
    rows: list[tuple[str, Any]] = [
        ("steps", progress.step),
        ("characters seen", progress.chars_seen),
        ("training time (s)", round(progress.elapsed, 1)),
        ("final val loss (nats/char)", progress.val_loss),
    ]
    if progress.best_val_loss is not None:
        rows += [
            ("best val loss (nats/char)", progress.best_val_loss),
            ("best val bits/char", progress.best_val_loss / math.log(2)),
            ("best checkpoint", str(best)),
            ("sample it with", f"charrnn sample --checkpoint {shlex.quote(str(best))}"),
        ]
    return rows


# `prepare` calls data.py itself, not `commands`: commands imports torch (about 1.5 s) and prepare
# must start at once. Its cache default is the one a default `train` run uses.
@app.command()
@user_errors
@with_settings((s for s in declared_settings(DataConfig) if s.name != "val_frac"), after="corpus")
def prepare(
    corpus: Annotated[
        list[str], typer.Argument(help="Text files, directories or globs.", show_default=False)
    ],
    cache_dir: Annotated[
        Path, typer.Option(help="Where the encoded corpus is cached.")
    ] = DEFAULT_CACHE_DIR,
    json_output: JsonOption = False,
    **data_settings: Any,
) -> None:
    """Read, build the vocabulary, encode and cache CORPUS: exactly what `train` does first."""
    data_config = resolve_config(overrides=data_settings).data
    corpus_data = prepare_corpus(corpus, data_config, cache_dir)
    prep = prep_report(corpus_data)
    info = {
        "chars": corpus_data.n_chars,
        "vocab_size": corpus_data.vocab.size,
        "vocab_before": prep["vocab_before"],
        "unknown_chars": prep["unknown_chars"],
        "unknown_share": prep["unknown_share"],
        "ascii_dropped": prep["ascii_dropped"],
        "dtype": str(corpus_data.vocab.dtype),
        "files": len(corpus_data.sources),
        "cache": str(corpus_data.cache_path),
        "cached": corpus_data.cached,
    }
    if json_output:
        print(json.dumps(info))
    else:
        print_table("corpus", list(info.items()))


@app.command()
@user_errors
@with_settings(declared_settings(SampleConfig), after="prime_file")
def sample(
    checkpoint: CheckpointOption,
    prime: Annotated[
        str,
        typer.Option(
            help="Text to start from; it begins the output (default: none, the model draws one)."
        ),
    ] = "",
    prime_file: Annotated[
        Path | None, typer.Option(help="Read the prime from this UTF-8 file (default: --prime).")
    ] = None,
    separator: Annotated[
        str, typer.Option(help=r"Printed between samples (\n, \t understood).")
    ] = r"\n\n",
    output: Annotated[
        Path | None, typer.Option(help="Write the samples to this file (default: stdout).")
    ] = None,
    device: SamplingDeviceOption = DEFAULT_DEVICE,
    threads: ThreadsOption = 0,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            "-i",
            help=r"Keep the model loaded: each line typed continues the text (\n typed is a "
            "newline; an empty line writes more). Ctrl-D or Ctrl-C at the prompt ends it.",
        ),
    ] = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset", help="With --interactive: each line starts afresh (after --prime)."
        ),
    ] = False,
    **sample_settings: Any,
) -> None:
    """Generate text from a trained model; it streams to stdout as it is generated.

    Example: charrnn sample --checkpoint runs/shakespeare-... --prime "ROMEO:" --length 300
    """
    if prime_file is not None:
        try:
            prime = prime_file.read_text("utf-8-sig")  # without a byte-order mark
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read prime file {prime_file}: {exc}") from None
    stop = unescape(sample_settings.pop("stop"))
    sample_config = SampleConfig(**sample_settings, stop=stop)
    if reset and not interactive:
        raise UsageError("--reset applies to --interactive")
    if interactive:
        if output is not None:
            raise UsageError("--interactive writes to the terminal; --output cannot be used")
        _interactive(checkpoint, prime, sample_config, reset, unescape(separator) or "", device,
                     threads)  # fmt: skip
        return
    stream = output is None and sample_config.num_samples == 1
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    pieces: list[list[str]] = [[] for _ in range(sample_config.num_samples)]
    for index, piece in commands.sample_command(
        checkpoint, prime, sample_config, device, threads=threads, load_since=load_since
    ):
        if stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        else:
            pieces[index].append(piece)
    texts = ["".join(text) for text in pieces]
    joined = unescape(separator).join(texts)
    if output is not None:
        commands.write_samples(output, joined + "\n")
        print(f"wrote {len(texts)} sample(s) to {output}", file=sys.stderr)
    elif stream:
        sys.stdout.write("\n")
    else:
        sys.stdout.write(joined + "\n")


INTERACTIVE_PROMPT = "> "


def _read_line() -> str | None:
    """The next line typed (a prompt and line editing on a terminal), None at the end."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return unescape(line.rstrip("\r\n")) if line else None
    with contextlib.suppress(ImportError):  # not on Windows
        import readline  # noqa: F401  (line editing and history for input())
    try:
        if sys.stdout.isatty():
            return unescape(input(INTERACTIVE_PROMPT))
        print(INTERACTIVE_PROMPT, end="", file=sys.stderr, flush=True)
        return unescape(input())
    except EOFError:
        print(file=sys.stderr)  # the shell's prompt on a line of its own
        return None
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise


def _read_lines() -> Iterator[str]:
    """The lines typed, until Ctrl-D or Ctrl-C at the prompt (either ends the session)."""
    with contextlib.suppress(KeyboardInterrupt):
        while (line := _read_line()) is not None:
            yield line


def _interactive(
    checkpoint: Path, prime: str, config: SampleConfig, reset: bool, separator: str,
    device: str, threads: int,
) -> None:  # fmt: skip
    """`sample --interactive`: replies stream to stdout, one per line read."""
    load_since = read_cpu_sample()
    from charrnn import commands

    replies = commands.interactive_command(
        checkpoint, prime, config, _read_lines(), reset, device, threads, load_since
    )  # options checked before the greeting: a bad one is the only line
    if sys.stdin.isatty():
        notice_line("interactive: type a line and press Enter; the model continues it. "
                    "Ctrl-D ends.")  # fmt: skip
    with contextlib.closing(replies):
        for reply in replies:
            _print_reply(reply, config.num_samples == 1, separator)


def _print_reply(reply: commands.Reply, stream: bool, separator: str) -> None:
    """A reply on stdout (streamed, or its samples joined by `separator`) and a newline; Ctrl-C
    stops it where it is. A line the model cannot read is an error line instead."""
    from charrnn import commands

    try:
        for event in reply:
            if isinstance(event, commands.Unreadable):
                error_line(event.message)
                return
            if isinstance(event, commands.ReplyText) and stream:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, commands.ReplyEnd) and not stream:
                sys.stdout.write(separator.join(event.texts))
    except KeyboardInterrupt:
        reply.close()  # the text stays as it was; the session goes on
    sys.stdout.write("\n")
    sys.stdout.flush()


@app.command("eval")
@user_errors
def evaluate(
    checkpoint: CheckpointOption,
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Files to score (default: the validation split).", show_default=False),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Encoding of FILES (default: the training corpus').")
    ] = None,
    streams: Annotated[
        int | None, typer.Option(help="Parallel stateful streams (default: as in training).")
    ] = None,
    json_output: JsonOption = False,
    device: DeviceOption = DEFAULT_DEVICE,
    threads: ThreadsOption = 0,
    by_char: Annotated[
        bool,
        typer.Option("--by-char", help="Also the per-character table and most confused pairs."),
    ] = False,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic",
            help="Also score with dynamic evaluation: the model takes a gradient step on each "
            "window after scoring it (reported as dynamic_loss; the checkpoint is unchanged).",
        ),
    ] = False,
    dynamic_lr: Annotated[float, typer.Option(help="SGD step size of --dynamic.")] = DYNAMIC_LR,
) -> None:
    """Score text: loss (nats/char), bits per character, perplexity, accuracy and F1.

    Example: charrnn eval --checkpoint runs/shakespeare-... --json
    """
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    result = commands.eval_command(
        checkpoint, files or [], encoding, device, streams, threads, load_since,
        dynamic=dynamic, dynamic_lr=dynamic_lr,
    )  # fmt: skip
    if json_output:
        print(json.dumps(result.to_dict(by_char)))
        return
    summary = result.to_dict()
    rows = [
        ("loss (nats/char)", result.loss),
        ("bits per character", result.bpc),
        ("perplexity", result.perplexity),
        ("accuracy (top-1)", summary["accuracy"]),
        ("top-5 accuracy", summary["top5_accuracy"]),
        ("macro precision", summary["macro_precision"]),
        ("macro recall", summary["macro_recall"]),
        ("macro F1", summary["macro_f1"]),
        ("characters scored", result.chars),
        ("characters outside the vocabulary", result.unknown_chars),
        ("characters scored as the unknown symbol", result.unknown_symbol_chars),
    ]
    if result.dynamic is not None:
        rows += [
            ("dynamic loss (nats/char)", result.dynamic.loss),
            ("dynamic bits per character", result.dynamic.bpc),
        ]
    print_table("evaluation", rows)
    if by_char and result.metrics is not None:
        print_table(
            "per character (most frequent first): count, predicted, precision, recall, F1",
            [
                (repr(s.char), f"{s.count} {s.predicted} {s.precision:.3f} {s.recall:.3f} "
                 f"{s.f1:.3f}")
                for s in result.metrics.per_char
            ],
        )  # fmt: skip
        print_table(
            "most confused: target -> predicted, count, share of the target",
            [
                (f"{c.target!r} -> {c.predicted!r}", f"{c.count} {c.share:.3f}")
                for c in result.metrics.confusions
            ],
        )


@app.command()
@user_errors
def info(
    checkpoint: CheckpointOption,
    json_output: JsonOption = False,
) -> None:
    """Show what a checkpoint holds: configuration, vocabulary, size and progress."""
    from charrnn import commands

    details = commands.info_command(checkpoint)
    if json_output:
        print(json.dumps(details))
        return
    flat_config = [
        (key, value) for section in details["config"].values() for key, value in section.items()
    ]
    print_table(
        "checkpoint",
        [
            *(
                [("built in", f"yes: {checkpoint} ships with charrnn")]
                if details["built_in"]
                else []
            ),
            ("parameters", details["parameters"]),
            ("vocabulary", f"{details['vocab_size']} {details['vocab_kind']}"),
            ("vocabulary preview", repr(details["vocab_preview"])),
            *_preprocessing_rows(details),
            ("steps", details["step"]),
            ("characters seen", details["chars_seen"]),
            ("best val loss", details["best_val_loss"]),
            ("training time (s)", details["training_seconds"]),
            ("corpus", ", ".join(details["corpus"].get("sources", [])) or "-"),
            ("corpus key", details["corpus"].get("key") or "-"),
            ("exported as", _export_format(details["export"])),
            ("distilled from", _teacher_of(details["objective"])),
        ],
    )
    print_table("configuration", flat_config)


@app.command()
@user_errors
def plot(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories to draw.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Image to write: .png, .svg or .pdf.")
    ] = Path("curves.png"),
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 1400,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 600,
) -> None:
    """Draw learning curves: train and validation loss against characters seen and time.

    Example: charrnn plot runs/small runs/medium -o curves.png (needs 'charrnn-cli[plot]')
    """
    from charrnn.analysis.plot import plot_runs
    from charrnn.analysis.run_history import read_run

    written = plot_runs([read_run(path) for path in runs], output, width, height)
    notice_line(f"wrote {written}")


COMPARE_COLUMNS = {
    "run": "run", "model": "model", "parameters": "params", "steps": "steps",
    "chars": "chars seen", "best_val_loss": "best val", "best_val_bpc": "bits/char",
    "elapsed_s": "time (s)", "chars_per_s": "chars/s",
}  # fmt: skip


@app.command()
@user_errors
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories to compare.", show_default=False)
    ],
    json_output: JsonOption = False,
    memory: MemoryOption = False,
    plot: MemoryPlotOption = None,
    device: DeviceOption = DEFAULT_DEVICE,
    threads: ThreadsOption = 0,
) -> None:
    """Compare runs in one table: model, parameters, steps, characters, best loss, time, speed;
    with --memory, how far back each remembers (docs/memory.md).

    Example: charrnn compare runs/* --memory --plot memory.png
    """
    load_since = read_cpu_sample() if memory or plot else None
    from charrnn import commands

    summaries = commands.compare_command(runs, memory, plot, device, threads, load_since)
    if json_output:
        print(json.dumps(summaries))
    else:
        rows = [[summary[key] for key in COMPARE_COLUMNS] for summary in summaries]
        print_columns("runs (loss in nats/char)", list(COMPARE_COLUMNS.values()), rows)
        if memory or plot:
            Console(highlight=False).print(commands.memory_compare_table(summaries))
    if plot is not None:
        notice_line(f"wrote {plot}")


@app.command("inspect")
@user_errors
def inspect_model(
    checkpoint: CheckpointOption,
    text: Annotated[
        str | None,
        typer.Argument(
            help="The text to look at: a file, or - for stdin (default: the validation split "
            "of the model's corpus).",
            show_default=False,
        ),
    ] = None,
    cell_index: Annotated[
        str | None,
        typer.Option(
            help="Colour the text by one unit, LAYER:UNIT counted from 0, e.g. 0:42 "
            "(default: surprisal)."
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            help="Which value of the unit: c, an LSTM's cell state, or h, the output "
            "(default: c for an LSTM, else h).",
            **listed_choices(UnitState.values()),
        ),
    ] = None,
    find: Annotated[
        bool,
        typer.Option(
            "--find",
            help="Rank the units that best track quotes, brackets, line position, line and "
            "word starts, speaker lines and digits.",
        ),
    ] = False,
    find_top: Annotated[int, typer.Option(help="Units listed per feature by --find.")] = 1,
    show: Annotated[
        int,
        typer.Option(
            help="Characters shown (terminal, HTML, JSON positions); 0: all. Totals, --find "
            "and gates always cover the whole text."
        ),
    ] = 2000,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Write a self-contained HTML page with a unit picker to this file (default: none)."
        ),
    ] = None,
    json_output: JsonOption = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="Plain text, no colours (also when not a TTY).")
    ] = False,
    encoding: Annotated[
        str | None, typer.Option(help="Encoding of TEXT (default: the training corpus').")
    ] = None,
    memory: MemoryOption = False,
    plot: MemoryPlotOption = None,
    device: DeviceOption = DEFAULT_DEVICE,
    threads: ThreadsOption = 0,
) -> None:
    """Look inside a model: how surprised it is at each character, what its units and gates do,
    and with --memory how far back it remembers (docs/memory.md).

    Example: charrnn inspect --checkpoint runs/shakespeare-... play.txt --find --html view.html
    """
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    console = Console(color_system=None if no_color else "auto", highlight=False)
    options = commands.InspectOptions(
        cell_index=cell_index, state=state, find=find, find_top=find_top, show=show, html=html,
        json=json_output, encoding=encoding, plain=console.color_system is None, memory=memory,
        plot=plot,
    )  # fmt: skip
    outcome = commands.inspect_command(checkpoint, text, options, device, threads, load_since)
    if outcome.data is not None:
        print(json.dumps(outcome.data))
    else:
        console.print(outcome.report)
    if outcome.html_path is not None:
        notice_line(f"wrote {outcome.html_path}")
    if outcome.plot_path is not None:
        notice_line(f"wrote {outcome.plot_path}")


def _export_format(export: dict[str, Any]) -> str:
    """'int8 matrices, float16 vectors' for an export, '-' for a training checkpoint."""
    if not export:
        return "-"
    if export.get("quantize"):
        return f"{export['quantize']} matrices, {export.get('dtype')} vectors (inference only)"
    return f"{export.get('dtype')} (inference only)"


def _teacher_of(objective: dict[str, Any]) -> str:
    """'TEACHER (temperature 2, alpha 0.5)' for a distilled model, '-' for others."""
    if objective.get("kind") != "distill":
        return "-"
    return (
        f"{objective['teacher']} (temperature {objective['distill_temperature']:g}, "
        f"alpha {objective['distill_alpha']:g})"
    )


@app.command("export")
@user_errors
def export(
    checkpoint: CheckpointOption,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The file to write.", show_default=False)
    ],
    dtype: Annotated[
        str | None,
        typer.Option(
            help="The weights' storage type. [default: as the source: float32 for a training "
            "checkpoint]",
            show_default=False,
            **listed_choices(ExportDtype.values()),
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8: weight matrices as int8 with one scale per row; none: off. [default: as "
            "the source: none for a training checkpoint]",
            show_default=False,
            **listed_choices(Quantize.values()),
        ),
    ] = None,
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="pt: a checkpoint; html: one web page that runs the model offline; "
            "onnx: a graph for onnxruntime (needs 'charrnn-cli[onnx]').",
            **listed_choices(ExportFormat.values()),
        ),
    ] = ExportFormat.PT.value,
    json_output: JsonOption = False,
) -> None:
    """Write an inference-only copy of a checkpoint (no optimizer state), smaller if asked,
    as a checkpoint, a web page or an ONNX graph.

    Example: charrnn export --checkpoint runs/shakespeare-... -o model.pt --quantize int8
    Example: charrnn export --checkpoint shakespeare --format html -o poet.html --quantize int8
    """
    from charrnn import commands

    result = commands.export_command(checkpoint, output, dtype, quantize, export_format)
    if json_output:
        print(json.dumps(result.to_dict()))
        return
    print_table(
        f"exported {result.output}",
        [
            ("source", str(result.source)),
            ("format", result.format),
            ("weights", _export_format({"dtype": result.dtype, "quantize": result.quantize})),
            ("parameters", result.parameters),
            ("size (bytes)", f"{result.output_bytes:,} ({result.source_bytes:,} before)"),
        ],
    )


@app.command()
@user_errors
@with_settings(declared_settings(ServeConfig), after="checkpoint")
def serve(
    checkpoint: CheckpointOption,
    device: SamplingDeviceOption = DEFAULT_DEVICE,
    threads: ThreadsOption = 0,
    **serve_settings: Any,
) -> None:
    """Serve a model over HTTP: OpenAI-compatible completions (streamed too), a score
    endpoint and a web page to write with. Ctrl-C stops it.

    Example: charrnn serve --checkpoint runs/shakespeare-... then open http://127.0.0.1:8000
    """
    config = read_serve_config(serve_settings)
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    def listening(url: str) -> None:
        print(f"serving {checkpoint} at {url} (Ctrl-C stops)", flush=True)

    commands.serve_command(checkpoint, config, listening, device, threads, load_since)


DISTILL_KEYS = tuple(s.name for s in declared_settings(DistillConfig))


@app.command()
@user_errors
@with_settings(declared_settings(DistillConfig), after="teacher")
@with_settings(TRAINING_SETTINGS, unset=True)
def distill(
    corpus: Annotated[
        list[str],
        typer.Argument(help="Text files, directories or globs to distill on.", show_default=False),
    ],
    teacher: Annotated[
        Path,
        typer.Option(
            help="The trained model to learn from: a checkpoint or a run directory (its best.pt).",
            show_default=False,
            rich_help_panel="Distillation",
        ),
    ],
    preset: PresetOption = None,
    config: ConfigFileOption = None,
    out: RunDirOption = None,
    cache_dir: CacheDirOption = None,
    quiet: QuietOption = False,
    **overrides: Any,
) -> None:
    """Train a student model (model flags set its size) on a teacher's softened predictions.

    Resume an interrupted distillation with `charrnn train --resume RUN_DIR`.
    Example: charrnn distill shakespeare.txt --teacher runs/big --hidden 128 --max-time 90s
    """
    distill_config = DistillConfig(**{key: overrides.pop(key) for key in DISTILL_KEYS})
    run_config = resolve_config(preset, config, overrides)
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    start = functools.partial(
        commands.distill_command,
        corpus,
        teacher,
        run_config,
        distill_config,
        out=out,
        cache_dir=cache_dir,
    )
    _train_with_progress(quiet, load_since, start)


def _preprocessing_note(prep: dict[str, Any]) -> str:
    """'; 4,163 characters before --min-char-count, 0.19% now unknown', or nothing."""
    note = ""
    if prep["vocab_before"] != prep["vocab_after"]:
        note += (
            f"; {prep['vocab_before']:,} characters before --min-char-count, "
            f"{prep['unknown_share']:.2%} of the text now unknown"
        )
    if prep["ascii_dropped"]:
        note += f"; --ascii dropped {prep['ascii_dropped']:,} characters"
    return note


def _preprocessing_rows(details: dict[str, Any]) -> list[tuple[str, Any]]:
    """What `info` shows of the corpus' preprocessing (its settings are in the configuration)."""
    prep = details.get("preprocessing")
    rows: list[tuple[str, Any]] = []
    if details.get("unknown_symbol") is not None:
        rows.append(("unknown symbol", repr(details["unknown_symbol"])))
    if prep:
        rows += [
            ("vocabulary before preprocessing", prep["vocab_before"]),
            ("share of text as the unknown symbol", f"{prep['unknown_share']:.4%}"),
            ("characters dropped by --ascii", prep["ascii_dropped"]),
        ]
    return rows


def main() -> None:
    """Console-script entry point."""
    app()
