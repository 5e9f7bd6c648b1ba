"""One function per command: they wire config -> data -> model -> train -> checkpoint.

The CLI parses options, calls one of these and prints what it returns; tests and library users
call them directly with the same config objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from charrnn.analysis.inspection import Inspection, InspectOptions
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
    CACHE_DIR_NAME,
    DEFAULT_DEVICE,
    DYNAMIC_LR,
    RUNS_DIR,
    DistillConfig,
    RunConfig,
    SampleConfig,
    auto_kept_keys,
    check_init_from_flags,
    check_train_options,
    evaluation_chars,
    resolve_config,
    resume_config,
    validate_sample_config,
    validate_threads,
)
from charrnn.errors import CheckpointError, CorpusError, TrainingError, UsageError, WriteError
from charrnn.generation.sampling import generate, preview_text
from charrnn.model.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    Checkpoint,
    is_built_in,
    load_checkpoint,
    load_model,
    run_lock,
)
from charrnn.model.export import export_command as export_command  # `charrnn export`, re-exported
from charrnn.model.network import CharRNN
from charrnn.system.atomic import atomic_write_json, atomic_write_text, stale_temp_files
from charrnn.system.cpuload import CpuSample
from charrnn.system.device import CpuThreads, select_device, select_sampling_device
from charrnn.text.corpus import (
    Corpus,
    StreamBatches,
    Vocab,
    fit_batch_shape,
    format_symbols,
    prepare_corpus,
    split_train_val,
)
from charrnn.text.preprocess import preprocess_text
from charrnn.text.run_text import cache_dirs, corpus_record, run_corpus
from charrnn.training.distributed import (
    check_batch_split,
    check_resume_world,
    joined,
    placement_from_env,
    rank_device,
)

if TYPE_CHECKING:
    from charrnn.training.autosize import AutoChoice, PrecisionChoice
    from charrnn.training.trainer import Objective, Progress, Reporter


@dataclass
class TrainOutcome:
    """Where a run was written, how far it got, and what the user should be told."""

    run_dir: Path
    progress: Progress
    config: RunConfig
    corpus: Corpus
    parameters: int
    warnings: list[str] = field(default_factory=list)
    writer: bool = True  # False on ranks other than 0 under torchrun: rank 0 speaks for the job
    notices: list[str] = field(default_factory=list)  # e.g. what --auto chose and why


def default_run_dir(specs: Sequence[str | Path], runs_root: Path = RUNS_DIR) -> Path:
    """runs/<first corpus name>-<date>-<time>."""
    stem = Path(str(specs[0]).rstrip("/")).stem or "corpus"
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:40]
    return runs_root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def default_cache_dir(run_dir: Path) -> Path:
    """Corpus caches live beside the runs that use them."""
    return run_dir.parent / CACHE_DIR_NAME


def _make_run_dir(run_dir: Path) -> None:
    # Only a resumable run is protected: a run killed before its first last.pt starts over.
    if (run_dir / LAST_NAME).exists():
        raise UsageError(
            f"run directory {run_dir} already holds checkpoints; use --resume {run_dir} to "
            "continue it or choose another --out"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from None


def _corpus_info(corpus: Corpus, n_train: int, n_val: int) -> dict[str, Any]:
    return corpus_record(corpus, n_train, n_val)


@dataclass
class _Job:
    """Everything a training run needs once the corpus and model are ready."""

    config: RunConfig
    corpus: Corpus
    vocab: Vocab
    ids: np.ndarray
    model: CharRNN
    run_dir: Path
    warnings: list[str] = field(default_factory=list)
    restore_from: Checkpoint | None = None
    load_since: CpuSample | None = None  # a CPU reading from the command's start
    corpus_record: dict[str, Any] | None = None  # a resumed run's, kept in its checkpoints
    objective: Objective | None = None  # what training minimises; None: cross-entropy
    auto: AutoChoice | None = None  # what --auto chose, for config.json and the user
    precision: PrecisionChoice | None = None  # what --precision auto chose on a CPU


def _run(
    job: _Job,
    reporter: Reporter | None,
    should_stop: Callable[[], bool],
    on_start: Callable[[TrainOutcome], None] | None,
    on_preview: Callable[[int, str], None] | None = None,
) -> TrainOutcome:
    """Split, batch and train `job` under the run directory's lock; `on_preview(step, text)`
    receives a sample of `preview_chars` after each evaluation."""
    # Imported here so that sample, eval and info never load the training loop.
    from charrnn.training.trainer import Progress, Trainer

    config = job.config
    placement = placement_from_env()  # under torchrun: this rank; else a world of one
    writer = placement.is_writer
    train_ids, val_ids = split_train_val(job.ids, config.data.val_frac)
    outcome = TrainOutcome(
        job.run_dir, Progress(), config, job.corpus, job.model.num_parameters(), job.warnings,
        writer=writer, notices=_notices(job),
    )  # fmt: skip
    corpus_info = job.corpus_record or _corpus_info(
        job.corpus, int(train_ids.shape[0]), int(val_ids.shape[0])
    )
    device = rank_device(select_device(config.train.device), placement)
    lock = run_lock(job.run_dir) if writer else contextlib.nullcontext()  # rank 0 writes
    with (
        lock,
        joined(placement, device, config.train.collective_timeout) as world,
        CpuThreads(
            config.train.threads, job.load_since,
            share=placement.local_size, partners=world.sibling_pids,
        ) as threads,
    ):  # fmt: skip
        if writer:
            for stale in stale_temp_files(job.run_dir):  # left by a killed save; the lock is ours
                stale.unlink(missing_ok=True)
        if placement.distributed and job.restore_from is None:
            # The weights are built alike on every rank; dropout draws differ from here on.
            torch.manual_seed(config.train.seed + placement.rank)
        trainer = Trainer(
            job.model,
            StreamBatches(
                train_ids,
                config.train.batch_size,
                config.train.seq_len,
                part=(placement.rank, placement.size),
            ),  # fmt: skip
            np.asarray(val_ids[: config.train.eval_chars or None]),
            config,
            job.vocab,
            job.run_dir,
            device,
            reporter=reporter if writer else None,
            corpus_info=corpus_info,
            should_stop=should_stop,
            threads=threads,
            world=world,
            on_evaluate=_previewer(job, threads, on_preview) if writer else None,
            objective=job.objective,
        )
        if job.restore_from is not None:
            trainer.restore(job.restore_from)
            if trainer.fraction_done() >= 1.0:
                raise UsageError(
                    f"the run in {job.run_dir} already finished at step {trainer.progress.step:,}; "
                    "pass a larger --max-steps, --max-epochs or --max-time to extend it"
                )
            if writer:
                trainer.metrics.truncate_after(trainer.progress.step)
        elif writer:
            write_run_config(
                job.run_dir, config, corpus_info, trainer.objective.record,
                job.auto.to_dict() if job.auto else None,
                job.precision.to_dict() if job.precision else None,
            )  # fmt: skip
        if on_start and writer:
            on_start(outcome)
        outcome.progress = trainer.run()
    return outcome


def _notices(job: _Job) -> list[str]:
    """What the start of the run tells the user: --auto's and --precision auto's choices."""
    notices = [job.auto.notice()] if job.auto else []
    said = job.precision.notice() if job.precision else None
    return notices + ([said] if said else [])


def _previewer(
    job: _Job, threads: CpuThreads, on_preview: Callable[[int, str], None] | None
) -> Callable[[CharRNN, Progress], None] | None:
    """The trainer's after-evaluation hook that samples a preview, or None for no preview."""
    length = job.config.train.preview_chars
    if on_preview is None or length == 0:
        return None

    def preview(model: CharRNN, progress: Progress) -> None:
        # The run's seed at every evaluation: the text changes only as the model does.
        text = preview_text(model, job.vocab, length, job.config.train.seed, threads)
        on_preview(progress.step, text)

    return preview


