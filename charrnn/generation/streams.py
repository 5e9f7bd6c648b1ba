"""Streams of text drawn together: one batched recurrent step advances every active stream.

A `StreamBatch` holds one row of recurrent state per stream. `join` adds a stream with its own
prime, sampling options and seeded random generator; `leave` drops one; between two `step`
calls any number may join or leave. Each `step` advances all rows with one `Stepper.advance`
and draws one symbol per stream, and returns the text each stream gained.

A stream's text depends only on its own prime, options and seed, never on which other streams
share the batch: its noise comes from its own generator in chunks sized by its own length and
the vocabulary, and temperature scales its own row. Draws use the Gumbel-max trick: the argmax of
logits plus Gumbel noise is a draw from the softmax, and a masked (-inf) logit never wins.

A prime runs once however many streams share it (at batch 1; its state is then repeated), and
through the recurrent layers only, `PRIME_WINDOW` characters per step: a long prime costs one
window of work per step, so the streams already drawing go on while it primes, and its memory is
one window's. Every path that samples (`charrnn sample`, the API, the server) primes here, so a
prime's state is the same to the bit on each.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Literal, NamedTuple

import numpy as np
import torch

from charrnn.config import SampleConfig, as_drawn
from charrnn.errors import UsageError
from charrnn.model.network import CharRNN, State, Stepper, repeat_rows
from charrnn.text.corpus import Vocab

FinishReason = Literal["stop", "length"]

SEED_RANGE = 2**64  # what torch.Generator.manual_seed takes

# Noise is drawn this many floats at a time per stream (a few hundred positions).
STREAM_NOISE = 1 << 14
# A lone stream on the compiled kernels draws up to this many characters per step (one call):
# a few milliseconds, so streams still join and leave promptly, and Ctrl-C stops it at once.
RUN_CHARS = 32
# Prime characters run per step (batch 1, recurrent layers only): bounds a step's time and a
# prime's memory (a window's activations), not the result.
PRIME_WINDOW = 512


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


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise, -log(-log(u)), always finite."""
    tiny = torch.finfo(torch.float32).tiny
    uniforms = torch.rand(shape, generator=generator, device=generator.device)
    return uniforms.clamp_(min=tiny).log_().neg_().log_().neg_()


def prime_ids(vocab: Vocab, prime: str, policy: str) -> torch.Tensor:
    """Ids of the prime; unknown characters raise (policy error) or are dropped (skip)."""
    if policy == "skip":
        ids, _ = vocab.encode_known(prime)
    else:
        ids = vocab.encode(prime)
    return torch.as_tensor(ids, dtype=torch.long)


def known_prime(vocab: Vocab, prime: str, policy: str) -> str:
    """The prime as a sample begins with it: without unknown characters under policy skip."""
    return vocab.decode(prime_ids(vocab, prime, policy).tolist()) if policy == "skip" else prime


class StopWatcher:
    """Holds back text that could be the start of a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops, self.pending, self.done = stops, "", False
        self.hold = max(len(stop) for stop in stops) - 1

    def feed(self, text: str) -> str:
        """Text safe to emit now; sets `done` when a stop string has appeared."""
        if self.done:
            return ""
        self.pending += text
        cuts = [cut for cut in (self.pending.find(stop) for stop in self.stops) if cut >= 0]
        if cuts:
            out, self.pending, self.done = self.pending[: min(cuts)], "", True
            return out
        # Hold back the last characters: they may begin a stop string.
        out = self.pending[: max(0, len(self.pending) - self.hold)]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        """The held-back text at the end of a sample (empty once the stop string was found)."""
        out, self.pending = self.pending, ""
        return out


def symbol_decoder(vocab: Vocab) -> Callable[[int], str]:
    """A function from each new id of one stream to its text (bytes decode UTF-8 incrementally)."""
    if not vocab.is_bytes:
        return [chr(symbol) for symbol in vocab.symbols].__getitem__
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return lambda i: decoder.decode(bytes((vocab.symbols[i],)))


def symbol_text(vocab: Vocab, symbol: int) -> str:
    """One id's own text (a lone byte of a multi-byte character shows as U+FFFD)."""
    value = vocab.symbols[symbol]
    return bytes((value,)).decode("utf-8", "replace") if vocab.is_bytes else chr(value)


