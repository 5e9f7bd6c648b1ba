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
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from charrnn import __version__
from charrnn.config import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DEVICE,
    DEFAULT_PRESET,
    DEVICE_HELP,
    RUN_PANEL,
    THREADS_HELP,
    TRAINING_SETTINGS,
    DataConfig,
    SampleConfig,
    Setting,
    auto_kept_keys,
    check_auto_flags,
    check_init_from_flags,
    check_resume_flags,
    declared_settings,
    given_keys,
    preset_names,
    resolve_config,
    validate_sample_config,
)
from charrnn.console import ProgressBar, error_line, notice_line, print_table, warning_line
from charrnn.cpuload import read_cpu_sample
from charrnn.data import prepare_corpus
from charrnn.errors import CharRNNError, UsageError

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
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_SIGINT, EXIT_SIGTERM = 130, 143

SAMPLING_DEVICE_HELP = (
    "auto, cpu, cuda or mps. For sampling, auto is the CPU: one small step per character is "
    "bound by latency, and a GPU pays launch costs on every step."
)


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
        show_default=not unset,
    )
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[value_type, option],
        default=None if unset else setting.default,
    )


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
            help="Continue the run in this directory from its last.pt, exactly where it stopped.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from this checkpoint's weights (fine-tuning); new characters are added.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"Start from a preset in configs/ ({', '.join(preset_names())}); "
            f"the defaults are '{DEFAULT_PRESET}'.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of settings; flags given here override it.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run directory (default runs/<corpus>-<time>).", rich_help_panel=RUN_PANEL
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where encoded corpora are cached (default: .cache beside the run).",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bar or summary.", rich_help_panel=RUN_PANEL
        ),
    ] = False,
    **overrides: Any,
) -> None:
    """Train a model on CORPUS and write checkpoints to a run directory.

    Example: charrnn train shakespeare.txt --max-time 10m
    """
    run_options = {
        "corpus": corpus or None, "resume": resume, "init_from": init_from, "preset": preset,
        "config": config, "out": out,
    }  # fmt: skip
    given = given_keys({**run_options, **overrides})
    check_resume_flags(given)
    check_init_from_flags(given)
    check_auto_flags(overrides.get("auto"), preset)
    run_config = resolve_config(preset, config, overrides) if resume is None else None
    auto = run_config is not None and run_config.train.auto  # a flag, or a --config file key
    auto_kept = auto_kept_keys(config, overrides) if auto else set()
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

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
        )

    with _Interrupts() as interrupts:
        try:
            if resume is not None:
                outcome = commands.resume_command(
                    resume, overrides, cache_dir=cache_dir, reporter=bar,
                    should_stop=interrupts.requested, on_start=started, load_since=load_since,
                )  # fmt: skip
            else:
                assert run_config is not None
                outcome = commands.train_command(
                    corpus, run_config, out=out,
                    cache_dir=cache_dir, reporter=bar, should_stop=interrupts.requested,
                    on_start=started, init_from=init_from, load_since=load_since,
                    auto_kept=auto_kept,
                )  # fmt: skip
        finally:
            bar.close()
    progress = outcome.progress
    if interrupts.requested():
        notice_line(
            f"stopped at step {progress.step:,}; saved {outcome.run_dir / 'last.pt'}. "
            f"Resume with: charrnn train --resume {outcome.run_dir}"
        )
        raise typer.Exit(interrupts.exit_code)
    if not quiet:
        print_table(
            f"trained {outcome.run_dir}",
            [
                ("steps", progress.step),
                ("characters seen", progress.chars_seen),
                ("training time (s)", round(progress.elapsed, 1)),
                ("final val loss (nats/char)", progress.val_loss),
                ("best val loss (nats/char)", progress.best_val_loss),
                ("best checkpoint", str(outcome.run_dir / "best.pt")),
            ],
        )


