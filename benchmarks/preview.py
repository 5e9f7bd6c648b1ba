"""preview: what the training view's sample preview costs a default run.

At each evaluation `charrnn train` samples `--preview-chars` (160) characters from the model. The
figure is that time against the training time between two evaluations (`--eval-every` steps of
the default model), both measured here, best of several, on one thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.common import Bench, Row, best_of, log
from charrnn.config import ModelConfig, RunConfig
from charrnn.generation.sampling import preview_text
from charrnn.model.network import CharRNN
from charrnn.system.device import use_cpu_threads
from charrnn.text.corpus import Vocab
from charrnn.training.trainer import make_optimizer

VOCAB = 65  # tiny Shakespeare's


@dataclass(frozen=True)
class Sizes:
    hidden: int
    steps: int  # training steps timed (scaled to --eval-every)
    repeats: int


FULL = Sizes(hidden=RunConfig().model.hidden, steps=20, repeats=3)
QUICK = Sizes(hidden=32, steps=2, repeats=1)


def preview_seconds(model: CharRNN, vocab: Vocab, chars: int, repeats: int) -> float:
    """Seconds for one preview of `chars` characters (the best of `repeats`)."""
    rate = best_of(repeats, lambda: 1.0 / _timed(lambda: preview_text(model, vocab, chars, 1)))
    return 1.0 / rate


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def step_seconds(model: CharRNN, config: RunConfig, steps: int, repeats: int) -> float:
    """Seconds per training step of `model` at the default batch shape."""
    t = config.train
    optimizer = make_optimizer(model, t, torch.device("cpu"))
    inputs = torch.randint(0, VOCAB, (t.batch_size, t.seq_len))
    model.train()

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), inputs.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return steps / (time.perf_counter() - start)

    return 1.0 / best_of(repeats, run)


def measure(bench: Bench) -> None:
    sizes = bench.pick(FULL, QUICK)
    config = RunConfig()
    model = CharRNN(ModelConfig(hidden=sizes.hidden), VOCAB)
    vocab = Vocab(tuple(range(32, 32 + VOCAB)))
    chars = config.train.preview_chars
    log(f"preview: {chars} characters from a 1x{sizes.hidden} LSTM, one thread")
    threads = torch.get_num_threads()
    use_cpu_threads(1)
    try:
        preview = preview_seconds(model, vocab, chars, sizes.repeats)
        between = step_seconds(model, config, sizes.steps, sizes.repeats) * config.train.eval_every
    finally:
        use_cpu_threads(threads)
    bench.add(
        Row(
            "preview",
            f"one {chars}-char preview, against the training between two evaluations "
            f"(1x{sizes.hidden} LSTM, {config.train.eval_every} steps, 1 thread)",
            f"{preview * 1000:.1f} ms",
            f"{between:.1f} s",
            preview / between,
            "<= 0.01",
            None if bench.quick else preview / between <= 0.01,
        )
    )
