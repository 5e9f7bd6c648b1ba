"""One plan, one executor: every way of starting training ends in `execute(plan, hooks)`.

A new run, `--init-from`, `distill` and `--resume` differ only in how the model, the vocabulary
and the objective are filled in: `plan_new_run`, `plan_distillation` and `plan_resume` build a
`RunPlan`; `execute` trains it under the run directory's lock with one `TrainHooks` object
(progress, stopping, previews), and the CLI and the Python API both call it through `commands`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from charrnn.config import (
    CACHE_DIR_NAME,
    RUNS_DIR,
    DistillConfig,
    RunConfig,
    check_init_from_flags,
    count_parameters,
    evaluation_chars,
    resume_config,
)
from charrnn.errors import CorpusError, TrainingError, UsageError
from charrnn.generation.sampling import preview_text
from charrnn.model.checkpoint import Checkpoint, load_checkpoint
from charrnn.model.network import CharRNN, autocast_failure
from charrnn.run_dir import RunDir
from charrnn.system.cpuload import CpuSample
from charrnn.system.device import CpuThreads, autocast_dtype, select_device
from charrnn.text.corpus import (
    Corpus,
    StreamBatches,
    Vocab,
    fit_batch_shape,
    format_symbols,
    prepare_corpus,
    split_train_val,
)
from charrnn.text.run_text import cache_dirs, corpus_record, run_corpus
from charrnn.training.distributed import (
    World,
    check_batch_split,
    check_resume_world,
    joined,
    placement_from_env,
    rank_device,
)

if TYPE_CHECKING:
    from charrnn.training.autosize import AutoChoice, PrecisionChoice
    from charrnn.training.trainer import Objective, Progress, Reporter, Trainer


def _never() -> bool:
    return False


@dataclass
class TrainHooks:
    """How a caller watches and steers a run; every part is optional.

    `reporter` shows progress; `should_stop()` asks for a save-and-stop after the current step
    (Ctrl-C); `on_start(outcome)` hears where the run goes before the first step;
    `on_preview(step, text)` receives a sample of `preview_chars` after each evaluation;
    `load_since` is a CPU reading from the command's start, for auto threads.
    """

    reporter: Reporter | None = None
    should_stop: Callable[[], bool] = _never
    on_start: Callable[[TrainOutcome], None] | None = None
    on_preview: Callable[[int, str], None] | None = None
    load_since: CpuSample | None = None


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

    @property
    def run(self) -> RunDir:
        """The run directory's files."""
        return RunDir(self.run_dir)


@dataclass
class RunPlan:
    """Everything a training run needs once the corpus and model are ready."""

    config: RunConfig
    corpus: Corpus
    vocab: Vocab
    ids: np.ndarray
    model: CharRNN
    run: RunDir
    warnings: list[str] = field(default_factory=list)
    restore_from: Checkpoint | None = None  # a resume continues from this last.pt
    corpus_record: dict[str, Any] | None = None  # a resumed run's, kept in its checkpoints
    objective: Objective | None = None  # what training minimises; None: cross-entropy
    auto: AutoChoice | None = None  # what --auto chose, for config.json and the user
    precision: PrecisionChoice | None = None  # what --precision auto chose on a CPU
    auto_reason: str | None = None  # why --auto chose when the user did not ask it to

    def notices(self) -> list[str]:
        """What the start of the run tells the user: --auto's and --precision auto's choices."""
        reason = f" ({self.auto_reason})" if self.auto_reason else ""
        said = [self.auto.notice() + reason if self.auto else None]
        said.append(self.precision.notice() if self.precision else None)
        return [notice for notice in said if notice]


@dataclass
class _Start:
    """What a new run starts from: the text in its vocabulary, and the weights or objective that
    `--init-from` or a teacher bring (the rest of planning is the same for all)."""

    corpus: Corpus
    vocab: Vocab
    ids: np.ndarray
    warnings: list[str] = field(default_factory=list)
    base: Checkpoint | None = None  # --init-from: the weights to start from
    objective: Objective | None = None  # distill: the teacher's loss


def default_run_dir(specs: Sequence[str | Path], runs_root: Path = RUNS_DIR) -> Path:
    """runs/<first corpus name>-<date>-<time>."""
    stem = Path(str(specs[0]).rstrip("/")).stem or "corpus"
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:40]
    return runs_root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def default_cache_dir(run_dir: Path) -> Path:
    """Corpus caches live beside the runs that use them."""
    return run_dir.parent / CACHE_DIR_NAME


