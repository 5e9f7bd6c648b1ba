"""`charrnn serve` as a client sees it: a real server process on a free loopback port, the stock
`openai` client, raw HTTP for what clients must not be able to break, and the page in Chromium."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from child import CHILD_ENV, charrnn_argv

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from charrnn.commands import train_command  # noqa: E402
from charrnn.config import SampleConfig  # noqa: E402
from charrnn.generation.sampling import collect, generate  # noqa: E402
from charrnn.model.checkpoint import load_model  # noqa: E402

NAME = "tiny"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_config, repetitive_text) -> Path:
    root = tmp_path_factory.mktemp("serve")
    (root / "corpus.txt").write_text(repetitive_text(4000), "utf-8")
    config = tiny_config(hidden=32, max_steps=40, eval_every=40, lr=0.02)
    train_command([root / "corpus.txt"], config, out=root / "run", cache_dir=root / ".cache")
    return root / "run"


class Server:
    """A `charrnn serve` child process and its address."""

    def __init__(self, run: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            charrnn_argv("serve", "--checkpoint", run, "--port", "0", "--name", NAME,
                         "--threads", "1", *flags),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "serving RUN at http://127.0.0.1:PORT ..."
        assert " at http://127.0.0.1:" in line, line + self.stop()
        self.url = line.split(" at ")[1].split()[0]
        deadline = time.monotonic() + 60
        while httpx.get(self.url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "the model never loaded"
            time.sleep(0.1)

    def post(self, path: str, body: object, **keys) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=60, **keys)

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Stop the server as Ctrl-C does; its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=60)
        return err


@pytest.fixture(scope="module")
def server(run) -> Iterator[Server]:
    server = Server(run, "--max-prompt", "300", "--max-body", "20000", "--max-tokens", "100000")
    yield server
    err = server.stop()
    assert server.process.returncode == 0 and "Traceback" not in err, err


def alone(run: Path, prompt: str, **options) -> str:
    """What `charrnn sample` draws after `prompt` with these options, computed in-process."""
    model, checkpoint = load_model(run / "best.pt")
    config = SampleConfig(**options)
    return collect(generate(model, checkpoint.vocab, prompt, config), 1)[0][len(prompt) :]


def client(server: Server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_a_stock_client_completes_and_streams_the_text_sample_draws(server, run):
    expected = alone(run, "the ", length=60, seed=5, temperature=0.7)
    done = client(server).completions.create(
        model=NAME, prompt="the ", max_tokens=60, seed=5, temperature=0.7
    )
    assert done.choices[0].text == expected and done.choices[0].finish_reason == "length"
    assert done.usage.prompt_tokens == 4 and done.usage.completion_tokens == 60
    long = alone(run, "the ", length=3000, seed=5, temperature=0.7)
    chunks = list(
        client(server).completions.create(
            model=NAME, prompt="the ", max_tokens=3000, seed=5, temperature=0.7, stream=True
        )
    )
    assert len(chunks) > 1  # the text arrives in pieces as it is drawn, not at the end
    assert "".join(c.choices[0].text for c in chunks) == long
    assert chunks[-1].choices[0].finish_reason == "length"
    [model] = client(server).models.list().data
    assert model.id == NAME and "characters" in model.model_extra["tokens"]


def test_options_stop_n_echo_logprobs_and_top_k(server, run):
    free = alone(run, "a ", length=80, seed=2, temperature=1.0)
    stop = free[40:42]
    body = {"model": NAME, "prompt": ["a ", "to "], "max_tokens": 80, "seed": 2, "n": 2,
            "stop": [stop, "\u0000"], "echo": True, "logprobs": 2, "top_k": 50}  # fmt: skip
    reply = server.post("/v1/completions", body).json()
    choices = reply["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    first = choices[0]
    assert first["text"] == "a " + free[: free.find(stop)] and first["finish_reason"] == "stop"
    assert choices[1]["text"] == "a " + alone(run, "a ", length=80, seed=3, stop=stop,
                                              temperature=1.0)  # fmt: skip
    assert choices[2]["text"].startswith("to ")
    marks = first["logprobs"]
    assert "".join(marks["tokens"]) == first["text"]
    assert marks["token_logprobs"][0] is None and all(v <= 0 for v in marks["token_logprobs"][1:])
    assert all(len(top) == 2 for top in marks["top_logprobs"][1:])
    assert marks["text_offset"][:3] == [0, 1, 2]
    greedy = server.post("/v1/completions", {"model": NAME, "prompt": "the ", "temperature": 0})
    assert greedy.json()["choices"][0]["text"] == alone(run, "the ", length=16, greedy=True)


def test_score_gives_the_eval_figures(server, run):
    reply = server.post("/v1/score", {"text": "the lazy dog", "per_char": True}).json()
    assert reply["chars"] == 11 and len(reply["per_char"]) == 11
    assert reply["bpc"] == pytest.approx(sum(c["surprisal_bits"] for c in reply["per_char"]) / 11)
    import charrnn

    assert reply["loss"] == pytest.approx(charrnn.load(run).score("the lazy dog").loss, rel=1e-5)


def test_concurrent_clients_each_get_their_own_text_and_a_newcomer_starts_at_once(server, run):
    texts: dict[int, str] = {}

    def one(seed: int) -> None:
        stream = client(server).completions.create(
            model=NAME, prompt="the ", max_tokens=150, seed=seed, stream=True
        )
        texts[seed] = "".join(c.choices[0].text for c in stream)

    # The stop text keeps the long one at a character a step while it is alone: a lone stream
    # that only samples draws runs, and would end 100,000 characters before the others start.
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60, json={
        "model": NAME, "prompt": "a", "max_tokens": 100000, "stream": True, "stop": ["\u0000"],
    }) as long:  # fmt: skip
        lines = long.iter_lines()
        next(lines)  # the long one is under way
        workers = [threading.Thread(target=one, args=(seed,)) for seed in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        # All six finished while the long one was still being drawn.
        assert not any(line == "data: [DONE]" for line in _take(lines, 20))
    for seed in range(6):
        assert texts[seed] == alone(run, "the ", length=150, seed=seed, temperature=1.0)


def _take(lines: Iterator[str], count: int) -> list[str]:
    return [next(lines) for _ in range(count)]


BAD_BODIES = [
    ("malformed JSON", b'{"model": "tiny", "prompt": ', 400),
    ("a JSON list", b"[1, 2]", 400),
    ("NaN", b'{"model": "tiny", "prompt": "a", "temperature": NaN}', 400),
    ("no prompt", {"model": NAME}, 400),
    ("no model", {"prompt": "a"}, 400),
    ("another model", {"model": "gpt-4", "prompt": "a"}, 404),
    ("prompt of numbers", {"model": NAME, "prompt": [1, 2, 3]}, 400),
    ("empty prompt", {"model": NAME, "prompt": ""}, 400),
    ("empty prompt list", {"model": NAME, "prompt": []}, 400),
    ("oversized prompt", {"model": NAME, "prompt": "the " * 100}, 400),
    ("unknown characters", {"model": NAME, "prompt": "Zebra"}, 400),
    ("unknown field", {"model": NAME, "prompt": "a", "temprature": 1}, 400),
    ("max_tokens text", {"model": NAME, "prompt": "a", "max_tokens": "ten"}, 400),
    ("max_tokens negative", {"model": NAME, "prompt": "a", "max_tokens": -1}, 400),
    ("max_tokens huge", {"model": NAME, "prompt": "a", "max_tokens": 10**12}, 400),
    ("max_tokens bool", {"model": NAME, "prompt": "a", "max_tokens": True}, 400),
    ("temperature negative", {"model": NAME, "prompt": "a", "temperature": -1}, 400),
    ("temperature text", {"model": NAME, "prompt": "a", "temperature": "hot"}, 400),
    ("top_p zero", {"model": NAME, "prompt": "a", "top_p": 0}, 400),
    ("top_k zero", {"model": NAME, "prompt": "a", "top_k": 0}, 400),
    ("n zero", {"model": NAME, "prompt": "a", "n": 0}, 400),
    ("n huge", {"model": NAME, "prompt": "a", "n": 10**6}, 400),
    ("n fractional", {"model": NAME, "prompt": "a", "n": 1.5}, 400),
    ("seed huge", {"model": NAME, "prompt": "a", "seed": 2**70}, 400),
    ("stop empty", {"model": NAME, "prompt": "a", "stop": ""}, 400),
    ("stop number", {"model": NAME, "prompt": "a", "stop": 5}, 400),
    ("logprobs huge", {"model": NAME, "prompt": "a", "logprobs": 99}, 400),
    ("stream text", {"model": NAME, "prompt": "a", "stream": "yes"}, 400),
    ("body too large", {"model": NAME, "prompt": "a", "user": "x" * 30000}, 413),
    ("score without text", {"model": NAME}, 400),
]


@pytest.mark.parametrize("body", [b for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_each_bad_input_gets_one_4xx_json_error_and_the_server_goes_on(server, body):
    _, sent, status = body
    path = "/v1/score" if body[0].startswith("score") else "/v1/completions"
    raw = sent if isinstance(sent, bytes) else json.dumps(sent).encode()
    reply = httpx.post(server.url + path, content=raw, timeout=60)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["message"] and error["type"] and "code" in error
    good = server.post("/v1/completions", {"model": NAME, "prompt": "a", "max_tokens": 3})
    assert good.status_code == 200 and len(good.json()["choices"][0]["text"]) == 3


def test_key_limits_disconnects_and_sigterm(run):
    server = Server(run, "--api-key", "s3cret", "--max-streams", "2", "--max-tokens", "100000")
    try:
        assert httpx.get(server.url + "/health").json() == {"status": "ready"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            refused = httpx.get(server.url + "/v1/models", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["message"]
        with pytest.raises(openai.AuthenticationError):
            client(server, "wrong").completions.create(model=NAME, prompt="a", max_tokens=2)
        keyed = client(server, "s3cret")
        assert keyed.completions.create(model=NAME, prompt="a", max_tokens=2).choices[0].text
        auth = {"Authorization": "Bearer s3cret"}
        long = {"model": NAME, "prompt": "a", "max_tokens": 100000, "stream": True}
        # Two endless streams fill the slots: a third request is refused at once, not queued.
        for _ in range(3):  # each time the streams are dropped, their slots are free at once
            held = [_open_stream(server, long) for _ in range(2)]
            busy = server.post("/v1/completions", {"model": NAME, "prompt": "a"}, headers=auth)
            assert busy.status_code == 429 and busy.json()["error"]["type"] == "rate_limit_error"
            for sock in held:
                sock.close()
            _eventually_ok(server, auth)
        # SIGTERM: an open stream gets its last event and [DONE], and the server exits 0.
        with httpx.stream("POST", server.url + "/v1/completions", json=long, headers=auth,
                          timeout=60) as stream:  # fmt: skip
            lines = stream.iter_lines()
            next(lines)
            server.process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][len("data: ") :])["choices"][0]["finish_reason"] == "length"
        err = server.stop(signal.SIGTERM)
        assert server.process.returncode == 0 and "Traceback" not in err, err
    finally:
        server.stop()


def test_a_second_ctrl_c_ends_the_server_at_once_without_a_traceback(run):
    server = Server(run, "--max-tokens", "100000")
    try:
        long = {"model": NAME, "prompt": "a", "max_tokens": 100000, "stream": True}
        held = _open_stream(server, long)  # shutdown has an open stream to end
        started = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        time.sleep(0.005)  # the impatient second press, while the first is being handled
        err = server.stop()
        assert server.process.returncode == 0 and "Traceback" not in err and not err, err
        assert time.monotonic() - started < 10
        held.close()
    finally:
        server.stop()


def _open_stream(server: Server, body: dict) -> socket.socket:
    """A streaming request on a raw socket, read until its first event: a client that can
    vanish without a word."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    received = b""
    while b"data: " not in received:
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200")
    return sock