def write_run_config(
    run_dir: Path,
    config: RunConfig,
    corpus_info: dict[str, Any],
    objective: dict[str, Any] | None = None,
    auto: dict[str, Any] | None = None,
    precision: dict[str, Any] | None = None,
) -> None:
    """config.json: the run's settings and corpus (and a distillation's teacher, what --auto
    and --precision auto chose and why), for people and tools."""
    extra = {"objective": objective} if objective else {}
    if auto:
        extra["auto"] = auto
    if precision:
        extra["precision_probe"] = precision
    try:
        atomic_write_json(
            run_dir / "config.json", {**config.to_dict(), "corpus": corpus_info, **extra}
        )
    except WriteError as exc:
        raise TrainingError(str(exc)) from None


def _fit_batches(config: RunConfig, ids: np.ndarray, warnings: list[str]) -> RunConfig:
    # Split first: a split with no training or validation text is the error to report.
    n_train = int(split_train_val(ids, config.data.val_frac)[0].shape[0])
    batch_size, seq_len, warning = fit_batch_shape(
        n_train, config.train.batch_size, config.train.seq_len
    )
    if warning is None:
        return config
    warnings.append(warning)
    return config.replace(batch_size=batch_size, seq_len=seq_len)


def _fix_evaluation_chars(config: RunConfig, ids: np.ndarray) -> RunConfig:
    """The config with auto `eval_chars` resolved to a number, recorded with the run, so every
    evaluation of it (after a resume too) scores the same validation prefix."""
    n_val = int(split_train_val(ids, config.data.val_frac)[1].shape[0])
    return config.replace(eval_chars=evaluation_chars(config.train, n_val))