# ----------------------------------------------------------------------------- planning


def plan_new_run(
    specs: Sequence[str | Path],
    config: RunConfig,
    run: RunDir,
    cache_dir: Path,
    init_from: Path | None = None,
    auto_kept: Collection[str] = (),
    load_since: CpuSample | None = None,
) -> RunPlan:
    """A fresh run on `specs`, or one starting from `init_from`'s weights (its vocabulary grown
    by the corpus' new symbols). With `auto` set the model, batch and window are chosen first,
    leaving the keys in `auto_kept` (given by the user) as they are."""
    select_device(config.train.device)  # fail before the corpus work, not after
    corpus = prepare_corpus(specs, config.data, cache_dir)
    start = _Start(corpus, corpus.vocab, corpus.ids)
    if init_from is not None:
        base = load_checkpoint(init_from)
        start = _start_from_base(corpus, base, config)
        config = dataclasses.replace(config, model=base.config.model)
    return _plan_start(start, config, run, auto_kept, load_since)


def _start_from_base(corpus: Corpus, base: Checkpoint, config: RunConfig) -> _Start:
    """`--init-from`: the base's vocabulary extended with the corpus' new symbols."""
    check_init_from_flags(
        {"init_from"}, bytes_=config.data.bytes, checkpoint_bytes=base.vocab.is_bytes
    )
    vocab = base.vocab.extended_with(corpus.vocab)
    warnings = []
    if vocab.size > base.vocab.size:
        added = [
            chr(s) if not vocab.is_bytes else f"0x{s:02x}" for s in vocab.symbols[base.vocab.size :]
        ]
        warnings.append(
            f"vocabulary extended with {len(added)} new symbol(s) "
            f"(new rows freshly initialised): {format_symbols(added)}"
        )
    return _Start(corpus, vocab, corpus.vocab.remap(corpus.ids, vocab), warnings, base=base)


def plan_distillation(
    specs: Sequence[str | Path],
    teacher_path: Path,
    config: RunConfig,
    distill_config: DistillConfig,
    run: RunDir,
    cache_dir: Path,
    load_since: CpuSample | None = None,
) -> RunPlan:
    """A new student (the shape `config` gives) learning from `teacher_path`'s softened
    predictions of the corpus, in the teacher's vocabulary."""
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
    corpus = prepare_corpus(specs, config.data, cache_dir)
    unseen = sorted(set(corpus.vocab.symbols) - set(teacher.vocab.symbols))
    if unseen:
        shown = [f"0x{s:02x}" if teacher.vocab.is_bytes else chr(s) for s in unseen]
        raise CorpusError(
            f"the corpus has {len(unseen)} symbol(s) the teacher never saw: "
            f"{format_symbols(shown)}; distill on text in the teacher's vocabulary"
        )
    vocab = teacher.vocab  # the student predicts the teacher's symbols
    start = _Start(corpus, vocab, corpus.vocab.remap(corpus.ids, vocab), objective=objective)
    return _plan_start(start, config, run, (), load_since)


def _plan_start(
    start: _Start,
    config: RunConfig,
    run: RunDir,
    auto_kept: Collection[str],
    load_since: CpuSample | None,
) -> RunPlan:
    """The part of planning every new run shares: --auto, the batch shape, the run directory
    and the model."""
    auto = None
    placement = placement_from_env()
    check_precision(config)
    if config.train.auto and placement.distributed:  # ranks probing apart could choose apart
        raise UsageError("--auto measures one process's speed: start it without torchrun")
    # A distillation keeps the student's shape as given: the --auto probe measures plain
    # cross-entropy steps, not the teacher's.
    if config.train.auto and start.objective is None:
        run.create()  # refuse a run directory in use before spending the probe
        config, auto = _auto_size(config, start.vocab, start.ids, auto_kept, run, load_since)
    warnings = list(start.warnings)
    config = _fit_batches(config, start.ids, warnings)
    check_batch_split(config.train.batch_size, placement)
    precision = None
    # Ranks probing apart could choose apart, and a distillation's steps are not the probe's:
    # both keep auto as fp32.
    if not placement.distributed and start.objective is None:
        config, precision = _choose_precision(config)
    config = _fix_evaluation_chars(config, start.ids)
    if placement.is_writer:  # the other ranks of a torchrun job write nothing
        run.create()
    torch.manual_seed(config.train.seed)
    if start.base is not None:
        model = start.base.build_model()
        model.resize_vocab(start.vocab.size)
    else:
        model = CharRNN(config.model, start.vocab.size)
    return RunPlan(
        config,
        start.corpus,
        start.vocab,
        start.ids,
        model,
        run,
        warnings,
        objective=start.objective,
        auto=auto,
        precision=precision,
    )


