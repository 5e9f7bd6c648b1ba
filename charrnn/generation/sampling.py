"""Sampling from a trained model: temperature, top-k, top-p, greedy, priming and stop strings.

`generate` yields text as it is drawn. Its samples are streams of one `StreamBatch`
(generation/streams.py): the prime is run through the fused layers once, and after that every
new character of every sample costs one batched `Stepper.advance` and one draw. Sample i is drawn
with seed + i, so each sample is the text that seed alone gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from charrnn.config import SampleConfig
from charrnn.generation.beam import beam_search
from charrnn.generation.streams import StreamBatch, known_prime, prime_ids, run_streams
from charrnn.model.network import CharRNN, State
from charrnn.system.device import CpuThreads
from charrnn.text.corpus import Vocab


def generate(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    config: SampleConfig,
    threads: CpuThreads | None = None,
    state: State | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield `(sample, piece)` as the `num_samples` texts are drawn: each sample's prime
    first, then its new text (`threads`, when given, re-judges the CPU thread count as it goes).

    `state`: the model's state (batch 1) before the prime, to continue a text; None starts
    afresh. With `config.beam` each text is a beam search's best, yielded whole at the end."""
    if config.beam:
        texts, _ = beam_continuations(model, vocab, prime, config, state)
        shown = known_prime(vocab, prime, config.unknown)
        yield from ((index, shown + text) for index, text in enumerate(texts))
        return
    batch = StreamBatch(model, vocab)
    streams = batch.join_samples(prime, config, state)
    shown = known_prime(vocab, prime, config.unknown)
    if shown:
        yield from ((index, shown) for index in range(config.num_samples))
    index = {stream: position for position, stream in enumerate(streams)}
    for piece in run_streams(batch, None if threads is None else threads.tick):
        if piece.text:
            yield index[piece.stream], piece.text


def collect(pieces: Iterable[tuple[int, str]], count: int) -> list[str]:
    """The whole texts of `count` samples from `generate`'s pieces."""
    texts: list[list[str]] = [[] for _ in range(count)]
    for index, piece in pieces:
        texts[index].append(piece)
    return ["".join(text) for text in texts]


def preview_text(
    model: CharRNN, vocab: Vocab, length: int, seed: int, threads: CpuThreads | None = None
) -> str:
    """`length` characters drawn from a fresh state with the default sampling options.

    The draws come from a generator seeded with `seed`, never from the global random state, and
    the model's train/eval mode is restored: a training run that previews is the same run.
    """
    was_training = model.training
    try:
        config = SampleConfig(length=length, seed=seed)
        return collect(generate(model, vocab, "", config, threads), 1)[0]
    finally:
        model.train(was_training)


def beam_continuations(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    config: SampleConfig,
    state: State | None,
    with_state: bool = False,
) -> tuple[list[str], State | None]:
    """The best `num_samples` continuations of `prime` by beam search (without the prime) and,
    `with_state`, the model's state after the prime and the best of them (else None)."""
    ids = prime_ids(vocab, prime, config.unknown).to(model.head.weight.device)
    beams = beam_search(model, vocab, ids, config, config.beam, state)
    if not with_state:
        return [beam.text for beam in beams], None
    fed = torch.cat([ids, torch.tensor(beams[0].ids, dtype=torch.long, device=ids.device)])
    with torch.inference_mode():
        if fed.numel():
            _, state = model(fed.view(1, -1), state)
        elif state is None:
            state = model.initial_state(1)
    return [beam.text for beam in beams], state
