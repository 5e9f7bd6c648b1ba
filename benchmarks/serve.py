"""serve: N concurrent streaming clients of `charrnn serve` over loopback against `charrnn sample
--num-samples N` on the same model, and the cost of the largest request the limits allow.

Speed. The model is an LSTM (1 x 256, the default size, and 2 x 512) trained for a few steps (its
speed does not depend on its quality). The server and the baseline each run on core 0 (`taskset
-c 0`, one torch thread); the clients run in this process on core 1. Every client asks for the
same length with its own seed and reads server-sent events as they come; the figure is the
characters all clients received per second of wall time, from the first request to the last
`[DONE]`, and the time from each request to its first character (p50, p99). The baseline is
`sample_command` drawing N samples of the same length as one batch, in a child process on core
0, timed after the model has loaded. Sampling and serving alternate; the best of each counts.
Each is also counted per second of its process's CPU time (the server's from /proc, all its
threads): on a machine where other work shares core 0, the wall-time figures follow that work
and the CPU-time ones much less.

Worst request. One request just under every default limit at once (the longest prompt, the most
choices, echo with the most log-probabilities, the most characters, as far as the response cap
lets them go together), and the 100,000-character prompt with n=16 and max_tokens=5 of issue 31:
the server's peak memory (VmHWM of its process) before and after, and the request's time.

    python -m benchmarks.run --only serve [--quick]
    python -m benchmarks.serve worst            # the worst-request figures alone
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.common import Bench, Row, charrnn_args, log, run_child
from benchmarks.corpus import generated_text

TARGET = 0.8  # served chars/s over `sample --num-samples N` chars/s, N = 32, at 1 x 256
THREADS = 1  # torch threads of the server and of the baseline
SERVER_CORE, CLIENT_CORE = 0, 1


@dataclass(frozen=True)
class Sizes:
    models: tuple[tuple[int, int], ...]  # (layers, hidden) of each model measured
    clients: tuple[int, ...]  # concurrent clients per measurement
    length: int  # characters each client asks for
    repeats: int  # alternating timings of each; the best counts


FULL = Sizes(models=((1, 256), (2, 512)), clients=(1, 32), length=12_000, repeats=2)
QUICK = Sizes(models=((1, 256),), clients=(1, 32), length=200, repeats=1)
PROMPT = "The "


def model_run(bench: Bench, layers: int, hidden: int) -> Path:
    """An LSTM checkpoint of this size, trained for 5 steps on generated text."""
    folder = bench.scratch(f"serve-{layers}x{hidden}")
    corpus = folder / "corpus.txt"
    corpus.write_text(PROMPT + generated_text(200_000), "utf-8")  # the prompt's characters
    args = ["train", str(corpus), "--hidden", str(hidden), "--layers", str(layers),
            "--max-steps", "5", "--out", str(folder / "run"), "-q"]  # fmt: skip
    run_child(charrnn_args(*args))
    return folder / "run"


def pinned(core: int, argv: list[str]) -> list[str]:
    """`argv` run on one core (where taskset exists; else anywhere)."""
    return ["taskset", "-c", str(core), *argv] if _has_taskset() else argv


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


def sample_speed(run: Path, clients: int, length: int) -> tuple[float, float]:
    """chars/s of `charrnn sample --num-samples CLIENTS` on the server's core (load excluded),
    per second of wall time and per second of its CPU time."""
    argv = [sys.executable, "-m", "benchmarks.serve", "sample", str(run), str(clients), str(length)]
    done = subprocess.run(pinned(SERVER_CORE, argv), capture_output=True, text=True, check=True)
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def _sample_child(run: str, clients: int, length: int) -> None:
    from charrnn.commands import sample_command
    from charrnn.config import SampleConfig

    config = SampleConfig(length=length, num_samples=clients, seed=0)
    pieces = sample_command(Path(run) / "best.pt", PROMPT, config, "cpu", threads=THREADS)
    started, cpu = time.perf_counter(), time.process_time()
    drawn = sum(len(piece) for _, piece in pieces) - clients * len(PROMPT)
    print(drawn / (time.perf_counter() - started), drawn / (time.process_time() - cpu))


class Server:
    """`charrnn serve` in a child process on a free loopback port, pinned to the server core."""

    def __init__(self, run: Path, *flags: str) -> None:
        args = ["serve", "--checkpoint", str(run), "--port", "0", "--threads", str(THREADS),
                "--name", "bench", *flags]  # fmt: skip
        self.process = subprocess.Popen(
            pinned(SERVER_CORE, [sys.executable, "-m", "charrnn", *args]),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = line.split(" at ")[1].split()[0]
        while httpx.get(self.url + "/health").status_code != 200:
            time.sleep(0.1)

    def peak_memory(self) -> int:
        """The server process's peak resident memory so far (VmHWM), in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (all its threads, user and system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def one_client(url: str, seed: int, length: int) -> tuple[int, float]:
    """Stream one completion: (characters received, seconds to the first one).

    A lean client (HTTP/1.0 on a bare socket, so no chunked framing; one JSON parse per event)
    keeps the clients' share of the CPU small: the figure is the server's."""
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
    """Rows: served chars/s and TTFC for each model and client count against `sample
    --num-samples`, then the worst in-limit request's memory and time."""
    sizes = bench.pick(FULL, QUICK)
    if hasattr(os, "sched_setaffinity") and _has_taskset():
        os.sched_setaffinity(0, {CLIENT_CORE})  # the clients: away from what they measure
    for layers, hidden in sizes.models:
        run = model_run(bench, layers, hidden)
        server = Server(run, "--max-streams", "256", "--max-tokens", str(sizes.length))
        try:
            for clients in sizes.clients:
                runs = []
                for _ in range(sizes.repeats):
                    sampled, sampled_cpu = sample_speed(run, clients, sizes.length)
                    used = server.cpu_seconds()
                    served, firsts = asyncio.run(load(server.url, clients, sizes.length))
                    served_cpu = clients * sizes.length / (server.cpu_seconds() - used)
                    speeds = Speeds(served, sampled, served_cpu, sampled_cpu, firsts)
                    log(f"serve {layers}x{hidden}: {clients} clients {speeds}")
                    runs.append(speeds)
                fastest = max(runs, key=lambda speeds: speeds.served)
                best = Speeds(fastest.served, max(r.sampled for r in runs),
                              max(r.served_cpu for r in runs), max(r.sampled_cpu for r in runs),
                              fastest.firsts)  # fmt: skip
                bench.add(serve_row(f"{layers}x{hidden}", clients, sizes.length, best))
        finally:
            server.stop()
        if (layers, hidden) == sizes.models[0]:
            for row in worst_rows(run):
                bench.add(row)


