"""The training loop: AdamW, warmup + cosine schedule, clipping, evaluation, metrics, checkpoints.

`Trainer` takes a built model and batches rather than constructing them, so the CLI, tests and
a future Python API share it. Positions in the data are a function of the step, and every piece
of state the loop carries (optimizer, RNG, hidden state, counters) goes into ``last.pt``, so a
resumed run continues exactly where the saved one stood.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.analysis.scoring import EvalResult, score_ids
from charrnn.config import RunConfig, TrainConfig
from charrnn.errors import TrainingError
from charrnn.model.checkpoint import Checkpoint, save_checkpoint
from charrnn.model.network import CharRNN, State, cat_states, detach_state, map_state, select_rows
from charrnn.run_dir import RunDir
from charrnn.system.device import CpuThreads, autocast_dtype
from charrnn.text.corpus import StreamBatches, Vocab
from charrnn.training.distributed import World

MAX_BAD_STEPS = 5  # consecutive non-finite steps before training stops
JUMP_FACTOR = 10.0  # a gradient norm this many times the recent median is a sudden jump
EARLY_JUMP_FACTOR = 100.0  # the same in warmup and the first steps, where norms move more
JUMP_HISTORY = 200  # steps whose gradient norms make that median
JUMP_MIN_HISTORY = 50  # steps (in this process) before JUMP_FACTOR applies
NORMS_KEPT_APART = 256  # a window's per-step norm tensors joined into one beyond this many
FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # MPS has a fused AdamW too; not measured here


@dataclass
class Progress:
    """Counters of a run; saved in every checkpoint and restored on resume."""

    step: int = 0
    chars_seen: int = 0
    elapsed: float = 0.0
    best_val_loss: float | None = None
    val_loss: float | None = None
    train_loss: float | None = None
    skipped_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


class Objective:
    """What a training step minimises: cross-entropy on the next character.

    `charrnn distill` passes another (the teacher's softened predictions mixed in) to `Trainer`.
    One that carries state across windows gives it in `resume_state` so a resume is exact, and
    `record` describes it in every checkpoint.
    """

    @property
    def record(self) -> dict[str, Any]:
        """Saved as every checkpoint's `objective`; empty for plain cross-entropy."""
        return {}

    def loss(
        self, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The scalar loss of one window; `logits` (B, T, V) are the model's on `inputs` (B, T)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def reset(self) -> None:
        """The streams start from the beginning of the text again (a new epoch)."""

    def resume_state(self) -> dict[str, Any]:
        """What `restore` needs to continue exactly; saved in last.pt."""
        return {}

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from what `resume_state` returned."""


class Reporter(Protocol):
    """Where the loop reports to (a progress bar, or nothing)."""

    def update(self, fraction: float, fields: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


class SilentReporter:
    """Reports nothing (for `--quiet`, tests and library use)."""

    def update(self, fraction: float, fields: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


def lr_at(step: int, fraction: float, config: TrainConfig) -> float:
    """Linear warmup over `warmup_steps`, then cosine from `lr` to `min_lr` as `fraction` -> 1."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))
    return warm * (config.min_lr + (config.lr - config.min_lr) * cosine)


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int | None:
    """The step budget from max_steps and max_epochs (None when only time limits the run)."""
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_epochs is not None:
        epoch_steps = config.max_epochs * steps_per_epoch
        if math.isfinite(epoch_steps):  # an absurd --max-epochs overflows: no limit, not a crash
            limits.append(max(1, math.ceil(epoch_steps)))
    return min(limits) if limits else None


def make_optimizer(model: CharRNN, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay applies to the recurrent and output matrices, not to biases or
    the embedding (decaying a rare character's embedding only erases it)."""
    embedding = {id(p) for p in model.embed.parameters()}
    decay = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in embedding]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or id(p) in embedding]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # One fused kernel per step instead of ~10 operations per parameter: on this CPU the
    # optimiser's share of a ~13 ms step fell from 1.1 to 0.5 ms (benchmarks/RESULTS.md).
    fused = {"fused": True} if device.type in FUSED_ADAMW_DEVICES else {}
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), **fused)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _state_to_cpu(state: State | None) -> Any:
    if state is None:
        return None
    return _saved_form(map_state(lambda part: part.detach().cpu(), state))


def _saved_form(state: State) -> Any:
    """A state as the resume record holds it: an LSTM's (h, c) as a list."""
    return list(state) if isinstance(state, tuple) else state