def plan_resume(run: RunDir, overrides: dict[str, Any], cache_dir: Path | None = None) -> RunPlan:
    """The run in `run` continued from its last.pt exactly where it stopped (or extended)."""
    last = run.resumable()
    checkpoint = load_checkpoint(last)
    check_resume_world(run.path, checkpoint.resume.get("world_size", 1), placement_from_env())
    config = resume_config(checkpoint.config, overrides)
    # The recorded precision, unless this command line gives another (then it is the one asked).
    check_precision(config, resumed=overrides.get("precision") is None)
    record = checkpoint.corpus
    sources = record.get("sources") or []
    search, write_dir = cache_dirs(record, default_cache_dir(run.path), cache_dir)
    hint = (
        "restore the files, or go on with the new text in a new run: "
        f"charrnn train {' '.join(sources)} --init-from {last}"
    )
    corpus, warnings = run_corpus(record, config.data, search, write_dir, hint)
    if not set(corpus.vocab.symbols) <= set(checkpoint.vocab.symbols):
        raise CorpusError(
            f"the corpus of {run.path} changed since the run started: {', '.join(sources)}"
        )
    ids = corpus.vocab.remap(corpus.ids, checkpoint.vocab)
    model = checkpoint.build_model().train()
    objective = None
    if checkpoint.objective:  # a distillation continues with its teacher
        from charrnn.training.distill import resumed_objective

        objective = resumed_objective(checkpoint.objective, select_device(config.train.device))
    return RunPlan(
        config,
        corpus,
        checkpoint.vocab,
        ids,
        model,
        run,
        warnings,
        restore_from=checkpoint,
        objective=objective,
        corpus_record=record if record.get("key") else None,  # else: pinned from now on
    )


def check_precision(config: RunConfig, resumed: bool = False) -> None:
    """Refuse, in one line and before any work, a `--precision` this device cannot train the
    model in (on a CPU without AVX512, oneDNN has no bf16 or fp16 LSTM). `auto` always can: on
    a CPU it keeps fp32 where bf16 fails."""
    precision, model = config.train.precision, config.model
    device = select_device(config.train.device)
    dtype = autocast_dtype(precision, device)
    failure = None if dtype is None else autocast_failure(model, dtype, device)
    if failure is None:
        return
    cannot = f"this {device.type.upper()} cannot train the {model.cell} in {precision} ({failure})"
    if resumed:
        raise TrainingError(
            f"this run trains in {precision}, but {cannot}; go on in fp32 with --precision fp32"
        )
    raise UsageError(f"--precision {precision}: {cannot}; use --precision fp32 or auto")


def _auto_size(
    config: RunConfig,
    vocab: Vocab,
    ids: np.ndarray,
    kept: Collection[str],
    run: RunDir,
    load_since: CpuSample | None,
) -> tuple[RunConfig, AutoChoice]:
    """`autosize.auto_size` on the training split, with the threads the run will train with."""
    from charrnn.training.autosize import auto_size  # it imports the training loop

    train_ids = split_train_val(ids, config.data.val_frac)[0]
    with CpuThreads(config.train.threads, load_since) as threads:
        return auto_size(config, vocab, np.asarray(train_ids), kept, run.path, threads)


def _choose_precision(config: RunConfig) -> tuple[RunConfig, PrecisionChoice | None]:
    """`autosize.choose_run_precision`: `--precision auto` on a CPU by rule (its instructions and
    the run's shape), nothing timed."""
    if config.train.precision != "auto" or config.train.auto:
        return config, None  # not loading the training loop for nothing
    from charrnn.training.autosize import choose_run_precision

    return choose_run_precision(config)


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


# ----------------------------------------------------------------------------- executing


