"""sample: charrnn's generate() against stepping the model's own forward with torch.multinomial."""

from __future__ import annotations

import subprocess
import types
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from benchmarks.common import Bench, Row, best_alternating, log, per_second
from charrnn.config import ModelConfig, SampleConfig
from charrnn.generation import streams as stream_module
from charrnn.generation.sampling import collect, generate
from charrnn.model.network import CharRNN, Stepper
from charrnn.text.corpus import Vocab

VOCAB_SIZE = 65  # tiny shakespeare's vocabulary size
TARGET = 10_000.0  # chars/s, one stream of a 2x256 LSTM
TARGET_HIDDEN = 256
BEFORE = "748b5c2"  # the Stepper before issue 22: one-stream sampling is measured against it
STEPPER_TARGET = 1.5  # issue 22: one stream at least this much faster than BEFORE's


@dataclass(frozen=True)
class Sizes:
    hidden: tuple[int, ...]  # 2-layer LSTMs
    length_one: int  # characters for one stream
    length_many: int  # characters per stream for 64 streams


FULL = Sizes(hidden=(256, 512), length_one=3000, length_many=200)
QUICK = Sizes(hidden=(256,), length_one=300, length_many=20)


def sample_model(hidden: int) -> tuple[CharRNN, Vocab]:
    """A randomly initialised 2-layer LSTM over a 65-symbol vocabulary."""
    vocab = Vocab(tuple(range(32, 32 + VOCAB_SIZE)))
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=hidden), vocab.size).eval()
    return model, vocab


def charrnn_sample(model: CharRNN, vocab: Vocab, config: SampleConfig) -> int:
    """Characters drawn by generation.sampling.generate (the defaults but length, streams, seed)."""
    collect(generate(model, vocab, "", config), config.num_samples)
    return config.num_samples * config.length


def baseline_sample(model: CharRNN, vocab: Vocab, config: SampleConfig) -> int:
    """Characters drawn the usual way: the model's own forward one at a time, multinomial."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.inference_mode():
        ids = torch.zeros(config.num_samples, 1, dtype=torch.long)
        state, drawn = None, []
        for _ in range(config.length):
            logits, state = model(ids, state)
            probs = torch.softmax(logits[:, -1] / config.temperature, dim=-1)
            ids = torch.multinomial(probs, 1, generator=generator)
            drawn.append(ids)
        texts = [vocab.decode(row) for row in torch.cat(drawn, dim=1).numpy()]
    assert len(texts) == config.num_samples
    return config.num_samples * config.length


def measure(bench: Bench) -> None:
    """Rows: generate() chars/s against stepping nn.LSTM, for one stream and for 64; then one
    stream against the Stepper before issue 22."""
    measure_stepper(bench)
    sizes = bench.pick(FULL, QUICK)
    for hidden in sizes.hidden:
        model, vocab = sample_model(hidden)
        for streams, length in ((1, sizes.length_one), (64, sizes.length_many)):
            log(f"sample lstm 2x{hidden}: {streams} stream(s) x {length} chars")
            config = SampleConfig(length=length, num_samples=streams, seed=0)
            baseline, ours = best_alternating(
                partial(per_second, partial(baseline_sample, model, vocab, config)),
                partial(per_second, partial(charrnn_sample, model, vocab, config)),
            )
            has_target = streams == 1 and hidden == TARGET_HIDDEN
            bench.add(
                Row(
                    "sample",
                    f"lstm 2x{hidden}, {streams} stream{'s' if streams > 1 else ''} (chars/s)",
                    f"{ours:,.0f}",
                    f"{baseline:,.0f} (nn.LSTM steps)",
                    ours / baseline,
                    f">= {TARGET:,.0f} chars/s" if has_target else "",
                    ours >= TARGET if has_target else None,
                    {"chars_per_s": ours, "baseline_chars_per_s": baseline},
                )
            )


def stepper_at(commit: str) -> type | None:
    """`Stepper` as it was at `commit` (from git), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(
            ["git", "show", f"{commit}:charrnn/model/network.py"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType(f"network_{commit}")
    exec(compile(source, f"network@{commit}", "exec"), module.__dict__)  # noqa: S102
    # Its stepping methods on today's class, which has the row methods generate's StreamBatch
    # needs (748b5c2's has none); the old methods read only the buffers both share.
    old = module.Stepper
    methods = {name: getattr(old, name) for name in ("advance", "step", "_lstm", "_gru")}
    return type(f"Stepper_{commit}", (Stepper,), methods)


def sample_with(stepper: type, model: CharRNN, vocab: Vocab, config: SampleConfig) -> int:
    """charrnn_sample with generate() stepping by `stepper`."""
    stream_module.Stepper = stepper
    try:
        return charrnn_sample(model, vocab, config)
    finally:
        stream_module.Stepper = Stepper


def measure_stepper(bench: Bench) -> None:
    """Rows: one stream of generate() with today's Stepper against BEFORE's, alternating."""
    before = stepper_at(BEFORE)
    if before is None:
        log(f"sample: no git history, the Stepper of {BEFORE} is not measured")
        return
    sizes = bench.pick(FULL, QUICK)
    for hidden in sizes.hidden:
        model, vocab = sample_model(hidden)
        config = SampleConfig(length=sizes.length_one, num_samples=1, seed=0)
        log(f"sample lstm 2x{hidden}: one stream, Stepper of {BEFORE} against today's")
        old, new = best_alternating(
            partial(per_second, partial(sample_with, before, model, vocab, config)),
            partial(per_second, partial(sample_with, Stepper, model, vocab, config)),
            repeats=4,
        )
        bench.add(
            Row(
                "sample",
                f"lstm 2x{hidden}, 1 stream, Stepper vs {BEFORE}'s (chars/s)",
                f"{new:,.0f}",
                f"{old:,.0f} ({BEFORE})",
                new / old,
                f">= {STEPPER_TARGET}x",
                new / old >= STEPPER_TARGET,
                {"chars_per_s": new, "before_chars_per_s": old},
            )
        )
