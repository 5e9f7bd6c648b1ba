"""The `charrnn` command line: parse options, call one function in `commands`, print the result.

`commands` loads torch, about 1.5 s of start-up, so it is imported inside the commands that need
it: `--help`, option errors and `prepare` (numpy only) answer at once.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from charrnn import __version__
from charrnn.config import (
    DEFAULT_PRESET,
    MODEL_KEYS,
    SampleConfig,
    given_keys,
    preset_names,
    resolve_config,
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

MODEL = "Model"
DATA = "Data"
OPTIM = "Optimisation"
LENGTH = "Run length and evaluation"
RUN = "Run"
THREADS_HELP = (
    "CPU threads for torch; 0 = auto (the cores this process may use). "
    "Fewer can be faster on a busy machine."
)


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
            rich_help_panel=RUN,
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from this checkpoint's weights (fine-tuning); new characters are added.",
            rich_help_panel=RUN,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"Start from a preset in configs/ ({', '.join(preset_names())}); "
            f"the defaults are '{DEFAULT_PRESET}'.",
            rich_help_panel=RUN,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of settings; flags given here override it.",
            rich_help_panel=RUN,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run directory (default runs/<corpus>-<time>).", rich_help_panel=RUN),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where encoded corpora are cached (default: .cache beside the run).",
            rich_help_panel=RUN,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.", rich_help_panel=RUN)
    ] = False,
    cell: Annotated[
        str | None, typer.Option(help="lstm, gru or rnn.", rich_help_panel=MODEL)
    ] = None,
    nonlinearity: Annotated[
        str | None, typer.Option(help="For --cell rnn: tanh or relu.", rich_help_panel=MODEL)
    ] = None,
    layers: Annotated[
        int | None, typer.Option(help="Stacked recurrent layers.", rich_help_panel=MODEL)
    ] = None,
    hidden: Annotated[
        int | None, typer.Option(help="Units per recurrent layer.", rich_help_panel=MODEL)
    ] = None,
    embed: Annotated[
        int | None, typer.Option(help="Character embedding size.", rich_help_panel=MODEL)
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(
            help="Dropout in [0, 1) between layers and before the output.", rich_help_panel=MODEL
        ),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Text encoding of the corpus files.", rich_help_panel=DATA)
    ] = None,
    bytes_: Annotated[
        bool | None,
        typer.Option(
            "--bytes/--chars",
            help="Model raw bytes instead of characters.",
            rich_help_panel=DATA,
            show_default=False,
        ),
    ] = None,
    val_frac: Annotated[
        float | None,
        typer.Option(
            help="Fraction of the text, at its end, kept for validation.", rich_help_panel=DATA
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Parallel streams per step.", rich_help_panel=OPTIM)
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(help="Characters per window of truncated backprop.", rich_help_panel=OPTIM),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (AdamW).", rich_help_panel=OPTIM)
    ] = None,
    min_lr: Annotated[
        float | None,
        typer.Option(help="Learning rate at the end of the cosine decay.", rich_help_panel=OPTIM),
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Steps of linear warmup.", rich_help_panel=OPTIM)
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(help="AdamW weight decay (matrices only).", rich_help_panel=OPTIM),
    ] = None,
    beta1: Annotated[float | None, typer.Option(help="AdamW beta1.", rich_help_panel=OPTIM)] = None,
    beta2: Annotated[float | None, typer.Option(help="AdamW beta2.", rich_help_panel=OPTIM)] = None,
    grad_clip: Annotated[
        float | None,
        typer.Option(help="Clip the gradient norm to this; 0 turns it off.", rich_help_panel=OPTIM),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many steps.", rich_help_panel=LENGTH)
    ] = None,
    max_epochs: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many passes over the training text.", rich_help_panel=LENGTH
        ),
    ] = None,
    max_time: Annotated[
        str | None,
        typer.Option(
            help="Stop after this long (90s, 10m, 2h); the schedule spans it.",
            rich_help_panel=LENGTH,
        ),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(help="Evaluate and checkpoint every N steps.", rich_help_panel=LENGTH),
    ] = None,
    log_every: Annotated[
        int | None, typer.Option(help="Write a metrics line every N steps.", rich_help_panel=LENGTH)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed (same seed, same machine: same run).", rich_help_panel=RUN),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=RUN)
    ] = None,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP, rich_help_panel=RUN)] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 on CUDA), fp32, bf16 or fp16.", rich_help_panel=RUN),
    ] = None,
    compile_: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model.",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a model on CORPUS and write checkpoints to a run directory.

    Example: charrnn train shakespeare.txt --max-time 10m
    """
    overrides = {
        "cell": cell, "nonlinearity": nonlinearity, "layers": layers, "hidden": hidden,
        "embed": embed, "dropout": dropout, "encoding": encoding, "bytes": bytes_,
        "val_frac": val_frac, "batch_size": batch_size, "seq_len": seq_len, "lr": lr,
        "min_lr": min_lr, "warmup_steps": warmup_steps, "weight_decay": weight_decay,
        "beta1": beta1, "beta2": beta2, "grad_clip": grad_clip, "max_steps": max_steps,
        "max_epochs": max_epochs, "max_time": max_time, "eval_every": eval_every,
        "log_every": log_every, "seed": seed, "device": device, "threads": threads,
        "precision": precision, "compile": compile_,
    }  # fmt: skip
    if resume is not None and (corpus or preset or config or out or init_from):
        raise UsageError(
            "--resume takes the corpus, settings and directory of the saved run; "
            "give only run-length, logging and device options with it"
        )
    if resume is None and not corpus:
        raise UsageError("give a CORPUS to train on (or --resume RUN_DIR)")
    shape_flags = sorted(given_keys(overrides) & MODEL_KEYS)
    if init_from is not None and shape_flags:
        flags = ", ".join("--" + key.replace("_", "-") for key in shape_flags)
        raise UsageError(f"--init-from keeps the checkpoint's network; {flags} cannot change")
    load_since = read_cpu_sample()  # before torch loads: auto threads judge the load from here
    from charrnn import commands

    bar = ProgressBar(disable=quiet)

    def started(outcome: commands.TrainOutcome) -> None:
        for warning in outcome.warnings:
            warning_line(warning)
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
                outcome = commands.train_command(
                    corpus, resolve_config(preset, config, overrides), out=out,
                    cache_dir=cache_dir, reporter=bar, should_stop=interrupts.requested,
                    on_start=started, init_from=init_from, load_since=load_since,
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


@app.command()
@user_errors
def prepare(
    corpus: Annotated[
        list[str], typer.Argument(help="Text files, directories or globs.", show_default=False)
    ],
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus files.")] = "utf-8",
    bytes_: Annotated[
        bool, typer.Option("--bytes/--chars", help="Model raw bytes instead of characters.")
    ] = False,
    cache_dir: Annotated[Path, typer.Option(help="Where the encoded corpus is cached.")] = Path(
        "runs/.cache"
    ),
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Read, build the vocabulary, encode and cache CORPUS: exactly what `train` does first."""
    data_config = resolve_config(overrides={"encoding": encoding, "bytes": bytes_}).data
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
def sample(
    checkpoint: Annotated[
        Path,
        typer.Option(
            help="A checkpoint file, or a run directory (its best.pt).", show_default=False
        ),
    ],
    length: Annotated[int, typer.Option(help="New characters per sample.")] = 500,
    temperature: Annotated[float, typer.Option(help="Below 1: safer text; above 1: wilder.")] = 0.8,
    top_k: Annotated[
        int | None, typer.Option(help="Draw only from the K most likely characters.")
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(help="Draw only from the most likely characters whose probability adds to P."),
    ] = None,
    greedy: Annotated[
        bool, typer.Option("--greedy", help="Always take the most likely character.")
    ] = False,
    prime: Annotated[str, typer.Option(help="Text to start from (it begins the output).")] = "",
    prime_file: Annotated[
        Path | None, typer.Option(help="Read the prime from this UTF-8 file.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for reproducible samples.")] = None,
    num_samples: Annotated[int, typer.Option(help="Samples to generate, as one batch.")] = 1,
    stop: Annotated[
        str | None, typer.Option(help=r"End a sample where this text appears (\n, \t understood).")
    ] = None,
    separator: Annotated[
        str, typer.Option(help=r"Printed between samples (\n, \t understood).")
    ] = r"\n\n",
    unknown: Annotated[
        str, typer.Option(help="Prime characters the model never saw: error or skip.")
    ] = "error",
    output: Annotated[
        Path | None, typer.Option(help="Write the samples to this file instead of stdout.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "cpu",
    threads: Annotated[int, typer.Option(help=THREADS_HELP)] = 0,
) -> None:
    """Generate text from a trained model; it streams to stdout as it is generated.

    Example: charrnn sample --checkpoint runs/shakespeare-... --prime "ROMEO:" --length 300
    """
    if prime_file is not None:
        try:
            prime = prime_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read prime file {prime_file}: {exc}") from None
    sample_config = SampleConfig(
        length=length, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
        seed=seed, num_samples=num_samples, stop=unescape(stop), unknown=unknown,
    )  # fmt: skip
    stream = output is None and num_samples == 1

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
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
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
