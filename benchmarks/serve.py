"""serve: N concurrent streaming clients of `charrnn serve` over loopback against `charrnn sample
--num-samples N` on the same model, measured in one run.

The model is a 2 x 256 LSTM trained for a few steps (its speed does not depend on its quality).
Every client asks for the same length with its own seed and reads server-sent events as they
come; the figure is the characters all clients received per second of wall time, from the first
request to the last `[DONE]`, and the time from each request to its first character (p50, p99).
The baseline is `sample_command` drawing N samples of the same length as one batch, in this
process on the same torch thread count. Sampling and serving alternate; the best of each counts.

    python -m benchmarks.run --only serve [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.common import Bench, Row, charrnn_args, log, run_child
from benchmarks.corpus import generated_text
from charrnn.commands import sample_command
from charrnn.config import Batcher, SampleConfig, ServeConfig

TARGET = 0.7  # served chars/s over `sample --num-samples N` chars/s, N = 32
THREADS = 1  # torch threads of the server and of the baseline


@dataclass(frozen=True)
class Sizes:
    clients: tuple[int, ...]  # concurrent clients per measurement
    length: int  # characters each client asks for
    repeats: int  # alternating timings of each; the best counts


FULL = Sizes(clients=(1, 8, 32), length=1000, repeats=3)
QUICK = Sizes(clients=(1, 32), length=100, repeats=1)


def model_run(bench: Bench) -> Path:
    """A 2 x 256 LSTM checkpoint, trained for 5 steps on generated text."""
    folder = bench.scratch("serve")
    corpus = folder / "corpus.txt"
    corpus.write_text(PROMPT + generated_text(100_000), "utf-8")  # the prompt's characters
    args = ["train", str(corpus), "--hidden", "256", "--layers", "2", "--max-steps", "5",
            "--out", str(folder / "run"), "-q"]  # fmt: skip
    run_child(charrnn_args(*args))
    return folder / "run"


def sample_speed(run: Path, clients: int, length: int) -> float:
    """chars/s of `charrnn sample --num-samples CLIENTS` (model load excluded)."""
    config = SampleConfig(length=length, num_samples=clients, seed=0)
    pieces = sample_command(run / "best.pt", PROMPT, config, "cpu", threads=THREADS)
    started = time.perf_counter()
    drawn = sum(len(piece) for _, piece in pieces) - clients * len(PROMPT)
    return drawn / (time.perf_counter() - started)


class Server:
    """`charrnn serve` in a child process on a free loopback port."""

    def __init__(self, run: Path, length: int, batcher: str) -> None:
        args = ["serve", "--checkpoint", str(run), "--port", "0", "--threads", str(THREADS),
                "--max-streams", "256", "--max-tokens", str(length), "--name", "bench",
                "--batcher", batcher]  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "charrnn", *args], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = line.split(" at ")[1].split()[0]
        while httpx.get(self.url + "/health").status_code != 200:
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


PROMPT = "The "


async def one_client(url: str, seed: int, length: int) -> tuple[int, float]:
    """Stream one completion: (characters received, seconds to the first one).

    A lean client (HTTP/1.0 on a bare socket, so no chunked framing; one JSON parse per event)
    keeps the clients' share of this machine's CPUs small: the figure is the server's."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(
        {"model": "bench", "prompt": PROMPT, "max_tokens": length, "seed": seed, "stream": True}
    ).encode()
    started, first, chars = time.perf_counter(), None, 0
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    buffer = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n\r\n", 1)[1]
    while chunk := await reader.read(65536):
        buffer += chunk
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: {"):
                text = json.loads(event[6:])["choices"][0]["text"]
                if text and first is None:
                    first = time.perf_counter() - started
                chars += len(text)
    writer.close()
    return chars, first if first is not None else float("nan")


async def load(url: str, clients: int, length: int) -> tuple[float, list[float]]:
    """`clients` concurrent streams: aggregate chars/s and each one's time to first character."""
    started = time.perf_counter()
    results = await asyncio.gather(*(one_client(url, seed, length) for seed in range(clients)))
    elapsed = time.perf_counter() - started
    assert all(chars == length for chars, _ in results), "a client got a short text"
    return sum(chars for chars, _ in results) / elapsed, [first for _, first in results]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(bench: Bench) -> None:
    """Rows: served chars/s and TTFC for each client count and batcher, against `sample
    --num-samples`."""
    sizes = bench.pick(FULL, QUICK)
    run = model_run(bench)
    servers = {batcher: Server(run, sizes.length, batcher) for batcher in Batcher.values()}
    try:
        for clients in sizes.clients:
            sampled, served = 0.0, {batcher: (0.0, [0.0]) for batcher in Batcher.values()}
            for _ in range(sizes.repeats):
                sampled = max(sampled, sample_speed(run, clients, sizes.length))
                for batcher, server in servers.items():
                    speed, firsts = asyncio.run(load(server.url, clients, sizes.length))
                    if speed > served[batcher][0]:
                        served[batcher] = (speed, firsts)
            for batcher, (speed, firsts) in served.items():
                log(f"serve --batcher {batcher}: {clients} clients {speed:,.0f} chars/s, "
                    f"sample {sampled:,.0f}")  # fmt: skip
                bench.add(serve_row(clients, sizes.length, batcher, speed, firsts, sampled))
    finally:
        for server in servers.values():
            server.stop()


def serve_row(
    clients: int, length: int, batcher: str, served: float, firsts: list[float], sampled: float
) -> Row:
    ratio = served / sampled
    has_target = clients == 32 and batcher == ServeConfig.batcher
    p50, p99 = statistics.median(firsts), percentile(firsts, 0.99)
    return Row(
        "serve",
        f"--batcher {batcher}: {clients} streaming client{'s' if clients > 1 else ''} x {length} "
        f"chars (chars/s; time to first char p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms)",
        f"{served:,.0f}",
        f"{sampled:,.0f} (sample --num-samples {clients})",
        ratio,
        f">= {TARGET}" if has_target else "",
        ratio >= TARGET if has_target else None,
        {"chars_per_s": served, "sample_chars_per_s": sampled, "ttfc_p50_s": p50,
         "ttfc_p99_s": p99},
    )  # fmt: skip