def train_command(
    specs: Sequence[str | Path],
    config: RunConfig,
    out: Path | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[TrainOutcome], None] | None = None,
    init_from: Path | None = None,
    load_since: CpuSample | None = None,
    on_preview: Callable[[int, str], None] | None = None,
    auto_kept: Collection[str] = (),
) -> TrainOutcome:
    """Prepare the corpus, build the model (fresh, or from `init_from`) and train it
    (`on_preview(step, text)`: a sample after each evaluation, see `_run`).

    With `auto` set, the model, batch and window are chosen first (`autosize`), leaving the
    keys in `auto_kept` (given by the user) as they are."""
    run_dir = out or default_run_dir(specs)
    cache_dir = cache_dir or default_cache_dir(run_dir)
    select_device(config.train.device)  # fail before the corpus work, not after
    corpus = prepare_corpus(specs, config.data, cache_dir)
    warnings: list[str] = []
    vocab, ids = corpus.vocab, corpus.ids
    base = None
    if init_from is not None:
        base = load_checkpoint(init_from)
        check_init_from_flags(
            {"init_from"}, bytes_=config.data.bytes, checkpoint_bytes=base.vocab.is_bytes
        )
        config = dataclasses.replace(config, model=base.config.model)
        vocab = base.vocab.extended_with(corpus.vocab)
        if vocab.size > base.vocab.size:
            added = [
                chr(s) if not vocab.is_bytes else f"0x{s:02x}"
                for s in vocab.symbols[base.vocab.size :]
            ]
            warnings.append(
                f"vocabulary extended with {len(added)} new symbol(s) "
                f"(new rows freshly initialised): {format_symbols(added)}"
            )
        ids = corpus.vocab.remap(ids, vocab)
    auto = None
    if config.train.auto:
        _make_run_dir(run_dir)  # refuse a run directory in use before spending the probe
        config, auto = _auto_size(config, vocab, ids, auto_kept, run_dir, load_since)
    config = _fit_batches(config, ids, warnings)
    placement = placement_from_env()
    check_batch_split(config.train.batch_size, placement)
    precision = None
    if not placement.distributed:  # ranks probing apart could choose apart: auto stays fp32
        config, precision = _choose_precision(config, vocab, ids, run_dir, load_since)
    config = _fix_evaluation_chars(config, ids)
    if placement.is_writer:  # the other ranks of a torchrun job write nothing
        _make_run_dir(run_dir)
    torch.manual_seed(config.train.seed)
    if base is not None:
        model = base.build_model()
        model.resize_vocab(vocab.size)
    else:
        model = CharRNN(config.model, vocab.size)
    job = _Job(
        config, corpus, vocab, ids, model, run_dir, warnings, load_since=load_since, auto=auto,
        precision=precision,
    )  # fmt: skip
    return _run(job, reporter, should_stop, on_start, on_preview)


