"""`charrnn serve` at its edges: every request bounded (a long prompt primes once, in windows,
beside the open streams; the largest request the limits allow stays within its memory and time),
slots that follow the work, and no 500 for anything a client can send."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from test_serve import NAME, Server, alone

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from charrnn.commands import train_command  # noqa: E402
from charrnn.config import SampleConfig, ServeConfig  # noqa: E402
from charrnn.generation.streams import PRIME_WINDOW, StreamBatch  # noqa: E402
from charrnn.model.checkpoint import load_model  # noqa: E402
from charrnn.serve.protocol import CompletionRequest, response_bound  # noqa: E402

LONG = 5 * PRIME_WINDOW + 17  # a prompt of several windows and a part
LEFT_EARLY: list[int] = []  # clients that left while sending their bodies


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_config, repetitive_text) -> Path:
    root = tmp_path_factory.mktemp("serve-limits")
    (root / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    config = tiny_config(hidden=32, max_steps=40, eval_every=40, lr=0.02)
    train_command([root / "corpus.txt"], config, out=root / "run", cache_dir=root / ".cache")
    return root / "run"


@pytest.fixture(scope="module")
def server(run):
    """A server with the default limits (the request timeout aside)."""
    server = Server(run, "--request-timeout", "60")
    yield server
    err = server.stop()
    assert server.process.returncode == 0 and "Traceback" not in err, err
    # The clients that left halfway through their bodies: one line each, and nothing else.
    assert err.count("a client left while sending its request body") == len(LEFT_EARLY), err


def post(server: Server, body: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/completions", content=_dump(body), timeout=60)


def _dump(body: object) -> bytes:
    return json.dumps(body).encode()


def prompt_of(run: Path, length: int) -> str:
    text = (run.parent / "corpus.txt").read_text("utf-8")
    return (text * (length // len(text) + 1))[:length]


def peak_memory(server: Server) -> int:
    """The server's peak resident memory so far (VmHWM), in bytes."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) * 1024


def good_answer(server: Server) -> None:
    reply = post(server, {"model": NAME, "prompt": "the ", "max_tokens": 3})
    assert reply.status_code == 200 and len(reply.json()["choices"][0]["text"]) == 3


# ----------------------------------------------------------------------------- priming


def test_a_long_prime_runs_a_window_a_step_while_the_open_streams_go_on(run):
    model, checkpoint = load_model(run / "best.pt")
    prime = prompt_of(run, LONG)
    config = SampleConfig(length=30, seed=3, temperature=0.9)
    batch = StreamBatch(model, checkpoint.vocab)
    early = batch.join("the ", SampleConfig(length=100, seed=1))
    steps_before_first = 0
    late = batch.join_samples(prime, replace(config, num_samples=3))
    texts: dict[int, str] = {}
    while batch.active:
        pieces = batch.step()
        got = {piece.stream for piece in pieces}
        if not any(ident in texts for ident in late):
            steps_before_first += 1
            assert early in got  # the open stream drew a character in every priming step
        for piece in pieces:
            texts[piece.stream] = texts.get(piece.stream, "") + piece.text
    # The prime ran once, a window per step, for all three samples: they drew their first
    # characters in the step that ran its last window.
    assert steps_before_first == math.ceil(LONG / PRIME_WINDOW)
    for i, ident in enumerate(late):
        assert texts[ident] == alone(run, prime, length=30, seed=3 + i, temperature=0.9)
    assert texts[early] == alone(run, "the ", length=100, seed=1)


def test_a_long_prompt_gives_the_server_the_text_sample_and_the_api_give(server, run):
    import charrnn

    prompt = prompt_of(run, LONG)
    body = {"model": NAME, "prompt": prompt, "max_tokens": 200, "seed": 11, "n": 2,
            "temperature": 0.8}  # fmt: skip
    choices = post(server, body).json()["choices"]
    for i, choice in enumerate(choices):
        expected = alone(run, prompt, length=200, seed=11 + i, temperature=0.8)
        assert choice["text"] == expected
    model = charrnn.load(run)
    drawn = "".join(model.generate(prompt, length=200, seed=11, temperature=0.8))
    assert drawn == prompt + choices[0]["text"]


