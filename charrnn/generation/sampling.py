"""Sampling from a trained model: temperature, top-k, top-p, greedy, priming and stop strings.

The prime is run through the fused layers once; after that every new character costs exactly one
`Stepper.advance` and one draw, never a re-run of the prefix. Draws use the Gumbel-max trick with
noise drawn from the seeded generator, so the seed alone fixes the text.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable
from dataclasses import replace

import torch

from charrnn.config import SampleConfig, validate_sample_config
from charrnn.generation.beam import beam_search
from charrnn.model.network import CharRNN, State, Stepper, map_state, repeat_rows
from charrnn.system.device import CpuThreads
from charrnn.text.corpus import Vocab


def filter_logits(logits: torch.Tensor, config: SampleConfig) -> torch.Tensor:
    """Temperature-scaled logits with everything outside top-k / top-p set to -inf."""
    logits = logits.float() / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a character when the ones more likely than it already reach top_p.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= config.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# Noise is drawn this many floats at a time: the whole sample at once for one stream.
NOISE_CHUNK = 1 << 18


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise, -log(-log(u)), always finite.

    argmax(logits + noise) is a draw from softmax(logits) (the Gumbel-max trick): a masked
    (-inf) logit can never win, and one addition replaces the softmax, cumulative sum and search.
    """
    tiny = torch.finfo(torch.float32).tiny
    uniforms = torch.rand(shape, generator=generator, device=generator.device)
    return uniforms.clamp_(min=tiny).log_().neg_().log_().neg_()


class _Drawer:
    """Draws the next ids from the top layer's output, one position at a time.

    Temperature is folded into the output layer. Without top-k / top-p the noise is folded into
    its bias as well, so a draw is one matrix product and an argmax.
    """

    def __init__(self, stepper: Stepper, config: SampleConfig, generator: torch.Generator):
        self.config, self.generator = config, generator
        self.filtered = config.top_k is not None or config.top_p is not None
        self.weight = stepper.head_weight / config.temperature
        self.bias = stepper.head_bias / config.temperature
        self.shape = (stepper.h.shape[1], self.bias.shape[0])
        self.rows: list[torch.Tensor] = []

    def __call__(self, top: torch.Tensor) -> torch.Tensor:
        """Ids (batch,) for the next position."""
        if self.config.greedy:
            return torch.addmm(self.bias, top, self.weight).argmax(dim=-1)
        if not self.rows:
            self._refill()
        noise = self.rows.pop()
        if not self.filtered:
            return torch.addmm(noise, top, self.weight).argmax(dim=-1)
        logits = torch.addmm(self.bias, top, self.weight)
        filtered = filter_logits(logits, replace(self.config, temperature=1.0))
        return filtered.add_(noise).argmax(dim=-1)

    def _refill(self) -> None:
        """Noise for the next chunk of positions, as a stack to pop from."""
        batch, vocab = self.shape
        positions = max(1, NOISE_CHUNK // (batch * vocab))
        noise = gumbel_noise((positions, batch, vocab), self.generator)
        if not self.filtered:
            noise += self.bias
        self.rows = list(noise.unbind(0))[::-1]


def known_prime(vocab: Vocab, prime: str, policy: str) -> str:
    """The prime as a sample begins with it: without unknown characters under policy skip."""
    return vocab.decode(prime_ids(vocab, prime, policy).tolist()) if policy == "skip" else prime


def prime_ids(vocab: Vocab, prime: str, policy: str) -> torch.Tensor:
    """Ids of the prime; unknown characters raise (policy error) or are dropped (skip)."""
    if policy == "skip":
        ids, _ = vocab.encode_known(prime)
    else:
        ids = vocab.encode(prime)
    return torch.as_tensor(ids, dtype=torch.long)


class _StopWatcher:
    """Holds back text that could be the start of the stop string, per sample."""

    def __init__(self, stop: str | None) -> None:
        self.stop = stop
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> str:
        """Text safe to emit now; sets `done` when the stop string has appeared."""
        if self.done:
            return ""
        if self.stop is None:
            return text
        self.pending += text
        cut = self.pending.find(self.stop)
        if cut >= 0:
            out, self.pending, self.done = self.pending[:cut], "", True
            return out
        # Hold back the last len(stop) - 1 characters: they may begin the stop string.
        out = self.pending[: max(0, len(self.pending) - (len(self.stop) - 1))]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        """The held-back text at the end of a sample (empty once the stop string was found)."""
        out, self.pending = self.pending, ""
        return out


def _decoders(vocab: Vocab, count: int) -> list[Callable[[int], str]]:
    """Per-sample functions from a new id to text (bytes models decode UTF-8 incrementally)."""
    if not vocab.is_bytes:
        return [[chr(symbol) for symbol in vocab.symbols].__getitem__] * count
    result = []
    for _ in range(count):
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        result.append(lambda i, d=decoder: d.decode(bytes((vocab.symbols[i],))))
    return result


def generate(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    config: SampleConfig,
    on_text: Callable[[int, str], None] | None = None,
    threads: CpuThreads | None = None,
    state: State | None = None,
    on_state: Callable[[State], None] | None = None,
) -> list[str]:
    """Generate `num_samples` texts that begin with `prime`; `on_text(i, piece)` streams them
    (`threads`, when given, re-judges the CPU thread count as the text grows).

    `state`: the model's state (batch 1) before the prime, to continue a text; None starts
    afresh. `on_state` receives the state after the first sample's text (with its stop text), so
    a caller can continue from there. With `config.beam` the texts are a beam search's best."""
    validate_sample_config(config)
    if config.beam:
        return _beam_texts(model, vocab, prime, config, on_text, state, on_state)
    device = model.head.weight.device
    generator = torch.Generator(device=device)
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(6), "little")
    generator.manual_seed(seed)
    count = config.num_samples
    ids = prime_ids(vocab, prime, config.unknown).to(device)
    prime_text = known_prime(vocab, prime, config.unknown)
    pieces: list[list[str]] = [[prime_text] for _ in range(count)]
    if on_text and prime_text:
        for index in range(count):
            on_text(index, prime_text)
    model.eval()
    watchers = [_StopWatcher(config.stop) for _ in range(count)] if config.stop else None
    decoders = _decoders(vocab, count)
    with torch.inference_mode():
        start = None if state is None else repeat_rows(state, count)
        if ids.numel():
            _, state = model(ids.unsqueeze(0).expand(count, -1), start)
        else:
            state = start if start is not None else model.initial_state(count)
        stepper = Stepper(model, state)
        next_ids = None
        draw_next = _Drawer(stepper, config, generator)
        # The per-character loop is the hot path: no tensor indexing or string copies in it.
        for position in range(config.length):
            next_ids = draw_next(stepper.top)
            for index, symbol in enumerate(next_ids.tolist()):
                piece = decoders[index](symbol)
                if watchers is not None:
                    piece = watchers[index].feed(piece)
                if piece:
                    pieces[index].append(piece)
                    if on_text:
                        on_text(index, piece)
            if position + 1 == config.length or (watchers and all(w.done for w in watchers)):
                break
            if threads is not None:
                threads.tick()
            stepper.advance(next_ids)
        if on_state is not None:
            if next_ids is not None:  # the last symbol drawn is not yet fed
                stepper.advance(next_ids)
            on_state(map_state(lambda part: part[:, :1].clone(), stepper.state))
    for index, watcher in enumerate(watchers or []):
        tail = watcher.flush()
        if tail:
            pieces[index].append(tail)
            if on_text:
                on_text(index, tail)
    return ["".join(sample) for sample in pieces]


