"""page: the exported web page's sampling speed in headless Chromium, and the ONNX step graph's
under onnxruntime, each against `charrnn sample`'s (PyTorch, one thread) in the same run.

The model is the built-in starter (`--checkpoint shakespeare`, a 1 x 256 LSTM), exported with
`--quantize int8`. Each speed is of the sampling loop alone (the page times itself with
performance.now(); loading is left out of all three). The ONNX row needs 'charrnn-cli[onnx]'.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Bench, Row, log
from charrnn.commands import export_command
from charrnn.config import SampleConfig
from charrnn.errors import MissingExtraError
from charrnn.generation.sampling import collect, generate
from charrnn.model.checkpoint import load_model

MODEL = "shakespeare"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@dataclass(frozen=True)
class Sizes:
    chars: int  # sampled per timing
    repeats: int  # timings of each; the best counts


FULL = Sizes(chars=5000, repeats=2)
QUICK = Sizes(chars=200, repeats=1)


def torch_speed(checkpoint: Path, chars: int) -> float:
    """chars/s of charrnn's own sampler (temperature 1, one stream, one thread), load excluded."""
    model, loaded = load_model(checkpoint)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        config = SampleConfig(length=chars, temperature=1.0, seed=0)
        collect(generate(model, loaded.vocab, "", config), 1)
        return chars / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)


def browser_speed(chromium: str, page: Path, chars: int, profile: Path) -> float:
    """chars/s of the page's own sampler (temperature 1), as the page's test hook times it."""
    spec = urllib.parse.quote(json.dumps({"prime": "", "speed": chars}))
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--dump-dom", page.resolve().as_uri() + "#test=" + spec],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    found = re.search(r'<pre id="test-result"[^>]*>([^<]*)</pre>', result.stdout)
    if not found or not found.group(1):
        raise RuntimeError(f"the page wrote no result: {result.stderr[-500:]}")
    shown = json.loads(html.unescape(found.group(1)))
    return len(shown["sample"]) / shown["sample_seconds"]


def onnx_speed(graph: Path, chars: int) -> float:
    """chars/s of the step graph under onnxruntime (one thread), drawing with numpy."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["charrnn"])
    names = [i.name for i in session.get_inputs()][1:]
    state = {n: np.zeros((meta["layers"], 1, meta["hidden"]), np.float32) for n in names}
    rng, ids = np.random.default_rng(0), np.zeros((1, 1), np.int64)
    started = time.perf_counter()
    for _ in range(chars):
        logits, *after = session.run(None, {"ids": ids, **state})
        state = dict(zip(names, after, strict=True))
        gumbel = -np.log(-np.log(rng.random(logits.shape[-1])))
        ids[0, 0] = int(np.argmax(logits[0, -1] + gumbel))
    return chars / (time.perf_counter() - started)


def add_row(bench: Bench, figure: str, speed: float, baseline: float) -> None:
    bench.add(
        Row(
            "page",
            figure,
            f"{speed:,.0f}",
            f"{baseline:,.0f} (charrnn sample)",
            speed / baseline,
            numbers={"chars_per_s": speed, "sample_chars_per_s": baseline},
        )  # fmt: skip
    )


def measure(bench: Bench) -> None:
    """Rows: the page in Chromium and the ONNX graph, chars/s against charrnn sample's."""
    sizes = bench.pick(FULL, QUICK)
    folder = bench.scratch("page")
    page = folder / "shakespeare.html"
    export_command(Path(MODEL), page, "float16", "int8", "html")
    chromium = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    if chromium is None:
        raise RuntimeError("the page section needs chromium (apt-get install chromium)")
    best_page = best_torch = 0.0
    for _ in range(sizes.repeats):  # alternating, so both see the same load
        best_page = max(best_page, browser_speed(chromium, page, sizes.chars, folder / "profile"))
        best_torch = max(best_torch, torch_speed(Path(MODEL), sizes.chars))
    log(f"page: {best_page:,.0f} chars/s in Chromium, {best_torch:,.0f} in charrnn sample")
    add_row(bench, "web page in headless Chromium, 1 stream (chars/s)", best_page, best_torch)
    try:
        export_command(Path(MODEL), folder / "shakespeare.onnx", "float16", "int8", "onnx")
    except MissingExtraError as exc:  # the extra is optional: say so and go on
        log(f"page: no ONNX row ({exc})")
        return
    graph = folder / "shakespeare.onnx"
    best_onnx = max(onnx_speed(graph, sizes.chars) for _ in range(sizes.repeats))
    add_row(bench, "ONNX step graph, onnxruntime 1 thread (chars/s)", best_onnx, best_torch)
