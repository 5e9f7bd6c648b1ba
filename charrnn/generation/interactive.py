"""`charrnn sample --interactive`: a model kept loaded, continuing the text line by line.

Each line the user types is fed to the model from where the text stood (its recurrent state
after everything so far, the replies included), and the model writes a continuation. With
`reset`, every line starts afresh from the state after `--prime` instead. Only new text is run
through the network: a turn costs the line and the reply, not the whole transcript.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from charrnn.config import SampleConfig, validate_sample_config
from charrnn.errors import UsageError
from charrnn.generation.sampling import beam_continuations
from charrnn.generation.streams import StreamBatch, prime_ids, run_streams
from charrnn.model.network import CharRNN, State
from charrnn.system.device import CpuThreads
from charrnn.text.corpus import Vocab


class Session:
    """A conversation with one model: `reply(line)` continues the text after `line`."""

    def __init__(
        self,
        model: CharRNN,
        vocab: Vocab,
        config: SampleConfig,
        prime: str = "",
        reset: bool = False,
        threads: CpuThreads | None = None,
    ) -> None:
        validate_sample_config(config)
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

    def reply(self, line: str) -> Iterator[tuple[int, str]]:
        """Yield `(sample, piece)` of the continuations of the text after `line` (without the
        line itself); once they are whole, unless `reset`, the next line continues after them.

        A `UsageError` (a character the model never saw) or a reply not read to its end leaves
        the text as it was."""
        # A fresh seed per turn, from the given one: the session is reproducible, and the same
        # line typed twice need not give the same reply.
        seed = None if self.config.seed is None else self.config.seed + self.turns
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