# ----------------------------------------------------------------------------- bounded requests


def test_the_largest_request_the_limits_allow_stays_within_its_memory_and_time(server, run):
    limits = ServeConfig()
    before = peak_memory(server)
    started = time.monotonic()
    issue = {"model": NAME, "prompt": prompt_of(run, limits.max_prompt), "n": limits.max_n,
             "max_tokens": 5}  # fmt: skip
    reply = post(server, issue)
    assert reply.status_code == 200 and len(reply.json()["choices"]) == limits.max_n
    # Echo with the most log-probabilities and characters, its response just under the cap.
    asked = CompletionRequest(("",), limits.max_tokens, 1.0, None, None, 1, (), None, False,
                              5, True, False)  # fmt: skip
    low, high = 0, limits.max_prompt  # the longest echo under the cap ("\n" takes 2 bytes)
    while low < high:
        middle = (low + high + 1) // 2
        fits = response_bound(asked, [prompt_of(run, middle)], 2) <= limits.max_response
        low, high = (middle, high) if fits else (low, middle - 1)
    room = low
    body = {"model": NAME, "prompt": prompt_of(run, room), "max_tokens": limits.max_tokens,
            "logprobs": 5, "echo": True, "seed": 0}  # fmt: skip
    reply = post(server, body)
    assert reply.status_code == 200, reply.text
    assert len(reply.content) < limits.max_response
    assert len(reply.json()["choices"][0]["logprobs"]["tokens"]) == room + limits.max_tokens
    grown = peak_memory(server) - before
    assert grown < 100 * 2**20, f"the server's peak memory grew by {grown / 2**20:.0f} MiB"
    assert time.monotonic() - started < 60
    # Beyond the cap: a clear 400 before any work.
    body["prompt"] = prompt_of(run, room + 2 * limits.max_tokens)
    refused = post(server, body)
    assert (
        refused.status_code == 400 and "response could reach" in refused.json()["error"]["message"]
    )


# ----------------------------------------------------------------------------- never a 500


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "tiny", "prompt": "A", "\\ud800": 1}',
        b'{"model": "tiny", "prompt": "the", "temperature": 1' + b"0" * 400 + b"}",
        b'{"model": "tiny", "prompt": "the", "top_p": -' + b"9" * 400 + b"}",
        b'{"model": "tiny", "prompt": "the", "max_tokens": ' + b"9" * 5000 + b"}",
        b'{"model": "tiny", "prompt": "the \\udfff"}',
        b'{"model": "tiny", "prompt": "the", "stop": "\\ud83d"}',
    ],
    ids=["surrogate key", "400-digit temperature", "400-digit top_p", "5000-digit integer",
         "surrogate prompt", "surrogate stop"],
)  # fmt: skip
def test_odd_numbers_and_lone_surrogates_get_a_4xx_or_an_answer(server, raw):
    reply = httpx.post(server.url + "/v1/completions", content=raw, timeout=60)
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code == 400:
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    good_answer(server)


def test_a_temperature_too_small_to_scale_by_is_greedy(server, run):
    body = {"model": NAME, "prompt": "the ", "max_tokens": 40, "temperature": 1e-40, "seed": 1}
    text = post(server, body).json()["choices"][0]["text"]
    assert text == alone(run, "the ", length=40, greedy=True)


def test_a_client_that_leaves_while_sending_its_body_is_one_log_line(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"model": "tiny", "prompt": "th'
        )
        time.sleep(0.2)
    LEFT_EARLY.append(1)
    good_answer(server)  # the fixture's teardown counts the log lines


