"""`charrnn sample --interactive`: a model kept loaded, continuing the text line by line.

Each line the user types is fed to the model from where the text stood (its recurrent state
after everything so far, the replies included), and the model writes a continuation. With
`reset`, every line starts afresh from the state after `--prime` instead. Only new text is run
through the network: a turn costs the line and the reply, not the whole transcript.
`Session.turn` yields a reply as events (`ReplyText`, then `ReplyEnd`, or one `Unreadable`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass

import torch

from charrnn.config import SampleConfig
from charrnn.errors import UsageError
from charrnn.generation.sampling import beam_continuations
from charrnn.generation.streams import SEED_RANGE, StreamBatch, prime_ids, run_streams
from charrnn.model.network import CharRNN, State
from charrnn.system.device import CpuThreads
from charrnn.text.corpus import Vocab


@dataclass(frozen=True)
class ReplyText:
    """A piece of a reply as it is drawn: the next `text` of sample `sample`."""

    sample: int
    text: str


@dataclass(frozen=True)
class ReplyEnd:
    """A reply is whole: every sample's text (unless `reset`, the next line continues the first)."""

    texts: tuple[str, ...]


@dataclass(frozen=True)
class Unreadable:
    """A line the model cannot read (a character it never saw); the text stays as it was."""

    message: str


ReplyEvent = ReplyText | ReplyEnd | Unreadable
Reply = Generator[ReplyEvent, None, None]  # one reply's events; `close()` stops it


class Session:
    """A conversation with one model: `reply(line)` continues the text after `line`.

    `config` is trusted: the command that builds a session validates it."""

    def __init__(
        self,
        model: CharRNN,
        vocab: Vocab,
        config: SampleConfig,
        prime: str = "",
        reset: bool = False,
        threads: CpuThreads | None = None,
    ) -> None:
        if config.num_samples > 1 and not reset:
            raise UsageError(
                "--interactive continues one text; --num-samples above 1 needs --reset"
            )
        self.model, self.vocab, self.config = model, vocab, config
        self.reset, self.threads = reset, threads
        self.turns = 0
        ids = prime_ids(vocab, prime, config.unknown).to(model.head.weight.device)
        self.start: State | None = None  # the state after --prime (None: a fresh model)
        if ids.numel():
            with torch.inference_mode():
                _, self.start = model.eval()(ids.view(1, -1))
        self.state = self.start

    def reply(self, line: str) -> Generator[tuple[int, str], None, None]:
        """Yield `(sample, piece)` of the continuations of the text after `line` (without the
        line itself); once they are whole, unless `reset`, the next line continues after them.

        A `UsageError` (a character the model never saw) or a reply not read to its end leaves
        the text as it was."""
        # A fresh seed per turn, from the given one: the session is reproducible, and the same
        # line typed twice need not give the same reply. Past the largest seed it wraps to 0, as
        # the generators' range does (the config's seed was checked; the sum is not).
        seed = None if self.config.seed is None else self.config.seed + self.turns
        if seed is not None and seed >= SEED_RANGE:
            seed -= SEED_RANGE
        config = dataclasses.replace(self.config, seed=seed)
        start = self.start if self.reset else self.state
        if config.beam:
            texts, after = beam_continuations(
                self.model, self.vocab, line, config, start, with_state=not self.reset
            )
            yield from enumerate(texts)
        else:
            batch = StreamBatch(self.model, self.vocab)
            streams = batch.join_samples(line, config, start)
            index = {stream: position for position, stream in enumerate(streams)}
            tick = None if self.threads is None else self.threads.tick
            for piece in run_streams(batch, tick):
                if piece.text:
                    yield index[piece.stream], piece.text
            after = None if self.reset else batch.final_state(streams[0])
        self.turns += 1
        if not self.reset:
            self.state = after

    def turn(self, line: str) -> Reply:
        """Yield `reply(line)` as events: a `ReplyText` per piece, then the `ReplyEnd`; or one
        `Unreadable` for a line the model cannot read. Closed early, the text stays as it was."""
        pieces: list[list[str]] = [[] for _ in range(self.config.num_samples)]
        replies = self.reply(line)
        try:
            for sample, text in replies:
                pieces[sample].append(text)
                yield ReplyText(sample, text)
        except UsageError as exc:
            yield Unreadable(str(exc))
            return
        finally:
            replies.close()  # at once, not when collected: a stopped reply's streams go now
        yield ReplyEnd(tuple("".join(texts) for texts in pieces))