def preview_text(
    model: CharRNN, vocab: Vocab, length: int, seed: int, threads: CpuThreads | None = None
) -> str:
    """`length` characters drawn from a fresh state with the default sampling options.

    The draws come from a generator seeded with `seed`, never from the global random state, and
    the model's train/eval mode is restored: a training run that previews is the same run.
    """
    was_training = model.training
    try:
        return generate(model, vocab, "", SampleConfig(length=length, seed=seed), None, threads)[0]
    finally:
        model.train(was_training)


def _beam_texts(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    config: SampleConfig,
    on_text: Callable[[int, str], None] | None,
    state: State | None,
    on_state: Callable[[State], None] | None,
) -> list[str]:
    """The best `num_samples` continuations by beam search, each after the prime; a text is
    known only when the search ends, so `on_text` gets each whole."""
    ids = prime_ids(vocab, prime, config.unknown).to(model.head.weight.device)
    prime_text = known_prime(vocab, prime, config.unknown)
    beams = beam_search(model, vocab, ids, config, config.beam, state)
    texts = [prime_text + beam.text for beam in beams]
    if on_text:
        for index, text in enumerate(texts):
            on_text(index, text)
    if on_state is not None:
        fed = torch.cat([ids, torch.tensor(beams[0].ids, dtype=torch.long, device=ids.device)])
        with torch.inference_mode():
            if fed.numel():
                contiguous = None if state is None else map_state(torch.Tensor.contiguous, state)
                _, state = model(fed.view(1, -1), contiguous)
            on_state(state if state is not None else model.initial_state(1))
    return texts
