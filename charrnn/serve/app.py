"""`charrnn serve`: the HTTP routes, their checks and errors, and the server's life.

Routes: `POST /v1/completions` (OpenAI's completions, streamed as server-sent events on
request), `GET /v1/models`, `POST /v1/score`, `GET /health` and the page at `/`. Every refusal
is one JSON error in OpenAI's shape with a 4xx status; nothing a request sends names a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from charrnn.analysis.scoring import score_text
from charrnn.config import SampleConfig, ServeConfig
from charrnn.errors import ServeError, UsageError
from charrnn.generation.streams import Piece, known_prime, prime_ids, symbol_text
from charrnn.model.checkpoint import Checkpoint
from charrnn.model.network import CharRNN
from charrnn.serve.engine import Completion, Engine, Full, Ticket, prompt_logprobs
from charrnn.serve.protocol import (
    SCORE_CHAR_BYTES,
    ApiError,
    CompletionRequest,
    check_response_size,
    choice_object,
    completion_id,
    completion_object,
    read_completion,
    read_score,
    response_bound,
    sse,
    symbol_bytes,
    usage_object,
)  # fmt: skip
from charrnn.text.preprocess import preprocess_text

Loader = Callable[[], tuple[CharRNN, Checkpoint]]
LOG = logging.getLogger("charrnn.serve")
# Past a request's timeout, the share of it (at most 5 s) its last event or body still has to
# be written: a client reading normally takes well under this.
WRITE_GRACE = 0.5
EVENT_INTERVAL = 0.05  # seconds between two events of one stream at most (20 ms: 0.69-0.74 of
# `sample` at 32 clients; 50 ms: 0.79-0.88, benchmarks/RESULTS.md)


@dataclass
class ServerState:
    """What the routes share: settings, the model once loaded, and its batcher."""

    config: ServeConfig
    name: str
    model: CharRNN | None = None
    checkpoint: Checkpoint | None = None
    engine: Engine | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    load_error: Exception | None = None
    char_bytes: int = 12  # the most one drawn character takes in a response (its vocabulary's)
    stop_server: Callable[[], None] = lambda: None

    def ready(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, "the model is still loading; retry shortly", kind="server_error")
        if self.engine.closing:
            raise ApiError(503, "the server is stopping", kind="server_error")
        return self.engine


def _state(request: Request) -> ServerState:
    return request.app.state.server


def authorize(request: Request) -> None:
    """Refuse a request without the API key (compared in constant time), when there is one."""
    key = _state(request).config.api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(401, "a valid API key is required (Authorization: Bearer KEY)",
                       kind="authentication_error")  # fmt: skip


async def read_json(request: Request) -> Any:
    """The request body as JSON, refused past `max_body` bytes before it is all read."""
    limit = _state(request).config.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        LOG.warning("a client left while sending its request body (%d bytes came)", size)
        raise ApiError(400, "the request body ended early") from None
    try:
        return json.loads(b"".join(chunks), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Json(JSONResponse):
    """A JSON response escaped to ASCII: a lone surrogate a client sent (in an unknown key, say)
    cannot make it unencodable, and its size per character has a bound (`TEXT_BYTES`)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode("ascii")


# ----------------------------------------------------------------------------- routes


async def page(request: Request) -> Response:
    """The page: type a prime, watch the text stream in (it asks for the key when needed)."""
    return HTMLResponse(request.app.state.page)


async def health(request: Request) -> Response:
    engine = _state(request).engine
    status = "loading" if engine is None else ("stopping" if engine.closing else "ready")
    return Json({"status": status}, status_code=200 if status == "ready" else 503)


def model_entry(state: ServerState) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": state.name, "object": "model", "created": state.created, "owned_by": "charrnn",
        "tokens": "characters: one token is one character of the model's vocabulary",
    }  # fmt: skip
    if state.checkpoint is not None:
        model = state.checkpoint.config.model
        entry.update(
            vocab_size=state.checkpoint.vocab.size, cell=model.cell, layers=model.layers,
            hidden=model.hidden,
        )  # fmt: skip
    return entry