class Draw(NamedTuple):
    """One symbol drawn, with the model's log-probability of it (temperature 1, no filtering)
    and of its most likely alternatives, best first."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...]


class Piece(NamedTuple):
    """What one stream gained in one step: new text (maybe empty while a stop string may be
    beginning), why it finished if it did, and the symbol drawn when log-probabilities are on."""

    stream: int
    text: str
    finish: FinishReason | None = None
    draw: Draw | None = None


class _Stream:
    """One stream's options, random generator, noise, decoder and progress."""

    def __init__(
        self, ident: int, config: SampleConfig, ids: torch.Tensor, state: State | None,
        head_bias: torch.Tensor, logprobs: int, vocab: Vocab, stops: tuple[str, ...],
    ) -> None:  # fmt: skip
        config = as_drawn(config)  # a temperature too small to scale by is greedy
        self.ident, self.config, self.ids, self.state = ident, config, ids, state
        self.logprobs, self.drawn, self.row = logprobs, 0, -1
        self.decode = symbol_decoder(vocab)
        stops = stops or ((config.stop,) if config.stop else ())
        self.watcher = StopWatcher(stops) if stops else None
        self.filtered = not config.greedy and (config.top_k is not None or config.top_p is not None)
        self.scale = 1.0 if config.greedy else 1.0 / config.temperature
        self.generator = torch.Generator(device=head_bias.device)
        seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(6), "little")
        self.generator.manual_seed(seed)
        # Added to the scaled logits: the bias at this temperature, with the noise unless the
        # draw filters first (top-k / top-p need the logits without it).
        self.bias = head_bias if config.greedy else head_bias * self.scale
        # Rows of noise drawn ahead (the bias added unless filtered), as one block for runs and
        # as its rows for one draw at a time; `used` of them spent.
        self.noise = head_bias.new_empty(0, head_bias.shape[0])
        self.noise_list: tuple[torch.Tensor, ...] = ()
        self.used = 0
        # Draws several symbols per step when alone (StreamBatch._draw_run): the noise alone
        # decides each, with nothing to look at between them.
        self.runs = not config.greedy and not self.filtered and not logprobs and not self.watcher

    def extra(self) -> torch.Tensor:
        """The row added to this stream's scaled logits at this position."""
        if self.config.greedy or self.filtered:
            return self.bias
        return self._next_noise()

    def _next_noise(self) -> torch.Tensor:
        self._draw_noise_ahead()
        self.used += 1
        return self.noise_list[self.used - 1]  # a row made once per block: no indexing per draw

    def noise_rows(self, most: int) -> torch.Tensor:
        """The next rows of noise, at least one and at most `most` (fewer at a block's end)."""
        self._draw_noise_ahead()
        rows = self.noise[self.used : self.used + most]
        self.used += rows.shape[0]
        return rows

    def _draw_noise_ahead(self) -> None:
        """A new block of noise rows once every row of the last one is spent."""
        if self.used < len(self.noise_list):
            return
        vocab = self.bias.shape[0]
        positions = max(1, min(self.config.length - self.drawn, STREAM_NOISE // vocab))
        self.noise = gumbel_noise((positions, vocab), self.generator)
        if not self.filtered:
            self.noise += self.bias
        self.noise_list, self.used = self.noise.unbind(0), 0

    def redraw(self, logits: torch.Tensor) -> int:
        """The id drawn from this stream's logits (1, vocab) after top-k / top-p filtering."""
        kept = filter_logits(logits, replace(self.config, temperature=1.0))
        return int(kept[0].add_(self._next_noise()).argmax())


class _Priming:
    """Streams of one prime (after one starting state) on their way in: the prime runs once for
    all of them, a window per step; `done` of its ids have run."""

    def __init__(self, members: list[_Stream]) -> None:
        self.members, self.ids, self.state = members, members[0].ids, members[0].state
        self.done = 0


class StreamBatch:
    """Streams stepped together; `join` and `leave` between `step` calls."""

    def __init__(self, model: CharRNN, vocab: Vocab, first_ident: int = 0) -> None:
        self.model, self.vocab = model.eval(), vocab
        self.device = model.head.weight.device
        # Outside inference mode: the rows are updated in place between a caller's yields.
        self.stepper = Stepper(model, model.initial_state(0))
        self.streams: list[_Stream] = []  # row i of the stepper is streams[i]
        self.joining: list[_Stream] = []
        self.priming: list[_Priming] = []  # primes under way, a window a step
        self.leaving: set[int] = set()
        self.fed: torch.Tensor | None = None  # the ids drawn last, not yet fed to the rows
        self.next_ident = first_ident  # a new batch after a failed one goes on numbering
        self._last_prime: tuple[tuple[str, str], torch.Tensor] | None = None
        self._scale: float | torch.Tensor = 1.0
        self._scales = np.ones(0, dtype=np.float32)  # each row's, for the compiled draw
        self._filtered: list[_Stream] = []
        self.unstepped: dict[int, State] = {}  # streams of length 0: the state after the prime

    def join(
        self,
        prime: str,
        config: SampleConfig,
        state: State | None = None,
        logprobs: int = 0,
        stops: tuple[str, ...] = (),
    ) -> int:
        """Add a stream that continues `prime` (after `state`, a batch-1 state; None: fresh);
        its first symbol comes with the next `step`. Returns the stream's id. `logprobs`: how
        many alternatives each `Piece.draw` lists (0: no draws); `stops`: several stop strings
        (the stream ends at the first to appear) instead of `config.stop`.

        Raises `UsageError` for an empty stop string or, under `config.unknown` error, a
        character of the prime the model never saw (`config` itself is trusted: validated)."""
        ids = self._prime_ids(prime, config.unknown)
        if any(not stop for stop in stops):
            raise UsageError("stop text cannot be empty")
        head_bias = self.stepper.head_bias
        stream = _Stream(
            self.next_ident, config, ids, state, head_bias, logprobs, self.vocab, stops
        )
        self.next_ident += 1
        self.joining.append(stream)
        return stream.ident

    def _prime_ids(self, prime: str, policy: str) -> torch.Tensor:
        """The prime's ids on the device; streams joining one after another with one prime share
        one tensor (and so run it once)."""
        key = (prime, policy)
        if self._last_prime is not None and self._last_prime[0] == key:
            return self._last_prime[1]
        ids = prime_ids(self.vocab, prime, policy).to(self.device)
        self._last_prime = (key, ids)
        return ids

    def join_samples(
        self, prime: str, config: SampleConfig, state: State | None = None
    ) -> list[int]:
        """Add `config.num_samples` streams of one prime; sample i draws with seed + i (a fresh
        seed when none is given), so each is the text its seed gives alone."""
        seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(6), "little")
        one = replace(config, num_samples=1)
        return [
            self.join(prime, replace(one, seed=(seed + i) % SEED_RANGE if i else seed), state)
            for i in range(config.num_samples)
        ]

    def leave(self, ident: int) -> None:
        """Drop a stream (finished or not); its row is freed before the next step."""
        self.leaving.add(ident)

    @property
    def active(self) -> int:
        """Streams that joined and have not left or finished."""
        gone = self.leaving
        priming = [s for p in self.priming for s in p.members]
        return sum(1 for s in self.streams + self.joining + priming if s.ident not in gone)

    def final_state(self, ident: int) -> State:
        """The state of a stream after every symbol it drew (batch 1), until the next step."""
        if ident in self.unstepped:
            return self.unstepped[ident]
        stream = next(s for s in self.streams if s.ident == ident)
        state = self.stepper.row_state(stream.row)
        if self.fed is None:
            return state
        with torch.inference_mode():
            _, state = self.model(self.fed[stream.row].view(1, 1), state)
        return state

    def step(self) -> list[Piece]:
        """Feed every stream its last symbol, let streams join and leave, and draw the next
        symbol of each: the text each stream gained (finished streams leave by themselves)."""
        # Inference mode for this step only: a caller's code between steps runs outside it.
        with torch.inference_mode():
            return self._step()

    def _step(self) -> list[Piece]:
        self.unstepped.clear()
        if self.leaving:
            self._drop()
        if self.fed is not None and not self.joining and not self.priming and self._runs():
            return self._draw_run()
        if self.fed is not None and self.streams:
            self.stepper.advance(self.fed)
        self.fed = None
        if self.joining:
            self._admit()
        pieces = self._prime() if self.priming else []
        if not self.streams:
            return pieces
        ids = self._draw()
        self.fed = ids
        return pieces + self._emit(ids.tolist())

    def _drop(self) -> None:
        kept = [s for s in self.streams if s.ident not in self.leaving]
        self.joining = [s for s in self.joining if s.ident not in self.leaving]
        for priming in self.priming:
            priming.members = [s for s in priming.members if s.ident not in self.leaving]
        self.priming = [p for p in self.priming if p.members]
        self.leaving = set()
        if len(kept) == len(self.streams):
            return
        rows = [s.row for s in kept]
        self.stepper.keep_rows(rows)
        if self.fed is not None:
            self.fed = self.fed[rows]
        self._arrange(kept)

    def _admit(self) -> None:
        """Group the joining streams by prime and starting state: each group primes once."""
        groups: dict[tuple[int, int], list[_Stream]] = {}
        for stream in self.joining:
            groups.setdefault((id(stream.ids), id(stream.state)), []).append(stream)
        self.joining, self._last_prime = [], None
        self.priming += [_Priming(members) for members in groups.values()]

    def _prime(self) -> list[Piece]:
        """Run one window of every prime under way; the streams whose prime has run get their
        rows (or, asking for no characters, their state and finish)."""
        done: list[Piece] = []
        added: list[_Stream] = []
        under_way: list[_Priming] = []
        for priming in self.priming:
            state = self._prime_window(priming)
            if state is None:
                under_way.append(priming)
                continue
            for stream in priming.members:
                stream.state = None  # held in the stepper's rows or `unstepped` now
                if stream.config.length == 0:
                    self.unstepped[stream.ident] = state
                    done.append(Piece(stream.ident, "", "length"))
            members = [s for s in priming.members if s.config.length > 0]
            if members:
                self.stepper.append_rows(repeat_rows(state, len(members)))
                added += members
        self.priming = under_way
        if added:
            self._arrange(self.streams + added)
        return done

    def _prime_window(self, priming: _Priming) -> State | None:
        """Run the next window of a prime (batch 1, recurrent layers only, in `step`'s
        inference mode); the state after the whole prime once it has run, else None."""
        window = priming.ids[priming.done : priming.done + PRIME_WINDOW]
        if window.numel():
            state = priming.state
            _, priming.state = self.model.rnn(self.model.embed(window.view(1, -1)), state)
            priming.done += window.numel()
        if priming.done < priming.ids.numel():
            return None
        state = priming.state
        return state if state is not None else self.model.initial_state(1)

    def _arrange(self, streams: list[_Stream]) -> None:
        """Record the streams in row order and what each draw needs of them."""
        self.streams = streams
        for row, stream in enumerate(streams):
            stream.row = row
        scales = [s.scale for s in streams]
        if all(scale == scales[0] for scale in scales):
            self._scale = scales[0] if scales else 1.0
        else:
            self._scale = torch.tensor(scales, device=self.device).unsqueeze(1)
        self._scales = np.array(scales, dtype=np.float32)
        self._filtered = [s for s in streams if s.filtered]

    def _runs(self) -> bool:
        """Whether this step may draw several symbols: one stream, on the compiled kernels, that
        only samples (no top-k/top-p, log-probabilities or stop strings)."""
        return len(self.streams) == 1 and self.stepper.compiled is not None and self.streams[0].runs

    def _draw_run(self) -> list[Piece]:
        """Feed the lone stream its last symbol and draw up to `RUN_CHARS` more in one call."""
        stream = self.streams[0]
        extras = stream.noise_rows(min(RUN_CHARS, stream.config.length - stream.drawn))
        symbols = self.stepper.compiled.sample(int(self.fed), self._scales, extras)
        self.fed = torch.tensor(symbols[-1:])
        stream.drawn += len(symbols)
        text = "".join(map(stream.decode, symbols))
        if stream.drawn < stream.config.length:
            return [Piece(stream.ident, text)] if text else []
        self.leaving.add(stream.ident)
        return [Piece(stream.ident, text, "length")]

    def _draw(self) -> torch.Tensor:
        """The next id of every row: argmax of scaled logits plus each stream's noise."""
        streams = self.streams
        if len(streams) == 1:
            extra = streams[0].extra().unsqueeze(0)
        else:
            extra = torch.stack([s.extra() for s in streams])
        compiled = self.stepper.compiled
        if compiled is not None:  # every row's sums the same loop: the same bits at any size
            ids, logits = compiled.draw(self._scales, extra)
        else:
            top = self.stepper.top
            one = isinstance(self._scale, float) and self._scale == 1.0
            logits = torch.addmm(extra, top if one else top * self._scale, self.stepper.head_weight)
            ids = logits.argmax(dim=-1)
        for stream in self._filtered:
            ids[stream.row] = stream.redraw(logits[stream.row : stream.row + 1])
        return ids

    def _emit(self, symbols: list[int]) -> list[Piece]:
        pieces = []
        for stream, symbol in zip(self.streams, symbols, strict=True):
            stream.drawn += 1
            text = stream.decode(symbol)
            finish: FinishReason | None = None
            watcher = stream.watcher
            if watcher is not None:
                text = watcher.feed(text)
                if watcher.done:
                    finish = "stop"
            if finish is None and stream.drawn >= stream.config.length:
                finish = "length"
                if watcher is not None:
                    text += watcher.flush()
            draw = self._log_probs(stream, symbol) if stream.logprobs else None
            if text or finish or draw:
                pieces.append(Piece(stream.ident, text, finish, draw))
            if finish:
                self.leaving.add(stream.ident)
        return pieces

    def _log_probs(self, stream: _Stream, symbol: int) -> Draw:
        """The model's log-probability of `symbol` and of the best alternatives at this row."""
        row = self.stepper.top[stream.row : stream.row + 1]
        logits = torch.addmm(self.stepper.head_bias, row, self.stepper.head_weight)[0]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        best = torch.topk(logprobs, min(stream.logprobs, logprobs.shape[0]))
        top = tuple(
            (symbol_text(self.vocab, i), float(v))
            for v, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
        )
        return Draw(symbol_text(self.vocab, symbol), float(logprobs[symbol]), top)


def run_streams(batch: StreamBatch, tick: Callable[[], None] | None = None) -> Iterator[Piece]:
    """Step `batch` until no stream is left, yielding every piece (`tick` after each step)."""
    while batch.active:
        yield from batch.step()
        if tick is not None:
            tick()
