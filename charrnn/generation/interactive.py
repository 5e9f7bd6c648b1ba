"""`charrnn sample --interactive`: a model kept loaded, continuing the text line by line.

Each line the user types is fed to the model from where the text stood (its recurrent state
after everything so far, the replies included), and the model writes a continuation. With
`reset`, every line starts afresh from the state after `--prime` instead. Only new text is run
through the network: a turn costs the line and the reply, not the whole transcript.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from charrnn.config import SampleConfig, validate_sample_config
from charrnn.errors import UsageError
from charrnn.generation.sampling import generate, known_prime, prime_ids
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

    def reply(self, line: str, on_text: Callable[[int, str], None] | None = None) -> list[str]:
        """The continuations of the text after `line` (without the line itself), streamed
        through `on_text(sample, piece)`; unless `reset`, the next line continues after it.

        A `UsageError` (a character the model never saw) leaves the text as it was."""
        shown = known_prime(self.vocab, line, self.config.unknown)
        skip = [len(shown)] * self.config.num_samples  # generate streams the line first

        def stream(index: int, piece: str) -> None:
            cut, skip[index] = (
                min(skip[index], len(piece)),
                skip[index] - min(skip[index], len(piece)),
            )
            if piece[cut:] and on_text is not None:
                on_text(index, piece[cut:])

        # A fresh seed per turn, from the given one: the session is reproducible, and the same
        # line typed twice need not give the same reply.
        seed = None if self.config.seed is None else self.config.seed + self.turns
        config = dataclasses.replace(self.config, seed=seed)
        after: list[State] = []
        texts = generate(
            self.model, self.vocab, line, config, stream, self.threads,
            state=self.start if self.reset else self.state, on_state=after.append,
        )  # fmt: skip
        self.turns += 1
        if not self.reset:
            self.state = after[0]
        return [text[len(shown) :] for text in texts]