async def models(request: Request) -> Response:
    authorize(request)
    return Json({"object": "list", "data": [model_entry(_state(request))]})


async def one_model(request: Request) -> Response:
    authorize(request)
    state = _state(request)
    if request.path_params["name"] != state.name:
        raise ApiError(404, f"the model {request.path_params['name']!r} does not exist",
                       "model", "not_found_error")  # fmt: skip
    return Json(model_entry(state))


async def score(request: Request) -> Response:
    """The `eval` figures of a posted text: loss, bits per character, and on request each
    character's surprisal in bits."""
    authorize(request)
    state = _state(request)
    text, per_char = read_score(await read_json(request), state.name, state.config)
    engine = state.ready()
    assert state.model is not None and state.checkpoint is not None
    if per_char:
        check_response_size(len(text) * SCORE_CHAR_BYTES, state.config, "a shorter text")
    text = preprocess_text(text, state.checkpoint.config.data)
    with _slots(engine, 1):
        result = await asyncio.to_thread(score_text, state.model, state.checkpoint.vocab, text)
    if not result.per_char:
        raise ApiError(400, "the text has fewer than 2 characters the model knows", "text")
    body: dict[str, Any] = {
        "model": state.name, "loss": result.loss, "bpc": result.bpc, "chars": result.chars,
        "unknown_chars": result.unknown_chars,
    }  # fmt: skip
    if per_char:
        body["per_char"] = [
            {"char": char, "surprisal_bits": loss / math.log(2)} for char, loss in result.per_char
        ]
    return Json(body)


@contextlib.contextmanager
def _slots(engine: Engine, count: int) -> Iterator[None]:
    """Hold `count` of the batcher's slots for work beside it; 429 when they are taken."""
    try:
        engine.reserve(count)
    except Full:
        raise _busy(engine) from None
    try:
        yield
    finally:
        engine.free(count)


def _busy(engine: Engine) -> ApiError:
    return ApiError(429, f"all {engine.max_streams} streams are busy; retry shortly",
                    kind="rate_limit_error")  # fmt: skip


