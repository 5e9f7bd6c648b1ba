"""One function per command: they wire config -> data -> model -> train -> checkpoint.

The CLI parses options, calls one of these and prints what it returns; tests and library users
call them directly with the same config objects.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from charrnn.checkpoint import LAST_NAME, Checkpoint, load_checkpoint, load_model, run_lock
from charrnn.config import (
    CACHE_DIR_NAME,
    DEFAULT_DEVICE,
    RUNS_DIR,
    RunConfig,
    SampleConfig,
    check_init_from_flags,
    evaluation_chars,
    resume_config,
    validate_sample_config,
    validate_threads,
)
from charrnn.cpuload import CpuSample
from charrnn.data import (
    Corpus,
    StreamBatches,
    Vocab,
    fit_batch_shape,
    format_symbols,
    prepare_corpus,
    split_train_val,
)
from charrnn.device import CpuThreads, select_device, select_sampling_device
from charrnn.errors import CheckpointError, CorpusError, TrainingError, UsageError, WriteError
from charrnn.evaluate import EvalResult, evaluate_files, score_ids, validation_ids
from charrnn.files import atomic_write_json, stale_temp_files
from charrnn.generate import generate
from charrnn.model import CharRNN

if TYPE_CHECKING:
    from charrnn.autosize import AutoChoice
    from charrnn.train import Progress, Reporter


@dataclass
class TrainOutcome:
    """Where a run was written, how far it got, and what the user should be told."""

    run_dir: Path
    progress: Progress
    config: RunConfig
    corpus: Corpus
    parameters: int
    warnings: list[str] = field(default_factory=list)
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
    return {
        "sources": [str(Path(s).resolve()) for s in corpus.sources],
        "n_chars": corpus.n_chars,
        "n_train": n_train,
        "n_val": n_val,
    }


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
    auto: AutoChoice | None = None  # what --auto chose, for config.json and the user


def _run(
    job: _Job,
    reporter: Reporter | None,
    should_stop: Callable[[], bool],
    on_start: Callable[[TrainOutcome], None] | None,
) -> TrainOutcome:
    """Split, batch and train `job` under the run directory's lock."""
    # Imported here so that sample, eval and info never load the training loop.
    from charrnn.train import Progress, Trainer

    config = job.config
    train_ids, val_ids = split_train_val(job.ids, config.data.val_frac)
    outcome = TrainOutcome(
        job.run_dir, Progress(), config, job.corpus, job.model.num_parameters(), job.warnings,
        [job.auto.notice()] if job.auto else [],
    )  # fmt: skip
    corpus_info = _corpus_info(job.corpus, int(train_ids.shape[0]), int(val_ids.shape[0]))
    with run_lock(job.run_dir), CpuThreads(config.train.threads, job.load_since) as threads:
        for stale in stale_temp_files(job.run_dir):  # left by a killed save; the lock is ours
            stale.unlink(missing_ok=True)
        trainer = Trainer(
            job.model,
            StreamBatches(train_ids, config.train.batch_size, config.train.seq_len),
            np.asarray(val_ids[: config.train.eval_chars or None]),
            config,
            job.vocab,
            job.run_dir,
            select_device(config.train.device),
            reporter=reporter,
            corpus_info=corpus_info,
            should_stop=should_stop,
            threads=threads,
        )
        if job.restore_from is not None:
            trainer.restore(job.restore_from)
            if trainer.fraction_done() >= 1.0:
                raise UsageError(
                    f"the run in {job.run_dir} already finished at step {trainer.progress.step:,}; "
                    "pass a larger --max-steps, --max-epochs or --max-time to extend it"
                )
            trainer.metrics.truncate_after(trainer.progress.step)
        else:
            write_run_config(
                job.run_dir, config, corpus_info, job.auto.to_dict() if job.auto else None
            )
        if on_start:
            on_start(outcome)
        outcome.progress = trainer.run()
    return outcome