JSON_LEAVES = (
    st.none() | st.booleans() | st.floats() | st.integers(min_value=-(10**400), max_value=10**400)
    | st.integers(min_value=-3, max_value=40)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
    | st.sampled_from(["\ud800", "\udfff", "the ", "a", "", "tiny", "NaN", "1e999"])
)  # fmt: skip
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                           max_size=4),
    max_leaves=8,
)  # fmt: skip
FIELDS = ["model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
          "logprobs", "echo", "top_k", "user", "stream_options", "text", "per_char"]  # fmt: skip
BODIES = (
    st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=8) | st.just("\ud800"), JSON_VALUES, max_size=8
    ).map(lambda body: {"model": NAME, "prompt": "the ", **body})
    | JSON_VALUES
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(body=BODIES, path=st.sampled_from(["/v1/completions", "/v1/score"]))
def test_any_json_body_gets_an_answer_or_a_4xx_in_openais_shape(server, body, path):
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int):
        body["max_tokens"] = min(body["max_tokens"], 200)  # a valid request stays quick
    raw = json.dumps(body).encode()  # surrogates escaped, huge integers written out
    reply = httpx.post(server.url + path, content=raw, timeout=60)
    assert reply.status_code == 200 or 400 <= reply.status_code < 500, reply.text
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    good_answer(server)


# ----------------------------------------------------------------------------- slots and time


def test_a_timed_out_request_says_do_not_retry_and_a_reader_that_stops_frees_its_slot(run):
    server = Server(run, "--request-timeout", "1", "--max-tokens", "10000000",
                    "--max-response", "1000000000", "--max-streams", "1")  # fmt: skip
    try:
        long = {"model": NAME, "prompt": "a", "max_tokens": 10_000_000}
        timed_out = post(server, long)
        assert timed_out.status_code == 408 and timed_out.headers["x-should-retry"] == "false"
        # A stream whose client never reads: its slot is free by the timeout and its grace.
        host, port = server.url.removeprefix("http://").split(":")
        held = socket.create_connection((host, int(port)), timeout=10)
        data = _dump({**long, "stream": True})
        held.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(data), data))  # fmt: skip
        started = time.monotonic()
        time.sleep(0.5)
        assert post(server, {"model": NAME, "prompt": "a"}).status_code == 429
        # Scoring and echoed log-probabilities share the same slots.
        scored = httpx.post(server.url + "/v1/score", json={"text": "the lazy dog"}, timeout=60)
        echoed = post(server, {"model": NAME, "prompt": "the", "echo": True, "logprobs": 1})
        assert scored.status_code == echoed.status_code == 429
        while (reply := post(server, {"model": NAME, "prompt": "a"})).status_code == 429:
            assert time.monotonic() - started < 8, "a client that never reads kept its slot"
            time.sleep(0.1)
        assert reply.status_code == 200
        held.close()
        err = server.stop()
        assert "Traceback" not in err, err
    finally:
        server.stop()


def test_a_choice_frees_its_slot_when_its_text_is_drawn_not_when_it_is_read(run):
    server = Server(run, "--max-streams", "2", "--max-response", "100000000",
                    "--max-tokens", "10000000")  # fmt: skip
    try:
        long = {
            "model": NAME,
            "prompt": "a",
            "max_tokens": 10_000_000,
            "stream": True,
            "stop": ["\u0000"],
        }  # (a stop string: a character a step, not runs)
        with httpx.stream("POST", server.url + "/v1/completions", json=long, timeout=60) as one:
            next(one.iter_lines())  # one slot streams
            # A client that never reads a response larger than the socket buffers: its text is
            # drawn all the same, and its slot is free once it is, before anything is read.
            body = {"model": NAME, "prompt": prompt_of(run, 100_000), "max_tokens": 50,
                    "stream": True, "echo": True, "logprobs": 5}  # fmt: skip
            host, port = server.url.removeprefix("http://").split(":")
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no autotuning
            stuck.connect((host, int(port)))
            data = _dump(body)
            stuck.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                          b"\r\n\r\n%s" % (len(data), data))  # fmt: skip
            # Its response has begun (it holds a slot; nothing past these bytes is read).
            assert stuck.recv(64).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            while (reply := post(server, {"model": NAME, "prompt": "a"})).status_code == 429:
                assert time.monotonic() - started < 20, "a drawn choice kept its slot"
                time.sleep(0.1)
            assert reply.status_code == 200
            stuck.close()
    finally:
        server.stop()