def _auto_size(
    config: RunConfig,
    vocab: Vocab,
    ids: np.ndarray,
    kept: Collection[str],
    run_dir: Path,
    load_since: CpuSample | None,
) -> tuple[RunConfig, AutoChoice]:
    """`autosize.auto_size` on the training split, with the threads the run will train with."""
    from charrnn.training.autosize import auto_size  # it imports the training loop

    train_ids = split_train_val(ids, config.data.val_frac)[0]
    with CpuThreads(config.train.threads, load_since) as threads:
        return auto_size(config, vocab, np.asarray(train_ids), kept, run_dir, threads)


def _choose_precision(
    config: RunConfig,
    vocab: Vocab,
    ids: np.ndarray,
    run_dir: Path,
    load_since: CpuSample | None,
) -> tuple[RunConfig, PrecisionChoice | None]:
    """`autosize.choose_run_precision` on the training split, with the run's threads; before
    the run's seed is set, so the weights do not depend on the probe."""
    if config.train.precision != "auto" or config.train.auto:
        return config, None  # not loading the training loop for nothing
    from charrnn.training.autosize import choose_run_precision

    train_ids = np.asarray(split_train_val(ids, config.data.val_frac)[0])
    with CpuThreads(config.train.threads, load_since) as threads:
        return choose_run_precision(config, vocab, train_ids, run_dir, threads)


def resume_command(
    run_dir: Path,
    overrides: dict[str, Any],
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[TrainOutcome], None] | None = None,
    load_since: CpuSample | None = None,
    on_preview: Callable[[int, str], None] | None = None,
) -> TrainOutcome:
    """Continue a run from its last.pt exactly where it stopped (or extend a finished one)."""
    if not run_dir.is_dir():
        raise UsageError(f"--resume needs a run directory; not found: {run_dir}")
    last = run_dir / LAST_NAME
    if not last.is_file():
        raise CheckpointError(f"run directory {run_dir} has no {LAST_NAME} to resume from")
    checkpoint = load_checkpoint(last)
    check_resume_world(run_dir, checkpoint.resume.get("world_size", 1), placement_from_env())
    config = resume_config(checkpoint.config, overrides)
    record = checkpoint.corpus
    sources = record.get("sources") or []
    search, write_dir = cache_dirs(record, default_cache_dir(run_dir), cache_dir)
    hint = (
        "restore the files, or go on with the new text in a new run: "
        f"charrnn train {' '.join(sources)} --init-from {last}"
    )
    corpus, warnings = run_corpus(record, config.data, search, write_dir, hint)
    if not set(corpus.vocab.symbols) <= set(checkpoint.vocab.symbols):
        raise CorpusError(
            f"the corpus of {run_dir} changed since the run started: {', '.join(sources)}"
        )
    ids = corpus.vocab.remap(corpus.ids, checkpoint.vocab)
    model = checkpoint.build_model().train()
    objective = None
    if checkpoint.objective:  # a distillation continues with its teacher
        from charrnn.training.distill import resumed_objective

        objective = resumed_objective(checkpoint.objective, select_device(config.train.device))
    job = _Job(
        config, corpus, checkpoint.vocab, ids, model, run_dir, warnings,
        restore_from=checkpoint, load_since=load_since, objective=objective,
        corpus_record=record if record.get("key") else None,  # else: pinned from now on
    )  # fmt: skip
    return _run(job, reporter, should_stop, on_start, on_preview)