def _state_from_saved(saved: Any, device: torch.device, rows: slice = slice(None)) -> State | None:
    """The saved hidden state (all streams of the job) on `device`, only the streams `rows`."""
    if saved is None:
        return None
    return map_state(lambda part: part.to(device), select_rows(saved, rows))


def _join_states(states: list[Any]) -> Any:
    """The ranks' hidden states (CPU, in rank order) as one state of all the job's streams."""
    if states[0] is None or len(states) == 1:
        return states[0]
    return _saved_form(cat_states(states, dim=1))


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda" and device.index is not None:  # a rank owns one GPU
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda_device" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_are_finite(model: CharRNN) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class _LogWindow:
    """Loss, gradient norms and speed since the last metrics line, kept on the device (no
    per-step sync): they are read back once per line, by `close` and `take_norms`."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.steps, self.chars, self.start = 0, 0, time.perf_counter()
        self.norms: list[torch.Tensor] = []  # each step's gradient norm before clipping
        self.joined: list[torch.Tensor] = []  # earlier steps' norms, stacked in order
        self.first_step = 0  # the window's first step

    def add(self, loss: torch.Tensor | None, chars: int, step: int, norm: torch.Tensor) -> None:
        if loss is not None:
            self.loss_sum += loss
            self.steps += 1
        self.chars += chars
        if not self.norms and not self.joined:
            self.first_step = step
        self.norms.append(norm)
        if len(self.norms) >= NORMS_KEPT_APART:  # a long window: 4 bytes a step, not a tensor
            self.joined.append(torch.stack(self.norms))
            self.norms = []

    def close(self, lr: float) -> dict[str, Any]:
        """The window's record; starts anew. train_loss is None when every step was skipped,
        chars_per_s when there were none (an evaluation right after a logged last step)."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        record = {
            "train_loss": float(self.loss_sum) / self.steps if self.steps else None,
            "lr": lr,
            "chars_per_s": self.chars / elapsed if self.chars else None,
        }
        self.loss_sum.zero_()
        self.steps, self.chars = 0, 0
        self.restart()
        return record

    def take_norms(self) -> tuple[int, list[float]]:
        """The first step of the window and its steps' gradient norms, as floats; starts anew."""
        parts = self.joined + ([torch.stack(self.norms)] if self.norms else [])
        norms = torch.cat(parts).float().tolist() if parts else []
        self.norms, self.joined = [], []
        return self.first_step, norms

    def restart(self) -> None:
        """Start timing the window anew (after time spent on something other than training)."""
        self.start = time.perf_counter()


PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def helpful_options(train: TrainConfig, amp_dtype: torch.dtype | None) -> str:
    """The options that tame exploding gradients, as the end of a message: '--grad-clip 1
    (now off), a lower --lr (now 0.006), a longer --warmup-steps (now 20) or ...'."""
    if train.grad_clip:
        clip = f"a lower --grad-clip (now {train.grad_clip:g})"
    else:
        clip = "--grad-clip 1 (now off)"
    options = [clip, f"a lower --lr (now {train.lr:g})"]
    options.append(f"a longer --warmup-steps (now {train.warmup_steps})")
    if amp_dtype is not None:
        options.append(f"--precision fp32 (now {PRECISION_NAMES[amp_dtype]})")
    return ", ".join(options[:-1]) + " or " + options[-1]