def _eventually_ok(server: Server, auth: dict) -> None:
    """A request succeeds within a second of the clients leaving (the slots were freed)."""
    deadline = time.monotonic() + 1.0
    body = {"model": NAME, "prompt": "a", "max_tokens": 2, "n": 2}
    while (reply := server.post("/v1/completions", body, headers=auth)).status_code == 429:
        assert time.monotonic() < deadline, "the dropped streams kept their slots"
        time.sleep(0.02)
    assert reply.status_code == 200


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")
def test_the_page_streams_text_in_chromium(server, tmp_path):
    # A large virtual-time budget: the page runs until the stream ends (then the DOM is dumped);
    # a small one lets virtual time run out while the server is still drawing.
    url = server.url + "/?prompt=the%20&max_tokens=1000&temperature=0.8&go=1"
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={tmp_path}", "--virtual-time-budget=100000000", "--dump-dom",
         url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = result.stdout
    assert "data-lengths" in dom, dom[-2000:] + result.stderr[-2000:]
    lengths = [int(n) for n in _attribute(dom, "data-lengths").split(",") if n]
    # The text grew over several events: first the echoed prime, then piece by piece (the DOM
    # may be dumped before the last of them, rarely, on a busy machine).
    assert len(lengths) > 2 and lengths == sorted(lengths) and lengths[0] == len("the ")
    assert lengths[-1] >= 1000 or 'data-done="1"' not in dom
    assert "data-errors" not in dom
    assert "Uncaught" not in result.stderr and ":ERROR:CONSOLE" not in result.stderr


def _attribute(dom: str, name: str) -> str:
    start = dom.index(f'{name}="') + len(name) + 2
    return dom[start : dom.index('"', start)]


def test_a_taken_port_is_one_line_and_exit_1(run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            charrnn_argv("serve", "--checkpoint", run, "--port", str(port)),
            capture_output=True, text=True, env=CHILD_ENV, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"charrnn: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