def execute(plan: RunPlan, hooks: TrainHooks) -> TrainOutcome:
    """Split, batch and train `plan` under the run directory's lock, told to `hooks`."""
    # Imported here so that sample, eval and info never load the training loop.
    from charrnn.training.trainer import Progress

    config = plan.config
    placement = placement_from_env()  # under torchrun: this rank; else a world of one
    writer = placement.is_writer
    parameters = count_parameters(config.model, plan.vocab.size)
    outcome = TrainOutcome(
        plan.run.path, Progress(), config, plan.corpus, parameters, plan.warnings, writer,
        plan.notices(),
    )  # fmt: skip
    device = rank_device(select_device(config.train.device), placement)
    lock = plan.run.lock() if writer else contextlib.nullcontext()  # rank 0 writes
    share = placement.local_size  # the ranks on this machine share its CPUs
    with (
        lock,
        joined(placement, device, config.train.collective_timeout) as world,
        CpuThreads(
            config.train.threads, hooks.load_since, share=share, partners=world.sibling_pids
        ) as threads,
    ):
        if writer:
            plan.run.remove_leftovers()  # left by a killed save; the lock is ours
        if placement.distributed and plan.restore_from is None:
            # The weights are built alike on every rank; dropout draws differ from here on.
            torch.manual_seed(config.train.seed + placement.rank)
        trainer = _trainer(plan, hooks, device, world, threads)
        _begin(plan, trainer, writer)
        if hooks.on_start and writer:
            hooks.on_start(outcome)
        outcome.progress = trainer.run()
    return outcome


def _trainer(
    plan: RunPlan, hooks: TrainHooks, device: torch.device, world: World, threads: CpuThreads
) -> Trainer:
    """The training loop of `plan` on this rank's share of the streams."""
    from charrnn.training.trainer import Trainer

    config, writer = plan.config, world.is_writer
    train_ids, val_ids = split_train_val(plan.ids, config.data.val_frac)
    corpus_info = plan.corpus_record or corpus_record(
        plan.corpus, int(train_ids.shape[0]), int(val_ids.shape[0])
    )
    batches = StreamBatches(
        train_ids, config.train.batch_size, config.train.seq_len, part=(world.rank, world.size)
    )
    return Trainer(
        plan.model,
        batches,
        np.asarray(val_ids[: config.train.eval_chars or None]),
        config,
        plan.vocab,
        plan.run.path,
        device,
        reporter=hooks.reporter if writer else None,
        corpus_info=corpus_info,
        should_stop=hooks.should_stop,
        threads=threads,
        world=world,
        on_evaluate=_previewer(plan, threads, hooks.on_preview) if writer else None,
        objective=plan.objective,
    )


def _begin(plan: RunPlan, trainer: Trainer, writer: bool) -> None:
    """Restore a resumed run (refusing one already finished), or write a new run's config.json."""
    if plan.restore_from is not None:
        trainer.restore(plan.restore_from)
        if trainer.fraction_done() >= 1.0:
            raise UsageError(
                f"the run in {plan.run.path} already finished at step "
                f"{trainer.progress.step:,}; pass a larger --max-steps, --max-epochs or "
                "--max-time to extend it"
            )
        if writer:
            trainer.metrics.truncate_after(trainer.progress.step)
    elif writer:
        auto = plan.auto.to_dict() if plan.auto else None
        precision = plan.precision.to_dict() if plan.precision else None
        write_run_config(
            plan.run.path, plan.config, trainer.corpus_info, trainer.objective.record, auto,
            precision,
        )  # fmt: skip


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
    extra: dict[str, Any] = {"objective": objective} if objective else {}
    if auto:
        extra["auto"] = auto
    if precision:
        extra["precision_rule"] = precision
    RunDir(run_dir).write_config({**config.to_dict(), "corpus": corpus_info, **extra})


def _previewer(
    plan: RunPlan, threads: CpuThreads, on_preview: Callable[[int, str], None] | None
) -> Callable[[CharRNN, Progress], None] | None:
    """The trainer's after-evaluation hook that samples a preview, or None for no preview."""
    length = plan.config.train.preview_chars
    if on_preview is None or length == 0:
        return None

    def preview(model: CharRNN, progress: Progress) -> None:
        # The run's seed at every evaluation: the text changes only as the model does.
        text = preview_text(model, plan.vocab, length, plan.config.train.seed, threads)
        on_preview(progress.step, text)

    return preview