@dataclass(frozen=True)
class Speeds:
    """One alternation: served and sampled chars/s per second of wall time and of the CPU time
    of the process (server or sampler; on a busy machine the wall figures follow the other
    work, the CPU ones much less), and each client's time to its first character."""

    served: float
    sampled: float
    served_cpu: float
    sampled_cpu: float
    firsts: list[float]

    @property
    def cpu_ratio(self) -> float:
        return self.served_cpu / self.sampled_cpu if self.sampled_cpu else 0.0

    def __str__(self) -> str:
        return (f"{self.served:,.0f} chars/s against {self.sampled:,.0f} "
                f"({self.served / self.sampled:.2f}); per CPU second {self.served_cpu:,.0f} "
                f"against {self.sampled_cpu:,.0f} ({self.cpu_ratio:.2f})")  # fmt: skip


def serve_row(model: str, clients: int, length: int, speeds: Speeds) -> Row:
    ratio = speeds.served / speeds.sampled
    has_target = clients == 32 and model == "1x256"
    p50, p99 = statistics.median(speeds.firsts), percentile(speeds.firsts, 0.99)
    return Row(
        "serve",
        f"{model} LSTM: {clients} streaming client{'s' if clients > 1 else ''} x {length} chars "
        f"(chars/s of wall time; per CPU second {speeds.served_cpu:,.0f} against "
        f"{speeds.sampled_cpu:,.0f}, {speeds.cpu_ratio:.2f}; time to first char p50 "
        f"{p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms)",
        f"{speeds.served:,.0f}",
        f"{speeds.sampled:,.0f} (sample --num-samples {clients})",
        ratio,
        f">= {TARGET}" if has_target else "",
        ratio >= TARGET if has_target else None,
        {"chars_per_s": speeds.served, "sample_chars_per_s": speeds.sampled,
         "chars_per_cpu_s": speeds.served_cpu, "sample_chars_per_cpu_s": speeds.sampled_cpu,
         "ttfc_p50_s": p50, "ttfc_p99_s": p99},
    )  # fmt: skip


# ----------------------------------------------------------------------------- the worst request


def worst_requests(corpus: str) -> dict[str, dict]:
    """The requests at the default limits: the issue's, and each limit reached together with
    as many others as the response cap (`--max-response`, 4 MB) allows."""
    long = corpus[:100_000]
    return {
        "100k prompt, n=16, max_tokens=5": {"prompt": long, "n": 16, "max_tokens": 5},
        "100k prompt echoed, n=16, max_tokens=4096": {
            "prompt": long, "n": 16, "max_tokens": 4096, "echo": True,
        },
        "100k prompt, n=16, max_tokens=1000, logprobs=5": {
            "prompt": long, "n": 16, "max_tokens": 1000, "logprobs": 5,
        },
        "15k prompt echoed with logprobs=5, max_tokens=4096": {
            "prompt": corpus[:15_000], "max_tokens": 4096, "logprobs": 5, "echo": True,
        },
    }  # fmt: skip


def worst_rows(run: Path) -> list[Row]:
    """Each worst request alone against a fresh server: its peak-memory growth and time."""
    corpus = (run.parent / "corpus.txt").read_text("utf-8")
    rows = []
    for name, body in worst_requests(corpus).items():
        server = Server(run)
        try:
            before = server.peak_memory()
            started = time.perf_counter()
            reply = httpx.post(
                server.url + "/v1/completions", json={"model": "bench", **body}, timeout=600
            )
            seconds = time.perf_counter() - started
            grown = server.peak_memory() - before
        finally:
            server.stop()
        log(f"worst: {name}: {reply.status_code}, {len(reply.content):,} bytes, "
            f"+{grown / 2**20:.0f} MiB peak, {seconds:.1f} s")  # fmt: skip
        rows.append(
            Row(
                "serve",
                f"1x256 LSTM, one request: {name} (peak memory growth; time)",
                f"+{grown / 2**20:.0f} MiB; {seconds:.1f} s",
                f"HTTP {reply.status_code}, {len(reply.content) / 2**20:.1f} MiB body",
                numbers={"peak_growth_bytes": grown, "seconds": seconds},
            )  # fmt: skip
        )
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        _sample_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "worst":
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            for row in worst_rows(model_run(Bench(False, Path(folder)), 1, 256)):
                print(f"{row.figure}: {row.value} ({row.baseline})")