def write_run_config(
    run_dir: Path,
    config: RunConfig,
    corpus_info: dict[str, Any],
    auto: dict[str, Any] | None = None,
) -> None:
    """config.json: the run's settings and corpus (and what --auto chose and why)."""
    record = {**config.to_dict(), "corpus": corpus_info, **({"auto": auto} if auto else {})}
    try:
        atomic_write_json(run_dir / "config.json", record)
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
    auto_kept: Collection[str] = (),
) -> TrainOutcome:
    """Prepare the corpus, build the model (fresh, or from `init_from`) and train it.

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
    config = _fix_evaluation_chars(config, ids)
    _make_run_dir(run_dir)
    torch.manual_seed(config.train.seed)
    if base is not None:
        model = base.build_model()
        model.resize_vocab(vocab.size)
    else:
        model = CharRNN(config.model, vocab.size)
    job = _Job(
        config, corpus, vocab, ids, model, run_dir, warnings, load_since=load_since, auto=auto
    )
    return _run(job, reporter, should_stop, on_start)


def _auto_size(
    config: RunConfig,
    vocab: Vocab,
    ids: np.ndarray,
    kept: Collection[str],
    run_dir: Path,
    load_since: CpuSample | None,
) -> tuple[RunConfig, AutoChoice]:
    """`autosize.auto_size` on the training split, with the threads the run will train with."""
    from charrnn.autosize import auto_size  # it imports the training loop

    train_ids = split_train_val(ids, config.data.val_frac)[0]
    with CpuThreads(config.train.threads, load_since) as threads:
        return auto_size(config, vocab, np.asarray(train_ids), kept, run_dir, threads)


def resume_command(
    run_dir: Path,
    overrides: dict[str, Any],
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[TrainOutcome], None] | None = None,
    load_since: CpuSample | None = None,
) -> TrainOutcome:
    """Continue a run from its last.pt exactly where it stopped (or extend a finished one)."""
    if not run_dir.is_dir():
        raise UsageError(f"--resume needs a run directory; not found: {run_dir}")
    last = run_dir / LAST_NAME
    if not last.is_file():
        raise CheckpointError(f"run directory {run_dir} has no {LAST_NAME} to resume from")
    checkpoint = load_checkpoint(last)
    config = resume_config(checkpoint.config, overrides)
    sources = checkpoint.corpus.get("sources") or []
    corpus = prepare_corpus(sources, config.data, cache_dir or default_cache_dir(run_dir))
    if not set(corpus.vocab.symbols) <= set(checkpoint.vocab.symbols):
        raise CorpusError(
            f"the corpus of {run_dir} changed since the run started: {', '.join(sources)}"
        )
    ids = corpus.vocab.remap(corpus.ids, checkpoint.vocab)
    model = checkpoint.build_model().train()
    job = _Job(
        config, corpus, checkpoint.vocab, ids, model, run_dir,
        restore_from=checkpoint, load_since=load_since,
    )  # fmt: skip
    return _run(job, reporter, should_stop, on_start)


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
        return generate(model, checkpoint.vocab, prime, config, on_text, cpu_threads)


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
    from charrnn.session import Session

    validate_sample_config(config)
    validate_threads(threads)
    with CpuThreads(threads, load_since) as cpu_threads:
        model, checkpoint = load_model(checkpoint_path, select_sampling_device(device_name))
        session = Session(model, checkpoint.vocab, config, prime, reset, cpu_threads)
        while True:
            try:
                line = read_line()
            except KeyboardInterrupt:
                return session.turns
            if line is None:
                return session.turns
            try:
                texts = session.reply(line, on_text)
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
) -> EvalResult:
    """Score the given files, or the validation split of the training corpus."""
    validate_threads(threads)
    with CpuThreads(threads, load_since) as cpu_threads:
        return _evaluate(checkpoint_path, files, encoding, device_name, streams, cpu_threads)


def _evaluate(
    checkpoint_path: Path,
    files: Sequence[Path],
    encoding: str | None,
    device_name: str,
    streams: int | None,
    threads: CpuThreads,
) -> EvalResult:
    device = select_device(device_name)
    model, checkpoint = load_model(checkpoint_path, device)
    streams = streams or checkpoint.config.train.eval_streams
    if streams < 1:
        raise UsageError(f"streams must be >= 1, got {streams}")
    if files:
        return evaluate_files(model, checkpoint, list(files), encoding, streams, device, threads)
    cache_dir = default_cache_dir(_run_dir_of(checkpoint_path))
    return score_ids(model, validation_ids(checkpoint, cache_dir), streams, device, threads)


def _run_dir_of(checkpoint_path: Path) -> Path:
    return checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent


def info_command(checkpoint_path: Path) -> dict[str, Any]:
    """What a checkpoint holds, as plain data."""
    model, checkpoint = load_model(checkpoint_path)
    return describe_checkpoint(checkpoint, model)


def describe_checkpoint(checkpoint: Checkpoint, model: CharRNN) -> dict[str, Any]:
    """Config, vocabulary, size and progress of a checkpoint."""
    vocab = checkpoint.vocab
    preview_text = "".join(f"\\x{s:02x}" if vocab.is_bytes else chr(s) for s in vocab.symbols[:96])
    progress = checkpoint.progress
    return {
        "config": checkpoint.config.to_dict(),
        "vocab_size": vocab.size,
        "vocab_kind": "bytes" if vocab.is_bytes else "characters",
        "vocab_preview": preview_text,
        "parameters": model.num_parameters(),
        "step": progress.get("step"),
        "chars_seen": progress.get("chars_seen"),
        "best_val_loss": progress.get("best_val_loss"),
        "val_loss": progress.get("val_loss"),
        "training_seconds": progress.get("elapsed"),
        "corpus": checkpoint.corpus,
    }
