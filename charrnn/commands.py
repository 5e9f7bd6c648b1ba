"""One function per command: they wire config -> data -> model -> train -> checkpoint.

The CLI parses options, calls one of these and prints what it returns; tests and library users
call them directly with the same config objects.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.analysis.inspect_view import memory_compare_table as memory_compare_table  # compare
from charrnn.analysis.inspection import Inspection, InspectOptions
from charrnn.analysis.memory import MAX_TEXT, MemoryReport, memory_report
from charrnn.analysis.metrics import MetricsTally
from charrnn.analysis.run_history import read_run, summarize
from charrnn.analysis.scoring import (
    EvalResult,
    dynamic_score_ids,
    encode_files,
    require_scored,
    score_texts,
    validation_ids,
)
from charrnn.config import (
    AUTO_UNASKED,
    DEFAULT_DEVICE,
    DYNAMIC_LR,
    DataConfig,
    DistillConfig,
    RunConfig,
    SampleConfig,
    ServeConfig,
    auto_by_default,
    auto_kept_keys,
    check_train_options,
    resolve_config,
    validate_sample_config,
    validate_serve_config,
    validate_threads,
)
from charrnn.errors import MissingExtraError, UsageError, WriteError
from charrnn.generation.interactive import Reply as Reply  # interactive_command yields these
from charrnn.generation.interactive import ReplyEnd as ReplyEnd
from charrnn.generation.interactive import ReplyEvent as ReplyEvent
from charrnn.generation.interactive import ReplyText as ReplyText
from charrnn.generation.interactive import Session
from charrnn.generation.interactive import Unreadable as Unreadable
from charrnn.generation.sampling import generate
from charrnn.model.checkpoint import (
    Checkpoint,
    is_built_in,
    load_checkpoint,
    load_model,
    resolve_checkpoint_path,
)
from charrnn.model.export import export_command as export_command  # `charrnn export`, re-exported
from charrnn.model.network import CharRNN
from charrnn.run_dir import RunDir
from charrnn.system.atomic import atomic_write_text
from charrnn.system.cpuload import CpuSample
from charrnn.system.device import CpuThreads, select_device, select_sampling_device
from charrnn.text.preprocess import preprocess_text
from charrnn.training.distributed import placement_from_env
from charrnn.training.plan import TrainHooks as TrainHooks
from charrnn.training.plan import TrainOutcome as TrainOutcome
from charrnn.training.plan import (
    default_cache_dir,
    default_run_dir,
    execute,
    plan_distillation,
    plan_new_run,
    plan_resume,
)
from charrnn.training.plan import write_run_config as write_run_config  # re-exported
from charrnn.version import install_hint


@dataclass(frozen=True)
class TrainRequest:
    """What `charrnn train` and `charrnn.train` are asked: a corpus (or a run to resume), the
    settings (keys to values, None: not given) and where the run and its cache go."""

    corpus: Sequence[str | Path] | None
    settings: dict[str, Any]
    resume: Path | None = None
    init_from: Path | None = None
    preset: str | None = None
    config_file: Path | None = None
    out: Path | None = None
    cache_dir: Path | None = None


def train_or_resume(request: TrainRequest, hooks: TrainHooks | None = None) -> TrainOutcome:
    """What `charrnn train` and `charrnn.train` do: check the options, then start a run from
    `corpus` (defaults <- preset <- config file <- `settings`) or continue `resume`."""
    r = request
    check_train_options(
        r.settings,
        corpus=r.corpus,
        resume=r.resume,
        init_from=r.init_from,
        preset=r.preset,
        config=r.config_file,
        out=r.out,
    )
    if r.resume is not None:
        return resume_command(r.resume, r.settings, cache_dir=r.cache_dir, hooks=hooks)
    assert r.corpus  # check_train_options refused a run with neither
    run_config = resolve_config(r.preset, r.config_file, r.settings)
    auto_reason = None
    unasked = auto_by_default(
        r.settings, preset=r.preset, config=r.config_file, init_from=r.init_from
    )
    if unasked and not placement_from_env().distributed:
        run_config = run_config.replace(auto=True)
        auto_reason = AUTO_UNASKED
    # --auto leaves alone what the user set: flags and the --config file's keys.
    auto_kept = auto_kept_keys(r.config_file, r.settings) if run_config.train.auto else set()
    return train_command(
        r.corpus,
        run_config,
        out=r.out,
        cache_dir=r.cache_dir,
        init_from=r.init_from,
        auto_kept=auto_kept,
        auto_reason=auto_reason,
        hooks=hooks,
    )


def train_command(
    specs: Sequence[str | Path],
    config: RunConfig,
    *,
    out: Path | None = None,
    cache_dir: Path | None = None,
    init_from: Path | None = None,
    auto_kept: Collection[str] = (),
    auto_reason: str | None = None,
    hooks: TrainHooks | None = None,
) -> TrainOutcome:
    """Prepare the corpus, build the model (fresh, or from `init_from`) and train it.

    With `auto` set, the model, batch and window are chosen first (`autosize`), leaving the
    keys in `auto_kept` (given by the user) as they are; `auto_reason` says why when the user
    did not ask. `hooks` watch and steer the run."""
    hooks = hooks or TrainHooks()
    run, cache_dir = _new_run_place(specs, out, cache_dir)
    plan = plan_new_run(specs, config, run, cache_dir, init_from, auto_kept, hooks.load_since)
    plan.auto_reason = auto_reason
    return execute(plan, hooks)


def resume_command(
    run_dir: Path,
    overrides: dict[str, Any],
    cache_dir: Path | None = None,
    *,
    hooks: TrainHooks | None = None,
) -> TrainOutcome:
    """Continue a run from its last.pt exactly where it stopped (or extend a finished one)."""
    hooks = hooks or TrainHooks()
    return execute(plan_resume(RunDir(run_dir), overrides, cache_dir), hooks)


def distill_command(
    specs: Sequence[str | Path],
    teacher_path: Path,
    config: RunConfig,
    distill_config: DistillConfig,
    *,
    out: Path | None = None,
    cache_dir: Path | None = None,
    hooks: TrainHooks | None = None,
) -> TrainOutcome:
    """Train a new student (the shape `config` gives) on `teacher_path`'s softened predictions
    of the corpus, in the teacher's vocabulary; resumed like any run (`resume_command`)."""
    hooks = hooks or TrainHooks()
    run, cache_dir = _new_run_place(specs, out, cache_dir)
    plan = plan_distillation(
        specs, teacher_path, config, distill_config, run, cache_dir, hooks.load_since
    )
    return execute(plan, hooks)