# `prepare` calls data.py itself, not `commands`: commands imports torch (about 1.5 s) and prepare
# must start at once. Its cache default is the one a default `train` run uses.
@app.command()
@user_errors
@with_settings(
    (s for s in declared_settings(DataConfig) if s.name in ("encoding", "bytes")), after="corpus"
)
def prepare(
    corpus: Annotated[
        list[str], typer.Argument(help="Text files, directories or globs.", show_default=False)
    ],
    cache_dir: Annotated[
        Path, typer.Option(help="Where the encoded corpus is cached.")
    ] = DEFAULT_CACHE_DIR,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    **data_settings: Any,
) -> None:
    """Read, build the vocabulary, encode and cache CORPUS: exactly what `train` does first."""
    data_config = resolve_config(overrides=data_settings).data
    corpus_data = prepare_corpus(corpus, data_config, cache_dir)
    info = {
        "chars": corpus_data.n_chars,
        "vocab_size": corpus_data.vocab.size,
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
    checkpoint: Annotated[
        Path,
        typer.Option(
            help="A checkpoint file, or a run directory (its best.pt).", show_default=False
        ),
    ],
    prime: Annotated[str, typer.Option(help="Text to start from (it begins the output).")] = "",
    prime_file: Annotated[
        Path | None, typer.Option(help="Read the prime from this UTF-8 file.")
    ] = None,
    separator: Annotated[
        str, typer.Option(help=r"Printed between samples (\n, \t understood).")
    ] = r"\n\n",
    output: Annotated[
        Path | None, typer.Option(help="Write the samples to this file instead of stdout.")
    ] = None,
    device: Annotated[str, typer.Option(help=SAMPLING_DEVICE_HELP)] = DEFAULT_DEVICE,
    threads: Annotated[int, typer.Option(help=THREADS_HELP)] = 0,
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
            prime = prime_file.read_text("utf-8")
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

    def show(index: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    texts = commands.sample_command(
        checkpoint, prime, sample_config, device, on_text=show if stream else None,
        threads=threads, load_since=load_since,
    )  # fmt: skip
    joined = unescape(separator).join(texts)
    if output is not None:
        try:
            output.write_text(joined + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
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


def _interactive(
    checkpoint: Path, prime: str, config: SampleConfig, reset: bool, separator: str,
    device: str, threads: int,
) -> None:  # fmt: skip
    """`sample --interactive`: replies stream to stdout, one per line read."""
    stream = config.num_samples == 1

    def show(index: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    def replied(texts: list[str] | None) -> None:
        if texts is not None and not stream:
            sys.stdout.write(separator.join(texts))
        sys.stdout.write("\n")
        sys.stdout.flush()

    validate_sample_config(config)  # before the greeting: a bad option is the only line
    if sys.stdin.isatty():
        notice_line("interactive: type a line and press Enter; the model continues it. "
                    "Ctrl-D ends.")  # fmt: skip
    load_since = read_cpu_sample()
    from charrnn import commands

    commands.interactive_command(
        checkpoint, prime, config, _read_line, show if stream else None, replied, error_line,
        reset, device, threads, load_since,
    )  # fmt: skip


@app.command("eval")
@user_errors
def evaluate(
    checkpoint: Annotated[
        Path,
        typer.Option(
            help="A checkpoint file, or a run directory (its best.pt).", show_default=False
        ),
    ],
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
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = DEFAULT_DEVICE,
    threads: Annotated[int, typer.Option(help=THREADS_HELP)] = 0,
) -> None:
    """Score text: loss (nats/char), bits per character, perplexity.

    Example: charrnn eval --checkpoint runs/shakespeare-... --json
    """
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    result = commands.eval_command(
        checkpoint, files or [], encoding, device, streams, threads, load_since
    )
    if json_output:
        print(json.dumps(result.to_dict()))
        return
    print_table(
        "evaluation",
        [
            ("loss (nats/char)", result.loss),
            ("bits per character", result.bpc),
            ("perplexity", result.perplexity),
            ("characters scored", result.chars),
            ("characters outside the vocabulary", result.unknown_chars),
        ],
    )


@app.command()
@user_errors
def info(
    checkpoint: Annotated[
        Path,
        typer.Option(
            help="A checkpoint file, or a run directory (its best.pt).", show_default=False
        ),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
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
            ("parameters", details["parameters"]),
            ("vocabulary", f"{details['vocab_size']} {details['vocab_kind']}"),
            ("vocabulary preview", repr(details["vocab_preview"])),
            ("steps", details["step"]),
            ("characters seen", details["chars_seen"]),
            ("best val loss", details["best_val_loss"]),
            ("training time (s)", details["training_seconds"]),
            ("corpus", ", ".join(details["corpus"].get("sources", [])) or "-"),
        ],
    )
    print_table("configuration", flat_config)


def main() -> None:
    """Console-script entry point."""
    app()