def train_or_resume(
    corpus: Sequence[str | Path] | None,
    settings: dict[str, Any],
    *,
    resume: Path | None = None,
    init_from: Path | None = None,
    preset: str | None = None,
    config_file: Path | None = None,
    out: Path | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[TrainOutcome], None] | None = None,
    load_since: CpuSample | None = None,
    on_preview: Callable[[int, str], None] | None = None,
) -> TrainOutcome:
    """What `charrnn train` and `charrnn.train` do: check the options, then start a run from
    `corpus` (defaults <- preset <- config file <- `settings`) or continue `resume`.

    `settings` maps setting keys to values; None means not given.
    """
    check_train_options(
        settings, corpus=corpus, resume=resume, init_from=init_from, preset=preset,
        config=config_file, out=out,
    )  # fmt: skip
    if resume is not None:
        return resume_command(
            resume, settings, cache_dir=cache_dir, reporter=reporter, should_stop=should_stop,
            on_start=on_start, load_since=load_since, on_preview=on_preview,
        )  # fmt: skip
    assert corpus  # check_resume_flags refused a run with neither
    run_config = resolve_config(preset, config_file, settings)
    # --auto leaves alone what the user set: flags and the --config file's keys.
    auto_kept = auto_kept_keys(config_file, settings) if run_config.train.auto else set()
    return train_command(
        corpus, run_config, out=out, cache_dir=cache_dir, reporter=reporter,
        should_stop=should_stop, on_start=on_start, init_from=init_from, load_since=load_since,
        on_preview=on_preview, auto_kept=auto_kept,
    )  # fmt: skip


def write_samples(path: Path, text: str) -> None:
    """`sample --output`: the text, written atomically (a full disk leaves an earlier file
    whole and raises `WriteError`)."""
    atomic_write_text(path, text)