def _new_run_place(
    specs: Sequence[str | Path], out: Path | None, cache_dir: Path | None
) -> tuple[RunDir, Path]:
    """A new run's directory (`out`, else runs/<corpus>-<time>) and its corpus cache."""
    run_dir = out or default_run_dir(specs)
    return RunDir(run_dir), cache_dir or default_cache_dir(run_dir)


def write_samples(path: Path, text: str) -> None:
    """`sample --output`: the text, written atomically (a full disk leaves an earlier file
    whole and raises `WriteError`)."""
    atomic_write_text(path, text)


def sample_command(
    checkpoint_path: Path,
    prime: str,
    config: SampleConfig,
    device_name: str = DEFAULT_DEVICE,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield `(sample, piece)` as text is generated from a saved model (`threads`: torch CPU
    threads, 0 = auto; `load_since`: a CPU reading from the command's start, for auto)."""
    validate_sample_config(config)
    validate_threads(threads)
    with CpuThreads(threads, load_since) as cpu_threads:
        model, checkpoint = load_model(checkpoint_path, select_sampling_device(device_name))
        model_prime = preprocess_text(prime, checkpoint.config.data)  # as the corpus was
        yield from generate(model, checkpoint.vocab, model_prime, config, cpu_threads)


def interactive_command(
    checkpoint_path: Path,
    prime: str,
    config: SampleConfig,
    lines: Iterable[str],
    reset: bool = False,
    device_name: str = DEFAULT_DEVICE,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> Generator[Reply, None, None]:
    """A session over one loaded model (`generation.interactive.Session`): yield one reply per
    line of `lines`, each an iterator of events (`ReplyText` pieces, then `ReplyEnd`; or one
    `Unreadable`). Read or close each reply before the next: closed early (Ctrl-C), it leaves
    the text as it was and the session goes on.

    The options are checked at once, before anything is loaded (`UsageError`)."""
    validate_sample_config(config)
    validate_threads(threads)
    return _session_replies(
        checkpoint_path, prime, config, lines, reset, device_name, threads, load_since
    )


def _session_replies(
    checkpoint_path: Path,
    prime: str,
    config: SampleConfig,
    lines: Iterable[str],
    reset: bool,
    device_name: str,
    threads: int,
    load_since: CpuSample | None,
) -> Generator[Reply, None, None]:
    """`interactive_command`'s replies, once its options are checked."""
    with CpuThreads(threads, load_since) as cpu_threads:
        model, checkpoint = load_model(checkpoint_path, select_sampling_device(device_name))
        data_config = checkpoint.config.data  # primes and lines are read as the corpus was
        session = Session(
            model, checkpoint.vocab, config, preprocess_text(prime, data_config), reset,
            cpu_threads,
        )  # fmt: skip
        for line in lines:
            yield _reply_to(session, line, data_config)


def _reply_to(session: Session, line: str, data_config: DataConfig) -> Reply:
    """`session.turn` for a line read as the corpus was (inside the reply, so that Ctrl-C
    there stops this reply only)."""
    yield from session.turn(preprocess_text(line, data_config))


SERVE_HINT = f"charrnn serve needs starlette and uvicorn: {install_hint('serve')}"


def serve_command(
    checkpoint_path: Path,
    config: ServeConfig,
    on_listening: Callable[[str], None],
    device_name: str = DEFAULT_DEVICE,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> None:
    """Serve a saved model over HTTP until Ctrl-C or SIGTERM (`charrnn.serve`); the model
    loads while the server starts, and `on_listening(url)` says where it listens."""
    validate_serve_config(config)
    validate_threads(threads)
    try:
        from charrnn.serve.app import run_server
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("starlette", "uvicorn"):
            raise MissingExtraError(SERVE_HINT) from None
        raise
    device = select_sampling_device(device_name)
    path = Path(checkpoint_path)
    name = config.name or (path.name if path.is_dir() or path.suffix != ".pt" else path.parent.name)
    with CpuThreads(threads, load_since):
        run_server(lambda: load_model(path, device), config, name or path.stem, on_listening)


def eval_command(
    checkpoint_path: Path,
    files: Sequence[Path],
    encoding: str | None = None,
    device_name: str = DEFAULT_DEVICE,
    streams: int | None = None,
    threads: int = 0,
    load_since: CpuSample | None = None,
    *,
    dynamic: bool = False,
    dynamic_lr: float = DYNAMIC_LR,
) -> EvalResult:
    """Score the given files, or the validation split of the training corpus: loss, accuracy
    and F1, and with `dynamic` the loss under dynamic evaluation as well."""
    validate_threads(threads)
    if not (math.isfinite(dynamic_lr) and dynamic_lr > 0):
        raise UsageError(f"dynamic-lr must be positive, got {dynamic_lr}")
    with CpuThreads(threads, load_since) as cpu_threads:
        device = select_device(device_name)
        model, checkpoint = load_model(checkpoint_path, device)
        streams = streams or checkpoint.config.train.eval_streams
        if streams < 1:
            raise UsageError(f"streams must be >= 1, got {streams}")
        if files:
            texts = encode_files(checkpoint, list(files), encoding)
        else:
            cache_dir = default_cache_dir(RunDir.of(checkpoint_path).path)
            texts = [(validation_ids(checkpoint, cache_dir), 0)]
        tally, unknown_id = MetricsTally(checkpoint.vocab.size), checkpoint.vocab.unknown_id
        result = score_texts(model, texts, streams, device, cpu_threads, tally, unknown_id)
        if files:
            require_scored(result)
        result = dataclasses.replace(result, metrics=tally.result(checkpoint.vocab))
        if not dynamic:
            return result
        window = checkpoint.config.train.seq_len
        adapted = EvalResult(0.0, 0)
        for ids, _ in texts:
            adapted = adapted + dynamic_score_ids(
                model, ids, window, dynamic_lr, device, cpu_threads, unknown_id
            )
        return dataclasses.replace(result, dynamic=adapted)


def info_command(checkpoint_path: Path) -> dict[str, Any]:
    """What a checkpoint holds, as plain data."""
    model, checkpoint = load_model(checkpoint_path)
    return describe_checkpoint(checkpoint, model, is_built_in(checkpoint_path))


def describe_checkpoint(
    checkpoint: Checkpoint, model: CharRNN, built_in: bool = False
) -> dict[str, Any]:
    """Config, vocabulary, size and progress of a checkpoint (`built_in`: one in the package)."""
    vocab = checkpoint.vocab
    preview_text = "".join(f"\\x{s:02x}" if vocab.is_bytes else chr(s) for s in vocab.symbols[:96])
    progress = checkpoint.progress
    return {
        "config": checkpoint.config.to_dict(),
        "vocab_size": vocab.size,
        "vocab_kind": "bytes" if vocab.is_bytes else "characters",
        "vocab_preview": preview_text,
        "unknown_symbol": None if vocab.unknown is None else chr(vocab.unknown),
        "preprocessing": checkpoint.corpus.get("prep"),
        "parameters": checkpoint.parameters,
        "step": progress.get("step"),
        "chars_seen": progress.get("chars_seen"),
        "best_val_loss": progress.get("best_val_loss"),
        "val_loss": progress.get("val_loss"),
        "training_seconds": progress.get("elapsed"),
        "corpus": checkpoint.corpus,
        "export": checkpoint.export,
        "objective": checkpoint.objective,
        "built_in": built_in,
    }


def compare_command(
    run_dirs: Sequence[Path],
    memory: bool = False,
    plot: Path | None = None,
    device_name: str = DEFAULT_DEVICE,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> list[dict[str, Any]]:
    """Each run's key configuration, parameters, progress and best loss (see `runs.summarize`);
    with `memory` (or `plot`, an image of the curves) each one's memory analysis of its
    validation split under "memory" (`analysis.memory`)."""
    validate_threads(threads)
    runs = [read_run(run_dir) for run_dir in run_dirs]
    summaries = [summarize(run, _parameters_of(run.path)) for run in runs]
    if not (memory or plot):
        return summaries
    if plot is not None:
        _check_image_path(plot)
    with CpuThreads(threads, load_since) as cpu_threads:
        device = select_device(device_name)
        for run, summary in zip(runs, summaries, strict=True):
            path = RunDir(run.path).checkpoint()
            if path is None:
                raise UsageError(f"{run.path} has no checkpoint yet: nothing to analyse")
            summary["memory"] = validation_memory(path, device, cpu_threads)
    if plot is not None:
        from charrnn.analysis.plot import plot_memory

        plot_memory([(s["run"], s["memory"]) for s in summaries], plot)
    return summaries


MEMORY_CACHE_VERSION = 1  # raise when the analysis changes what it reports


def validation_memory(
    checkpoint_path: Path, device: Any, threads: CpuThreads | None = None
) -> dict[str, Any]:
    """The memory analysis (default sizes) of a checkpoint's validation split (a checkpoint or
    a run directory), as plain data; cached in its run directory (memory.json) for as long as
    the checkpoint file is unchanged (not for the built-in models)."""
    path = resolve_checkpoint_path(Path(checkpoint_path))
    run = None if is_built_in(Path(checkpoint_path)) else RunDir.of(path)
    stat = path.stat()
    key = {
        "version": MEMORY_CACHE_VERSION,
        "checkpoint": path.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    cached = None if run is None else run.read_memory(key)
    if cached is not None:
        return cached
    model, checkpoint = load_model(path, device)
    memory = memory_report(model, _validation_ids(checkpoint, path), threads=threads).to_dict()
    if run is not None:
        run.write_memory(key, memory)
    return memory


def _check_image_path(path: Path) -> None:
    """Refuse an image the memory plot cannot write, before the work."""
    from charrnn.analysis.plot import image_format

    image_format(path)
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: no directory {path.parent}")


def _validation_ids(checkpoint: Checkpoint, checkpoint_path: Path) -> np.ndarray:
    """The validation split of the checkpoint's corpus (as `charrnn eval` finds it)."""
    return validation_ids(checkpoint, default_cache_dir(RunDir.of(checkpoint_path).path))


def _known_prefix(chunks: Iterable[np.ndarray], checkpoint: Checkpoint, limit: int) -> np.ndarray:
    """The ids of the first `limit` symbols of a text the vocabulary knows."""
    parts, count = [], 0
    for chunk in chunks:
        ids, _ = checkpoint.vocab.known_ids(np.asarray(chunk, dtype=np.int64))
        parts.append(ids)
        count += ids.shape[0]
        if count >= limit:
            break
    return np.concatenate(parts)[:limit] if parts else np.zeros(0, dtype=np.int64)


def memory_of_model(
    model: CharRNN,
    checkpoint: Checkpoint,
    checkpoint_path: Path,
    text: str | None = None,
    threads: CpuThreads | None = None,
    **sizes: Any,
) -> MemoryReport:
    """`Model.memory`: the memory analysis of `text` (read as the corpus was), or of the
    validation split when None; `sizes` as `analysis.memory.memory_report` takes them."""
    if text is None:
        ids = _validation_ids(checkpoint, checkpoint_path)[:MAX_TEXT]
    else:
        ids, _ = checkpoint.vocab.encode_known(preprocess_text(text, checkpoint.config.data))
    return memory_report(model, np.asarray(ids, dtype=np.int64), threads=threads, **sizes)


def _parameters_of(run_dir: Path) -> int | None:
    """The parameter count of a run's model, from its best (else last) checkpoint."""
    path = RunDir(run_dir).checkpoint()
    return None if path is None else load_checkpoint(path).parameters


@dataclass
class InspectOutcome:
    """What `charrnn inspect` found, and its renderings: `report` for the terminal (a rich
    renderable), `data` for --json, the HTML file and the memory plot written, if any."""

    inspection: Inspection
    report: Any
    data: dict[str, Any] | None
    html_path: Path | None
    memory: dict[str, Any] | None = None  # `MemoryReport.to_dict()`
    plot_path: Path | None = None


def inspect_command(
    checkpoint_path: Path,
    source: Path | str | None,
    options: InspectOptions,
    device_name: str = DEFAULT_DEVICE,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> InspectOutcome:
    """Stream a text (a file, stdin for "-", or None: the validation split of the model's
    corpus) through a model and show what it expected, what its units did, (with
    `options.find`) which units track simple features of the text, and (with `options.memory`)
    how far back it remembers."""
    from charrnn.analysis import inspect_view
    from charrnn.analysis.inspection import (
        UnitRef,
        inspect_symbols,
        parse_cell_index,
        symbol_chunks,
    )

    validate_threads(threads)
    if options.show < 0:
        raise UsageError(f"--show must be >= 0 (0: all), got {options.show}")
    if options.find_top < 1:
        raise UsageError(f"--find-top must be >= 1, got {options.find_top}")
    if options.html is not None and not options.html.parent.is_dir():  # say so before the work
        raise UsageError(f"cannot write {options.html}: no directory {options.html.parent}")
    if options.plot is not None:
        _check_image_path(options.plot)
    device = select_device(device_name)
    model, checkpoint = load_model(checkpoint_path, device)
    config = checkpoint.config.model
    state = options.state or ("c" if config.cell == "lstm" else "h")
    if state not in ("c", "h") or (state == "c" and config.cell != "lstm"):
        raise UsageError(
            f"--state {state}: a {config.cell.upper()} has only h"
            if state == "c"
            else f"--state {state}: expected c (LSTM cell state) or h (output)"
        )
    unit = None
    if options.cell_index is not None:
        layer, index = parse_cell_index(options.cell_index, config.layers, config.hidden)
        unit = UnitRef(layer, index, state)
    encoding = options.encoding or checkpoint.config.data.encoding
    if source is None:
        symbols = np.asarray(checkpoint.vocab.symbols, dtype=np.int64)
        pieces = [symbols[np.asarray(_validation_ids(checkpoint, Path(checkpoint_path)))]]
    elif str(source) == "-" and (options.memory or options.plot):  # stdin is read once
        pieces = list(symbol_chunks(source, checkpoint.vocab, encoding, checkpoint.config.data))
    else:
        pieces = None

    def chunks() -> Iterable[np.ndarray]:
        if pieces is not None:
            return iter(pieces)
        assert source is not None
        return symbol_chunks(source, checkpoint.vocab, encoding, checkpoint.config.data)

    memory_data = None
    with CpuThreads(threads, load_since) as cpu_threads:
        if (options.memory or options.plot) and source is None:
            memory_data = validation_memory(checkpoint_path, device, cpu_threads)
        elif options.memory or options.plot:  # first: a text too short for it fails at once
            ids = _known_prefix(chunks(), checkpoint, MAX_TEXT)
            memory_data = memory_report(model, ids, threads=cpu_threads).to_dict()
        inspection = inspect_symbols(
            model, checkpoint.vocab, chunks(), options.show, options.find, device, cpu_threads,
            options.find_top,
        )  # fmt: skip
    label = "stdin" if str(source) == "-" else str(source)
    label = "the validation split" if source is None else label
    html_path = None
    if options.html is not None:
        page = inspect_view.html_report(inspection, label, unit, memory_data)
        try:
            atomic_write_text(options.html, page)
        except WriteError as exc:
            raise UsageError(str(exc)) from None
        html_path = options.html
    if options.plot is not None and memory_data is not None:
        from charrnn.analysis.plot import plot_memory

        plot_memory([(label, memory_data)], options.plot)
    data = inspect_view.json_report(inspection, unit, memory_data) if options.json else None
    report = (
        None
        if options.json
        else inspect_view.terminal_report(inspection, label, unit, options.plain, memory_data)
    )
    return InspectOutcome(inspection, report, data, html_path, memory_data, options.plot)