class GradientWatch:
    """Reads each metrics line's gradient norms (before clipping): their mean and max, the share
    of steps where clipping acted, and an event for a non-finite norm or a sudden jump.

    A jump is a norm over `JUMP_FACTOR` times the median of the last `JUMP_HISTORY` finite
    norms. In warmup and until `JUMP_MIN_HISTORY` norms are known (the first steps of a run or
    of a resumed one), where norms move more, it takes `EARLY_JUMP_FACTOR` times: only a
    blow-up is called an explosion there.
    """

    def __init__(self, train: TrainConfig, amp_dtype: torch.dtype | None, scaled: bool) -> None:
        self.train, self.amp_dtype = train, amp_dtype
        self.scaled = scaled  # fp16's loss scaler overflows now and then by design
        self.recent: deque[float] = deque(maxlen=JUMP_HISTORY)

    def summarize(self, first_step: int, norms: list[float]) -> dict[str, Any]:
        """The metrics fields of a window whose steps from `first_step` had these `norms`:
        `grad_norm` (mean of the finite ones), `grad_norm_max`, `clip_share` (of the steps
        taken, those where the norm exceeded --grad-clip), and `event` when one happened."""
        taken = [norm for norm in norms if math.isfinite(norm)]
        clip = self.train.grad_clip
        record: dict[str, Any] = {
            "grad_norm": sum(taken) / len(taken) if taken else None,
            "grad_norm_max": max(taken) if taken else None,
            "clip_share": sum(clip > 0 and n > clip for n in taken) / len(taken) if taken else None,
        }
        event = self._event(first_step, norms)
        if event is not None:
            record["event"] = event
        return record

    def _factor(self, step: int) -> float:
        """How many times the recent median a norm at `step` must be to count as a jump."""
        settled = len(self.recent) >= JUMP_MIN_HISTORY and step >= self.train.warmup_steps
        return JUMP_FACTOR if settled else EARLY_JUMP_FACTOR

    def _event(self, first_step: int, norms: list[float]) -> dict[str, Any] | None:
        """The window's first non-finite norm or jump, as a metrics `event` with its message;
        each norm is judged against the ones before it, then joins them."""
        unusual = []
        # Once settled, the median of 200 steps moves little in one window: compute it once.
        settled = statistics.median(self.recent) if len(self.recent) >= JUMP_MIN_HISTORY else None
        for step, norm in enumerate(norms, first_step):
            median = settled or (statistics.median(self.recent) if self.recent else 0.0)
            if not math.isfinite(norm):
                if not self.scaled:
                    unusual.append((step, norm, median))
                continue
            if norm > self._factor(step) * median > 0:
                unusual.append((step, norm, median))
            self.recent.append(norm)
        if not unusual:
            return None
        step, norm, median = unusual[0]
        more = f" ({len(unusual) - 1} more such steps before this line)" if len(unusual) > 1 else ""
        if math.isfinite(norm):
            kind = "gradient_jump"
            what = (
                f"gradient norm jumped to {norm:.4g} at step {step:,}, {norm / median:.3g}x the "
                f"recent median {median:.3g}{more}; if the loss climbs,"
            )
        else:
            kind = "gradient_nonfinite"
            what = f"gradient norm was {norm} at step {step:,} and the step was skipped{more};"
        text = f"{what} try {helpful_options(self.train, self.amp_dtype)}"
        return {
            "kind": kind,
            "step": step,
            "grad_norm": norm if math.isfinite(norm) else None,
            "steps": len(unusual),
            "message": text,
        }


