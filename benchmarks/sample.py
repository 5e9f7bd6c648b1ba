"""sample: charrnn's generate() against stepping the model's own forward with torch.multinomial."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from benchmarks.common import Bench, Row, best_alternating, log, per_second
from charrnn.config import ModelConfig, SampleConfig
from charrnn.generation.sampling import collect, generate
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab

VOCAB_SIZE = 65  # tiny shakespeare's vocabulary size
TARGET = 10_000.0  # chars/s, one stream of a 2x256 LSTM
TARGET_HIDDEN = 256


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
    """Rows: generate() chars/s against stepping nn.LSTM, for one stream and for 64."""
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