def poisoned_model(run):  # noqa: ANN001, ANN201
    """The run's model, whose every step that reads a "z" raises: a real failure inside a
    batched step (the embedding is the step's first operation)."""
    model, checkpoint = load_model(run / "best.pt")
    poison = checkpoint.vocab.encode("z")[0]
    embed = model.embed

    class Poisoned(type(embed)):
        def forward(self, ids):  # noqa: ANN001, ANN202
            if bool((ids == poison).any()):
                raise RuntimeError("a step that fails")
            return super().forward(ids)

    embed.__class__ = Poisoned
    return model, checkpoint


def test_a_failed_step_fails_its_requests_and_the_next_ones_are_served_at_once(run):
    """A model whose priming raises on one character: that request's step fails for real; the
    requests after it are served at once, their stream ids never a failed one's."""
    import asyncio

    import uvicorn

    from charrnn.serve.app import create_app, listening_socket

    model, checkpoint = poisoned_model(run)
    config = ServeConfig(port=0, request_timeout=30.0)
    app = create_app(lambda: (model, checkpoint), config, NAME)
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        results: dict[str, httpx.Response] = {}

        def ask(key: str, prompt: str) -> None:
            body = {"model": NAME, "prompt": prompt, "max_tokens": 50, "seed": 4}
            results[key] = httpx.post(url + "/v1/completions", json=body, timeout=60)

        for round_ in range(3):
            started = time.monotonic()
            workers = [threading.Thread(target=ask, args=("bad", "the z"))]
            workers += [threading.Thread(target=ask, args=(f"ok{i}", "the ")) for i in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=60)
            assert results["bad"].status_code == 500
            assert "generation failed" in results["bad"].json()["error"]["message"]
            expected = alone(run, "the ", length=50, seed=4, temperature=1.0)
            for i in range(4):  # failed with the bad one's step, or served: never stranded
                reply = results[f"ok{i}"]
                assert reply.status_code in (200, 500)
                if reply.status_code == 200:
                    assert reply.json()["choices"][0]["text"] == expected
            after = httpx.post(url + "/v1/completions", timeout=60, json={
                "model": NAME, "prompt": "the ", "max_tokens": 50, "seed": 4})  # fmt: skip
            assert after.json()["choices"][0]["text"] == expected
            assert time.monotonic() - started < 10, f"round {round_} waited"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_failed_requests_late_release_never_names_a_newcomers_stream(run):
    """After a failed step the batcher starts a new batch; the failed request's release comes
    after a newcomer has joined it, and must not end the newcomer's stream."""
    import asyncio

    from charrnn.serve.engine import Completion, Engine

    model, checkpoint = poisoned_model(run)
    config = SampleConfig(length=40, seed=4, temperature=1.0)

    async def scenario() -> str:
        engine = Engine(model, checkpoint.vocab, max_streams=8)
        bad = engine.submit([Completion("the z", config)])
        while not bad.failed:
            await asyncio.sleep(0.01)
        good = engine.submit([Completion("the ", config)])
        engine.release(bad)  # after the newcomer's join: the batcher reads both in this order
        text = ""
        while good.finished < 1:
            await good.ready.wait()
            text += "".join(piece.text for piece in good.take()[0])
        engine.stop()
        return text

    text = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert text == alone(run, "the ", length=40, seed=4, temperature=1.0)