class Trainer:
    """Runs truncated-BPTT training of `model` on `batches`, scoring on `val_ids`.

    `on_evaluate(model, progress)` runs after each evaluation, outside the timed windows; it
    must leave the global random state alone (draw from its own generator) so that the run
    stays the same with it or without it.
    """

    def __init__(
        self,
        model: CharRNN,
        batches: StreamBatches,
        val_ids: np.ndarray,
        config: RunConfig,
        vocab: Vocab,
        run_dir: Path,
        device: torch.device,
        reporter: Reporter | None = None,
        corpus_info: dict[str, Any] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        threads: CpuThreads | None = None,
        world: World | None = None,
        on_evaluate: Callable[[CharRNN, Progress], None] | None = None,
        objective: Objective | None = None,
    ) -> None:
        self.model, self.batches, self.val_ids = model.to(device), batches, val_ids
        self.objective = objective or Objective()
        self.config, self.vocab, self.device = config, vocab, device
        self.files = RunDir(run_dir)  # where checkpoints and metrics go
        self.reporter = reporter or SilentReporter()
        self.corpus_info = corpus_info or {}
        self.should_stop = should_stop
        self.threads = threads
        # The ranks of a data-parallel job (`batches` is then this rank's share of the streams),
        # or a world of one whose collectives return their input.
        self.world = world or World(device=device)
        self.on_evaluate = on_evaluate  # e.g. the sample preview; told after every evaluation
        self.optimizer = make_optimizer(self.model, config.train, device)
        self.amp_dtype = autocast_dtype(config.train.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)
        self.overflowed = False  # the last skipped step was the fp16 scaler's overflow
        trained = self.world.wrap(self.model)  # DistributedDataParallel averages the gradients
        self.forward = torch.compile(trained) if config.train.compile else trained
        self.progress = Progress()
        self.state: State | None = None
        self.grad_norm = torch.zeros(())  # the last step's, on the device
        self.gradients = GradientWatch(config.train, self.amp_dtype, self.scaler.is_enabled())
        self.total_steps = planned_steps(config.train, batches.steps_per_epoch)
        self.metrics = self.files.metrics_log()

    # ------------------------------------------------------------------ resume

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from a checkpoint written by `save_last` (same model shape)."""
        resume = checkpoint.resume
        self.progress = Progress.from_dict(checkpoint.progress)
        if "optimizer" in resume:
            self.optimizer.load_state_dict(resume["optimizer"])
        rank_rng = resume.get("rank_rng") or [resume.get("rng", {})]
        _restore_rng(rank_rng[self.world.rank], self.device)
        self.state = _state_from_saved(resume.get("hidden"), self.device, self.batches.rows)
        self.objective.restore(resume.get("objective", {}))
        if resume.get("scaler") and self.scaler.is_enabled():  # fp16: the scale it had reached
            self.scaler.load_state_dict(resume["scaler"])

    # ------------------------------------------------------------------ schedule

    def fraction_done(self) -> float:
        """How far through its budget the run is, from 0 to 1 (steps or time, whichever leads)."""
        t = self.config.train
        parts = [0.0]
        if self.total_steps is not None:
            parts.append(self.progress.step / self.total_steps)
        if t.max_time is not None:
            parts.append(self.progress.elapsed / t.max_time)
        return max(parts)

    # ------------------------------------------------------------------ the loop

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            inputs, targets = self.batches.batch(self.progress.step)
            yield _to_device(inputs, self.device), _to_device(targets, self.device)

    def train_step(
        self, inputs: torch.Tensor, targets: torch.Tensor, lr: float
    ) -> torch.Tensor | None:
        """One optimiser step; returns the loss, or None when the step was skipped (non-finite)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.batches.starts_epoch(self.progress.step):
            self.state = None
            self.objective.reset()
        with self._autocast():
            logits, state = self.forward(inputs, self.state)
            loss = self.objective.loss(inputs, logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.train.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.grad_norm = grad_norm  # before clipping; the metrics line reads it (GradientWatch)
        if not bool(torch.isfinite(grad_norm)):  # the one host sync per step; free on the CPU
            # fp16: a finite loss whose scaled gradients overflowed is the scaler's own skip
            # (it lowers the scale), not a sign of divergence.
            self.overflowed = self.scaler.is_enabled() and bool(torch.isfinite(loss))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            self.state = None
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state = detach_state(state)
        return loss.detach()

    def run(self) -> Progress:
        """Train until the step, epoch or time budget is spent, or `should_stop()` says so."""
        t = self.config.train
        self.model.train()
        window = _LogWindow(self.device)
        bad_in_a_row, evaluated_at, lr = 0, -1, t.lr
        clock = time.perf_counter() - self.progress.elapsed
        batches = self._batches()
        stop = self._stop_agreed()
        while not stop and self.fraction_done() < 1.0:
            lr = lr_at(self.progress.step, self.fraction_done(), t)
            if self.threads is not None:
                self.threads.tick()
            with self.world.collective(f"training step {self.progress.step:,}"):
                loss = self.train_step(*next(batches), lr)
            bad_in_a_row = 0 if loss is not None or self.overflowed else bad_in_a_row + 1
            if loss is None:
                self.progress.skipped_steps += 1
                if bad_in_a_row >= MAX_BAD_STEPS:
                    raise TrainingError(
                        f"loss or gradients were not finite for {bad_in_a_row} steps in a row "
                        f"at step {self.progress.step} (gradient norm {float(self.grad_norm)}); "
                        f"try {helpful_options(t, self.amp_dtype)}"
                    )
            window.add(loss, self.batches.chars_per_step, self.progress.step, self.grad_norm)
            self.progress.step += 1
            self.progress.chars_seen += self.batches.chars_per_step
            self.progress.elapsed = time.perf_counter() - clock
            at_eval = self.progress.step % t.eval_every == 0
            if at_eval or self.progress.step % t.log_every == 0:
                self.write_metrics(window, lr, evaluate=at_eval)
                evaluated_at = self.progress.step if at_eval else evaluated_at
            stop = self._stop_agreed()
        self.progress.elapsed = time.perf_counter() - clock
        if stop:
            self.save_last()
        elif evaluated_at != self.progress.step and self.progress.step > 0:
            self.write_metrics(window, lr, evaluate=True)
        return self.progress

    def _stop_agreed(self) -> bool:
        """`should_stop()`, agreed by all ranks (one's request stops every one, at the same step);
        the ranks also agree on the elapsed time, so the schedule and time limit match on each."""
        stop, self.progress.elapsed = self.world.max_of(
            [float(self.should_stop()), self.progress.elapsed]
        )
        return bool(stop)

    def write_metrics(self, window: _LogWindow, lr: float, evaluate: bool) -> None:
        """One metrics line for the window since the last; with `evaluate`, score and save."""
        record = window.close(lr)
        record.update(self.gradients.summarize(*window.take_norms()))
        if record["train_loss"] is not None and self.world.size > 1:  # the mean of the ranks'
            record["train_loss"] = self.world.sum_of([record["train_loss"]])[0] / self.world.size
        if record["train_loss"] is not None:
            self.progress.train_loss = record["train_loss"]
        if evaluate:
            started = time.perf_counter()
            record["val_loss"] = self.evaluate_and_save()
            record["val_chars"] = int(self.val_ids.shape[0])
            record["eval_s"] = round(time.perf_counter() - started, 3)
            if self.on_evaluate is not None:
                self.on_evaluate(self.model, self.progress)
                self.model.train()  # whatever the callback did with it
            window.restart()  # the next window's chars/s is training speed, not evaluation's
        self.log(record)
        self.reporter.update(
            self.fraction_done(),
            {**record, "step": self.progress.step, "elapsed_s": self.progress.elapsed},
        )

    def log(self, record: dict[str, Any]) -> None:
        """Append a metrics line stamped with the step, characters and elapsed time (rank 0)."""
        if not self.world.is_writer:
            return
        stamped = {
            "step": self.progress.step,
            "chars": self.progress.chars_seen,
            **record,
            "elapsed_s": round(self.progress.elapsed, 3),
            "threads": torch.get_num_threads(),  # auto may change it as the CPUs' load changes
        }
        self.metrics.append(stamped)

    # ------------------------------------------------------------------ evaluation and saving

    def evaluate_and_save(self) -> float:
        """Score the validation split, then write last.pt and (when it improved) best.pt."""
        self.check_weights_finite()
        streams, world = self.config.train.eval_streams, self.world
        share = score_ids(
            self.model,
            self.val_ids,
            streams,
            self.device,
            self.threads,
            part=(world.rank, world.size),
        )  # each rank scores its share of the streams; the sums make the whole split's score
        loss_sum, chars = world.sum_of([share.loss_sum, float(share.chars)])
        result = EvalResult(loss_sum, int(chars))
        self.progress.val_loss = result.loss
        if self.progress.best_val_loss is None or result.loss < self.progress.best_val_loss:
            self.progress.best_val_loss = result.loss
            self._save(self.checkpoint(with_resume=False), self.files.best)
        self._save(self.checkpoint(with_resume=True), self.files.last)
        return result.loss

    def _save(self, checkpoint: Checkpoint, path: Path) -> None:
        if self.world.is_writer:  # every rank builds it (a collective); rank 0 writes it
            save_checkpoint(checkpoint, path)

    def checkpoint(self, with_resume: bool) -> Checkpoint:
        """The current model and progress as a `Checkpoint` (resume state optional). With resume
        state it is a collective: the hidden state of every rank's streams and every rank's
        random-number state are gathered (the weights and optimizer are the same on all)."""
        resume: dict[str, Any] = {}
        if with_resume:
            ranks = self.world.gather((_rng_state(self.device), _state_to_cpu(self.state)))
            resume = {
                "optimizer": self.optimizer.state_dict(),
                "rng": ranks[0][0],
                "hidden": _join_states([hidden for _, hidden in ranks]),
                "objective": self.objective.resume_state(),
                "scaler": self.scaler.state_dict(),  # {} unless fp16
            }
            if self.world.size > 1:
                resume["rank_rng"] = [rng for rng, _ in ranks]
                resume["world_size"] = self.world.size
        model_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return Checkpoint(
            config=self.config,
            vocab=self.vocab,
            model_state=model_state,
            progress=self.progress.to_dict(),
            resume=resume,
            corpus=self.corpus_info,
            objective=self.objective.record,
        )

    def check_weights_finite(self) -> None:
        """Stop before NaN or inf weights can overwrite a good checkpoint."""
        if not weights_are_finite(self.model):
            raise TrainingError(
                f"the weights became non-finite at step {self.progress.step}; the saved "
                "checkpoints are left as they were; try a lower --lr"
            )

    def save_last(self) -> None:
        """Write last.pt with everything resuming needs."""
        self.check_weights_finite()
        self._save(self.checkpoint(with_resume=True), self.files.last)
