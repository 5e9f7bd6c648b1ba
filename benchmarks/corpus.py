"""The text the measurements train, score and prepare: tiny shakespeare, or a stand-in for it."""

from __future__ import annotations

import numpy as np

from benchmarks.common import REPO, Bench
from charrnn.text.corpus import Vocab

SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
WORDS = (
    "the and to of my that in you is not with it for be his this your but he have as me so "
    "thou will what her him all shall lord thy no by do good king now sir more come love well"
)


def generated_text(n_chars: int, seed: int = 0) -> str:
    """Word salad with capitals, punctuation and lines: a stand-in when no corpus is at hand."""
    rng, words = np.random.default_rng(seed), WORDS.split()
    lines, size = [], 0
    while size < n_chars:
        picked = [words[i] for i in rng.integers(0, len(words), rng.integers(3, 12))]
        line = " ".join(picked).capitalize() + rng.choice([".", ",", "!", "?", ":", ";"])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:n_chars] + "\n"


def corpus_text() -> str:
    """Tiny shakespeare when the shared data folder has it, else 1 MB of generated text."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text("utf-8")
    return generated_text(1_000_000)


def training_data(bench: Bench) -> tuple[Vocab, np.ndarray]:
    """The corpus' vocabulary and ids, stored compactly as the corpus cache stores them."""
    if "data" not in bench.cache:
        text = corpus_text()
        vocab = Vocab(tuple(sorted(set(map(ord, text)))))
        bench.cache["data"] = (vocab, vocab.encode(text).astype(vocab.dtype))
    return bench.cache["data"]


def probed_train_speed(
    bench: Bench, cell: str, shape: tuple[int, int, int, int], precision: str, probe_s: float,
    section: str,
) -> float:  # fmt: skip
    """Trainer chars/s of `cell` at (layers, hidden, batch, window) in `precision`, measured
    for `probe_s` seconds by the `--auto` probe (0.0 when the step fails)."""
    import torch

    from charrnn.config import RunConfig
    from charrnn.training.autosize import Shape, SpeedProbe

    layers, hidden, batch, window = shape
    vocab, ids = training_data(bench)
    config = RunConfig().replace(cell=cell, device="cpu", max_steps=10)
    probe = SpeedProbe(
        config, vocab, ids, batch, window, probe_s, torch.device("cpu"), bench.scratch(section)
    )
    return probe(Shape(layers, hidden, 0), precision) or 0.0