async def completions(request: Request) -> Response:
    authorize(request)
    state = _state(request)
    asked = read_completion(await read_json(request), state.name, state.config)
    engine = state.ready()
    primes = [_prime(state, prompt) for prompt in asked.prompts]
    echoed = [shown if asked.echo else "" for _, shown in primes]
    bound = response_bound(asked, echoed, state.char_bytes)
    check_response_size(bound, state.config, "fewer choices or characters, less echo")
    jobs = [
        Completion(prime, _sample_config(state, asked, index * asked.n + j), asked.logprobs,
                   asked.stops)
        for index, (prime, _) in enumerate(primes) for j in range(asked.n)
    ]  # fmt: skip
    timeout = state.config.request_timeout
    deadline = asyncio.get_running_loop().time() + timeout
    cutoff = deadline + min(5.0, WRITE_GRACE * timeout)  # the response must be written by then
    echoes = [await _echo(state, engine, asked, prime, shown) for prime, shown in primes]
    try:
        ticket = engine.submit(jobs)
    except Full:
        raise _busy(engine) from None
    reply = _Reply(state, asked, ticket, [echoes[i // asked.n] for i in range(len(jobs))],
                   deadline, cutoff)  # fmt: skip
    if asked.stream:
        return _EventStream(reply)
    try:
        return _Whole(await reply.whole(), cutoff)
    finally:
        reply.release()


def _prime(state: ServerState, prompt: str) -> tuple[str, str]:
    """The prompt as the model reads it, and as a completion echoes it."""
    assert state.checkpoint is not None
    prime = preprocess_text(prompt, state.checkpoint.config.data)
    try:
        prime_ids(state.checkpoint.vocab, prime, state.config.unknown)
    except UsageError as exc:
        raise ApiError(400, str(exc), "prompt") from None
    shown = known_prime(state.checkpoint.vocab, prime, state.config.unknown)
    if not shown:
        raise ApiError(400, "the prompt has no character the model knows", "prompt")
    return prime, shown


def _sample_config(state: ServerState, asked: CompletionRequest, choice: int) -> SampleConfig:
    """Choice i draws with seed + i, as `charrnn sample --num-samples` does. A temperature of 0
    (greedy, as OpenAI's API reads it) or too small to scale by is drawn greedily by the
    stream (`config.as_drawn`, the rule every path follows)."""
    seed = None if asked.seed is None else (asked.seed + choice) % 2**64
    return SampleConfig(
        length=asked.max_tokens, temperature=asked.temperature, top_k=asked.top_k,
        top_p=asked.top_p, seed=seed, unknown=state.config.unknown,
    )  # fmt: skip


async def _echo(
    state: ServerState, engine: Engine, asked: CompletionRequest, prime: str, shown: str
) -> tuple[str, list[Any]]:
    """With `echo`: the prompt's text and, with `logprobs`, its characters' log-probabilities
    (computed window by window beside the batcher, holding a slot meanwhile)."""
    if not asked.echo:
        return "", []
    if not asked.logprobs:
        return shown, []
    assert state.model is not None and state.checkpoint is not None
    vocab = state.checkpoint.vocab
    ids = prime_ids(vocab, prime, state.config.unknown)
    with _slots(engine, 1):
        marks = await asyncio.to_thread(prompt_logprobs, state.model, vocab, ids, asked.logprobs)
    return shown, marks


class _Choice:
    """One choice's text and log-probabilities as they arrive."""

    def __init__(self, echo: tuple[str, list[Any]], logprobs: bool) -> None:
        self.pending: deque[Any] = deque()  # draws whose character is not yet released
        self.text, self.finish, self.length = [echo[0]], None, len(echo[0])
        self.logprobs = logprobs
        self.marks: list[Any] = list(echo[1])  # (token, logprob, top) of released characters
        self.sent_marks = 0
        self.generated = 0

    def add_all(self, pieces: list[Piece]) -> str:
        """Take a batch of this choice's pieces; their text."""
        if self.logprobs:
            for piece in pieces:
                self.add(piece)
            return "".join([piece.text for piece in pieces])
        text = "".join([piece.text for piece in pieces])  # the common case, without a loop
        self.text.append(text)
        self.generated += len(text)
        self.length += len(text)
        if pieces[-1].finish:
            self.finish = pieces[-1].finish
        return text

    def add(self, piece: Piece) -> None:
        if piece.draw is not None:
            self.pending.append(piece.draw)
        self.text.append(piece.text)
        self.generated += len(piece.text)
        self.length += len(piece.text)
        released = len(piece.text)
        while released > 0 and self.pending:
            draw = self.pending.popleft()
            released -= len(draw.text)
            self.marks.append((draw.text, draw.logprob, dict(draw.top)))
        if piece.finish:
            self.finish = piece.finish

    def logprob_object(self, start: int, offset: int) -> dict[str, list[Any]] | None:
        """OpenAI's logprobs object for the marks from `start`, the first at text `offset`."""
        if not self.logprobs:
            return None
        marks = self.marks[start:]
        offsets = []
        for token, _, _ in marks:
            offsets.append(offset)
            offset += len(token)
        return {
            "tokens": [m[0] for m in marks], "token_logprobs": [m[1] for m in marks],
            "top_logprobs": [m[2] for m in marks], "text_offset": offsets,
        }  # fmt: skip


async def _send_by(deadline: float, respond: Any) -> None:
    """Send a response, cut off at `deadline` (the request's timeout from its start, and a
    grace): a client that stops reading holds its connection no longer than one that waits."""
    left = deadline - asyncio.get_running_loop().time()
    try:
        await asyncio.wait_for(respond, max(left, 0.001))
    except asyncio.TimeoutError:
        LOG.warning("a client read its response too slowly; the connection is closed")
    except asyncio.CancelledError:  # only the server's shutdown, done waiting for this client
        LOG.warning("a response still being written was cut off by the shutdown")


class _Whole(Json):
    """A whole completion, sent by the request's deadline."""

    def __init__(self, content: Any, cutoff: float) -> None:
        super().__init__(content)
        self.cutoff = cutoff

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await _send_by(self.cutoff, super().__call__(scope, receive, send))


class _EventStream(StreamingResponse):
    """Server-sent events that free the request's slots the moment the response ends, however
    it ends: finished, failed, timed out, or the client gone (the next write fails)."""

    def __init__(self, reply: _Reply) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(reply.events(), media_type="text/event-stream", headers=headers)
        self.reply = reply

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await _send_by(self.reply.cutoff, super().__call__(scope, receive, send))
        finally:
            self.reply.release()


class _Reply:
    """A completion's choices filling in from the batcher, sent whole or as events."""

    def __init__(
        self, state: ServerState, asked: CompletionRequest, ticket: Ticket, echoes: list[Any],
        deadline: float, cutoff: float,
    ) -> None:  # fmt: skip
        self.state, self.asked, self.ticket, self.cutoff = state, asked, ticket, cutoff
        self.choices = [_Choice(echo, asked.logprobs > 0) for echo in echoes]
        self.ident = completion_id()
        # At the time limit a marker joins the pieces (asyncio.wait_for around each get could
        # swallow the cancellation that a client's disconnect sends).
        self.timer = asyncio.get_running_loop().call_at(deadline, self._time_up)

    def _time_up(self) -> None:
        self.ticket.timed_out = True
        self.ticket.ready.set()

    async def _batches(self) -> AsyncIterator[list[list[Piece]]]:
        """Each choice's pieces that have come, a batch at a time, until every choice has
        finished."""
        ticket = self.ticket
        done = False
        while not done:
            await ticket.ready.wait()
            done = ticket.finished == len(self.choices)  # (counted as the pieces came)
            batch = ticket.take()  # all that has come: one write for all of it
            if ticket.failed:
                raise ApiError(500, "generation failed; the server goes on")
            if ticket.timed_out and not done:
                limit = self.state.config.request_timeout
                raise ApiError(408, f"the request took longer than {limit:g} s")
            yield batch

    def release(self) -> None:
        """Free the slots (at once; the batcher drops the streams before its next step)."""
        self.timer.cancel()
        engine = self.state.engine
        if engine is not None:
            engine.release(self.ticket)

    def _usage(self) -> dict[str, int]:
        prompt = sum(len(p) for p in self.asked.prompts)
        return usage_object(prompt, sum(c.generated for c in self.choices))

    async def whole(self) -> dict[str, Any]:
        async for batch in self._batches():
            for choice, pieces in zip(self.choices, batch, strict=True):
                if pieces:
                    choice.add_all(pieces)
        choices = [
            choice_object(i, "".join(c.text), c.finish, c.logprob_object(0, 0))
            for i, c in enumerate(self.choices)
        ]
        return completion_object(self.ident, self.state.name, choices, self._usage())

    async def events(self) -> AsyncIterator[bytes]:
        """Server-sent events: a chunk per step's new text, then `data: [DONE]`."""
        try:
            if self.asked.echo:
                echoed = [(i, c, "".join(c.text), 0, 0) for i, c in enumerate(self.choices)]
                yield self._chunk(echoed)
            async for batch in self._batches():
                events = []
                for index, (choice, pieces) in enumerate(zip(self.choices, batch, strict=True)):
                    if not pieces:
                        continue
                    start, offset = len(choice.marks), choice.length
                    text = choice.add_all(pieces)
                    if text or choice.finish:  # one event for what came of this choice
                        events.append(self._chunk([(index, choice, text, start, offset)]))
                if events:
                    yield b"".join(events)
                # Text drawn meanwhile waits for the next event: fewer, larger writes keep the
                # event loop's share of the work small. The pause is also where a disconnect's
                # cancellation lands (a write to a closed connection returns at once).
                await asyncio.sleep(EVENT_INTERVAL)
            if self.asked.include_usage:
                yield sse(completion_object(self.ident, self.state.name, [], self._usage()))
        except ApiError as error:
            yield sse(error.body())
        finally:
            self.release()
        yield sse("[DONE]")

    def _chunk(self, parts: list[tuple[int, _Choice, str, int, int]]) -> bytes:
        choices = [
            choice_object(i, text, c.finish, c.logprob_object(start, offset))
            for i, c, text, start, offset in parts
        ]
        return sse(completion_object(self.ident, self.state.name, choices, None))


# ----------------------------------------------------------------------------- the app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    # A timed-out request would most likely time out again: the stock client must not silently
    # send it once more.
    headers = {"x-should-retry": "false"} if exc.status == 408 else None
    return Json(exc.body(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    error = ApiError(exc.status_code, str(exc.detail), kind=kind)
    return Json(error.body(), status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    error = ApiError(500, "internal error; the server goes on")
    return Json(error.body(), status_code=500)


def create_app(load: Loader, config: ServeConfig, name: str) -> Starlette:
    """The application; the model loads in the background (/health says loading till then)."""
    state = ServerState(config, name)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def load_model() -> None:
            try:
                state.model, state.checkpoint = await asyncio.to_thread(load)
            except Exception as exc:  # a missing or bad checkpoint: the server stops, says why
                state.load_error = exc
                state.stop_server()
                return
            vocab = state.checkpoint.vocab
            widest = max(symbol_bytes(symbol_text(vocab, i)) for i in range(vocab.size))
            state.char_bytes = widest
            state.engine = Engine(state.model, vocab, config.max_streams)

        loading = asyncio.create_task(load_model())
        app.state.loading = loading
        yield
        loading.cancel()
        if state.engine is not None:
            state.engine.stop()

    routes = [
        Route("/", page), Route("/health", health), Route("/v1/models", models),
        Route("/v1/models/{name:path}", one_model),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/score", score, methods=["POST"]),
    ]  # fmt: skip
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = state
    page_text = resources.files("charrnn.serve").joinpath("page.html").read_text("utf-8")
    # The name goes into a script as JSON; "<" escaped so it cannot close the script element.
    app.state.page = page_text.replace("__MODEL_NAME__", json.dumps(name).replace("<", "\\u003c"))
    return app


class _Server(uvicorn.Server):
    """uvicorn's server that ends open streams cleanly on Ctrl-C or SIGTERM and says where
    it listens."""

    def __init__(
        self, config: uvicorn.Config, state: ServerState, on_listening: Callable[[str], None]
    ) -> None:
        super().__init__(config)
        self.state, self.on_listening = state, on_listening

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM stop the server gracefully, and the command then returns normally
        (uvicorn's own handling raises the signal again once it has stopped)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.state.engine is not None:
            self.state.engine.close()  # every stream gets its last event and [DONE]
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown; a second Ctrl-C (force exit) skips its waits for connections,
        not the application's own quick shutdown, which uvicorn would otherwise cancel and log
        as a traceback."""
        await super().shutdown(sockets)
        if self.force_exit:
            await self.lifespan.shutdown()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self.on_listening(f"http://{shown}:{port}")


def run_server(
    load: Loader, config: ServeConfig, name: str, on_listening: Callable[[str], None]
) -> None:
    """Serve until Ctrl-C or SIGTERM; `on_listening(url)` once the socket is bound."""
    app = create_app(load, config, name)
    settings = uvicorn.Config(
        app, host=config.host, port=config.port, log_level="warning", access_log=False,
        timeout_keep_alive=max(1, round(config.idle_timeout)), timeout_graceful_shutdown=10,
        lifespan="on",
    )  # fmt: skip
    state: ServerState = app.state.server
    server = _Server(settings, state, on_listening)
    state.stop_server = lambda: setattr(server, "should_exit", True)
    # Bound here, not by uvicorn, whose failure is a log line and its own exit code.
    with listening_socket(config.host, config.port) as sock:
        server.run(sockets=[sock])
    if state.load_error is not None:
        raise state.load_error


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (0: a free port), for the server to listen on; a
    one-line `ServeError` when the address is taken or not this machine's."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