def sample_command(
    checkpoint_path: Path,
    prime: str,
    config: SampleConfig,
    device_name: str = DEFAULT_DEVICE,
    on_text: Callable[[int, str], None] | None = None,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> list[str]:
    """Generate text from a saved model (`threads`: torch CPU threads, 0 = auto; `load_since`:
    a CPU reading from the command's start, for auto)."""
    validate_sample_config(config)
    validate_threads(threads)
    with CpuThreads(threads, load_since) as cpu_threads:
        model, checkpoint = load_model(checkpoint_path, select_sampling_device(device_name))
        model_prime = preprocess_text(prime, checkpoint.config.data)  # as the corpus was
        return generate(model, checkpoint.vocab, model_prime, config, on_text, cpu_threads)


def interactive_command(
    checkpoint_path: Path,
    prime: str,
    config: SampleConfig,
    read_line: Callable[[], str | None],
    on_text: Callable[[int, str], None] | None,
    on_reply: Callable[[list[str] | None], None],
    on_error: Callable[[str], None],
    reset: bool = False,
    device_name: str = DEFAULT_DEVICE,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> int:
    """A prompt loop over one loaded model (`session.Session`); returns the turns taken.

    `read_line()` gives the next line, None at the end of input (Ctrl-D); a KeyboardInterrupt
    there (Ctrl-C) ends the session too. Each reply streams through `on_text`, then
    `on_reply(texts)`; Ctrl-C while it is written stops that reply (`on_reply(None)`, the text
    stays as it was) and the loop goes on, as it does after a line the model cannot read
    (`on_error(message)`)."""
    from charrnn.generation.interactive import Session

    validate_sample_config(config)
    validate_threads(threads)
    with CpuThreads(threads, load_since) as cpu_threads:
        model, checkpoint = load_model(checkpoint_path, select_sampling_device(device_name))
        data_config = checkpoint.config.data  # primes and lines are read as the corpus was
        session = Session(
            model, checkpoint.vocab, config, preprocess_text(prime, data_config), reset,
            cpu_threads,
        )  # fmt: skip
        while True:
            try:
                line = read_line()
            except KeyboardInterrupt:
                return session.turns
            if line is None:
                return session.turns
            try:
                texts = session.reply(preprocess_text(line, data_config), on_text)
            except KeyboardInterrupt:
                on_reply(None)
                continue
            except UsageError as exc:
                on_error(str(exc))
                continue
            on_reply(texts)


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
            cache_dir = default_cache_dir(_run_dir_of(checkpoint_path))
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


def _run_dir_of(checkpoint_path: Path) -> Path:
    return checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent


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
        "parameters": model.num_parameters(),
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


def compare_command(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Each run's key configuration, parameters, progress and best loss (see `runs.summarize`)."""
    summaries = []
    for run_dir in run_dirs:
        run = read_run(run_dir)
        summaries.append(summarize(run, _parameters_of(run.path)))
    return summaries


def _parameters_of(run_dir: Path) -> int | None:
    """The parameter count of a run's model, from its best (else last) checkpoint."""
    for name in (BEST_NAME, LAST_NAME):
        if (run_dir / name).is_file():
            checkpoint = load_checkpoint(run_dir / name)
            return sum(tensor.numel() for tensor in checkpoint.model_state.values())
    return None


@dataclass
class InspectOutcome:
    """What `charrnn inspect` found, and its renderings: `report` for the terminal (a rich
    renderable), `data` for --json, and the HTML file written, if any."""

    inspection: Inspection
    report: Any
    data: dict[str, Any] | None
    html_path: Path | None


def inspect_command(
    checkpoint_path: Path,
    source: Path | str,
    options: InspectOptions,
    device_name: str = DEFAULT_DEVICE,
    threads: int = 0,
    load_since: CpuSample | None = None,
) -> InspectOutcome:
    """Stream a text (a file, or stdin for "-") through a model and show what it expected, what
    its units did, and (with `options.find`) which units track simple features of the text."""
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
    chunks = symbol_chunks(
        source, checkpoint.vocab, options.encoding or checkpoint.config.data.encoding,
        checkpoint.config.data,
    )  # fmt: skip
    with CpuThreads(threads, load_since) as cpu_threads:
        inspection = inspect_symbols(
            model, checkpoint.vocab, chunks, options.show, options.find, device, cpu_threads,
            options.find_top,
        )  # fmt: skip
    label = "stdin" if str(source) == "-" else str(source)
    html_path = None
    if options.html is not None:
        try:
            atomic_write_text(options.html, inspect_view.html_report(inspection, label, unit))
        except WriteError as exc:
            raise UsageError(str(exc)) from None
        html_path = options.html
    data = inspect_view.json_report(inspection, unit) if options.json else None
    report = (
        None
        if options.json
        else inspect_view.terminal_report(inspection, label, unit, options.plain)
    )
    return InspectOutcome(inspection, report, data, html_path)


def distill_command(
    specs: Sequence[str | Path],
    teacher_path: Path,
    config: RunConfig,
    distill_config: DistillConfig,
    out: Path | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[TrainOutcome], None] | None = None,
    load_since: CpuSample | None = None,
    on_preview: Callable[[int, str], None] | None = None,
) -> TrainOutcome:
    """Train a new student (the shape `config` gives) on `teacher_path`'s softened predictions
    of the corpus, in the teacher's vocabulary; resumed like any run (`resume_command`)."""
    from charrnn.training.distill import load_teacher, new_objective

    if placement_from_env().distributed:  # the teacher's stream state is kept for one process
        raise UsageError("charrnn distill runs in one process: start it without torchrun")
    device = select_device(config.train.device)
    teacher_file, teacher = load_teacher(teacher_path)
    if config.data.bytes != teacher.vocab.is_bytes:
        kind = "bytes" if teacher.vocab.is_bytes else "characters"
        flag = "--bytes" if teacher.vocab.is_bytes else "--chars"
        raise UsageError(f"the teacher models {kind}; distill with {flag}")
    objective = new_objective(teacher_file, teacher, distill_config, device)
    run_dir = out or default_run_dir(specs)
    corpus = prepare_corpus(specs, config.data, cache_dir or default_cache_dir(run_dir))
    unseen = sorted(set(corpus.vocab.symbols) - set(teacher.vocab.symbols))
    if unseen:
        shown = [f"0x{s:02x}" if teacher.vocab.is_bytes else chr(s) for s in unseen]
        raise CorpusError(
            f"the corpus has {len(unseen)} symbol(s) the teacher never saw: "
            f"{format_symbols(shown)}; distill on text in the teacher's vocabulary"
        )
    vocab, warnings = teacher.vocab, []  # the student predicts the teacher's symbols
    ids = corpus.vocab.remap(corpus.ids, vocab)
    config = _fit_batches(config, ids, warnings)
    config = _fix_evaluation_chars(config, ids)
    _make_run_dir(run_dir)
    torch.manual_seed(config.train.seed)
    model = CharRNN(config.model, vocab.size)
    job = _Job(
        config, corpus, vocab, ids, model, run_dir, warnings, load_since=load_since,
        objective=objective,
    )  # fmt: skip
    return _run(job, reporter, should_stop, on_start, on_preview)
