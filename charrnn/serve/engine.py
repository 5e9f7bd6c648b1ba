"""The server's batcher: one `StreamBatch` steps every open completion together.

Requests join and leave between steps; after each step all the pieces drawn go to their
requests at once. The steps run as a task on the event loop, one step between rounds of its
other work. A worker thread instead (torch releases the interpreter lock while it computes) cost
the same CPU time per character at 32 clients and lost 40% with one client; it looked faster on
a busy core only because two threads get two shares of it (benchmarks/RESULTS.md, serve).
"""

from __future__ import annotations

import asyncio
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from charrnn.analysis.scoring import EVAL_WINDOW, evaluating, forward_windows
from charrnn.config import SampleConfig
from charrnn.generation.streams import Piece, StreamBatch, symbol_text
from charrnn.model.network import CharRNN, load_kernels
from charrnn.text.corpus import Vocab, eval_windows


@dataclass(frozen=True)
class Completion:
    """One completion a request asks for: its prime and how to draw it."""

    prime: str
    config: SampleConfig
    logprobs: int = 0
    stops: tuple[str, ...] = ()


@dataclass(eq=False)
class Ticket:
    """One request's completions as the event loop sees them: `pieces[choice]` receives that
    choice's pieces as they are drawn, and `ready` is set when there is news (pieces, a failed
    step, the time limit). Lists and an event, not a queue: a queue's work per piece showed in
    the profile at 32 clients."""

    completions: list[Completion]
    pieces: list[list[Piece]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    streams: dict[int, int] = field(default_factory=dict)  # stream -> choice
    released: bool = False
    finished: int = 0  # choices whose text is all drawn: their slots are free
    failed: bool = False  # a step failed while it was open
    timed_out: bool = False

    def __post_init__(self) -> None:
        self.pieces = [[] for _ in self.completions]

    def take(self) -> list[list[Piece]]:
        """Each choice's pieces received since the last call."""
        taken = [bucket[:] for bucket in self.pieces]
        for bucket in self.pieces:  # the same lists: the batcher holds them
            bucket.clear()
        self.ready.clear()
        return taken


class Full(Exception):
    """More streams were asked for than `max_streams` allows now."""


STEP_SLICE = 0.002  # seconds of steps between two rounds of the event loop


class Engine:
    """Owns the model's `StreamBatch` and the task on the event loop that steps it."""

    def __init__(self, model: CharRNN, vocab: Vocab, max_streams: int) -> None:
        self.model, self.vocab, self.max_streams = model, vocab, max_streams
        self.open = 0  # streams admitted and not released (event loop side)
        self.closing = False
        self.inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.loop = asyncio.get_running_loop()
        self.batch = StreamBatch(model, vocab)
        load_kernels(model)  # a lone client's stream then steps compiled from its first character
        # stream -> its ticket and the list its pieces go to
        self.owners: dict[int, tuple[Ticket, list[Piece]]] = {}
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._drive())

    def submit(self, completions: list[Completion]) -> Ticket:
        """Start `completions` in the next step; raises `Full` when the slots are taken."""
        self.reserve(len(completions))
        ticket = Ticket(completions)
        self._send("join", ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Free a request's slots now; its unfinished streams leave before the next step."""
        if not ticket.released:
            ticket.released = True
            self.open -= len(ticket.completions) - ticket.finished
            self._send("leave", ticket)

    def reserve(self, count: int) -> None:
        """Take `count` slots (for streams, or for work beside the batch: a prompt's
        log-probabilities, a text to score); raises `Full` when they are taken."""
        if self.open + count > self.max_streams or self.closing:
            raise Full
        self.open += count

    def free(self, count: int) -> None:
        """Give back slots taken with `reserve` for work beside the batch."""
        self.open -= count

    def close(self) -> None:
        """End every open stream (finish reason length) and refuse new ones; thread-safe."""
        self.closing = True
        self._send("close", None)

    def stop(self) -> None:
        """End the stepping."""
        self._send("stop", None)

    def _send(self, kind: str, ticket: Ticket | None) -> None:
        self.inbox.put((kind, ticket))
        self.loop.call_soon_threadsafe(self.wake.set)  # safe from a signal handler too

    # ------------------------------------------------------------------ the stepping side

    async def _drive(self) -> None:
        """The task on the event loop: step, then let the loop run its other work."""
        while True:
            if not self.owners and self.inbox.empty():
                self.wake.clear()
                await self.wake.wait()
            if not self.inbox.empty() and not self._handle():
                return
            # Steps for a slice of time, then the loop's other work: a round of the loop per
            # step (a poll of the sockets) showed in the profile at 32 clients; a request
            # joining waits one slice at most.
            until = time.perf_counter() + STEP_SLICE
            while self.owners and self.inbox.empty():  # (streams that left drop at a step)
                self._step()
                if time.perf_counter() >= until:
                    break
            await asyncio.sleep(0)

    def _handle(self) -> bool:
        """Apply the joins, leaves and closes sent since the last step; False to stop."""
        messages = []
        while True:
            try:
                messages.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        for kind, ticket in messages:
            if kind == "stop":
                return False
            if kind == "join":
                self._join(self.batch, ticket, self.owners)
            elif kind == "leave":
                for stream in ticket.streams:
                    self.batch.leave(stream)
                    self.owners.pop(stream, None)
            elif kind == "close":
                self._end_all(self.batch, self.owners)
        return True

    def _step(self) -> None:
        try:
            pieces = self.batch.step()
        except Exception:  # a bug: fail the open requests, keep serving new ones
            for ticket, _ in self.owners.values():
                ticket.failed = True
                ticket.ready.set()
            # Its ids go on: a failed request's late `leave` must not name a newcomer's stream.
            self.batch = StreamBatch(self.model, self.vocab, self.batch.next_ident)
            self.owners = {}
            return
        self._deliver(self.owners, pieces)

    def _join(
        self, batch: StreamBatch, ticket: Ticket, owners: dict[int, tuple[Ticket, list[Piece]]]
    ) -> None:
        if ticket.released:
            return
        for choice, completion in enumerate(ticket.completions):
            stream = batch.join(
                completion.prime, completion.config, logprobs=completion.logprobs,
                stops=completion.stops,
            )  # fmt: skip
            ticket.streams[stream] = choice
            owners[stream] = (ticket, ticket.pieces[choice])

    def _deliver(self, owners: dict[int, tuple[Ticket, list[Piece]]], pieces: list[Piece]) -> None:
        """Hand a step's pieces to their requests; a choice whose text is all drawn frees its
        slot now, whether or not its client has read it yet. (A released request's streams
        left `owners` before this step: its leave is handled first.)"""
        for piece in pieces:
            owner = owners.get(piece.stream)
            if owner is None:
                continue
            ticket, bucket = owner
            bucket.append(piece)
            ticket.ready.set()
            if piece.finish:
                del owners[piece.stream]
                if not ticket.released:
                    ticket.finished += 1
                    self.open -= 1

    def _end_all(self, batch: StreamBatch, owners: dict[int, tuple[Ticket, list[Piece]]]) -> None:
        """Finish every open stream now (the server is stopping)."""
        pieces = [Piece(stream, "", "length") for stream in owners]
        self._deliver(owners, pieces)
        for stream in list(owners):
            batch.leave(stream)
        owners.clear()


def prompt_logprobs(
    model: CharRNN, vocab: Vocab, ids: torch.Tensor, top: int
) -> list[tuple[str, float | None, dict[str, float] | None]]:
    """For `echo` with `logprobs`: each prompt character with the model's log-probability of
    it and of the `top` best alternatives (None for the first, which nothing predicts). The
    prompt runs in `EVAL_WINDOW` windows, as `/v1/score` does, so its memory is a window's."""
    texts = [symbol_text(vocab, int(i)) for i in ids.tolist()]
    if not texts:
        return []
    result: list[tuple[str, float | None, dict[str, float] | None]] = [(texts[0], None, None)]
    windows = eval_windows(ids.cpu().numpy(), 1, EVAL_WINDOW)
    device = model.head.weight.device
    with evaluating(model), torch.inference_mode():
        for window in forward_windows(model, windows, device):
            logprobs = torch.log_softmax(window.logits[0].double(), dim=-1)
            best = torch.topk(logprobs, min(top, logprobs.shape[-1]))
            chosen = logprobs.gather(1, window.targets[0].view(-1, 1))[:, 0].tolist()
            rows = zip(best.values.tolist(), best.indices.tolist(), chosen, strict=True)
            for values, indices, value in rows:
                alternatives = {
                    symbol_text(vocab, i): v for v, i in zip(values, indices, strict=True)
                }
                result.append((texts[len(result)], value, alternatives))
    return result
