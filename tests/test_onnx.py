"""`charrnn export --format onnx`: onnxruntime computes PyTorch's logits, step by step and as
one window, and the docs' numpy + onnxruntime sampler runs on the exported file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import invoke

from charrnn.commands import train_command
from charrnn.model.checkpoint import load_model

NEEDS = "needs the onnx extra: pip install 'charrnn-cli[onnx]'"
ort = pytest.importorskip("onnxruntime", reason=NEEDS)
pytest.importorskip("onnx", reason=NEEDS)

WALK = 500
DOCS = Path(__file__).resolve().parent.parent / "docs" / "export.md"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repetitive_text) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "corpus.txt"
    path.write_text(repetitive_text(6000), "utf-8")
    return path


def exported(corpus: Path, tiny_config, cell: str, root: Path, *flags: str) -> tuple[Path, Path]:
    config = tiny_config(
        cell=cell, layers=2, hidden=32, embed=16, max_steps=30, eval_every=30, lr=0.02, seed=3
    )
    train_command([corpus], config, out=root / cell, cache_dir=corpus.parent / ".cache")
    out = root / f"{cell}.onnx"
    result = invoke(
        "export", "--checkpoint", root / cell, "--format", "onnx", "-o", out, *flags, "--json",
        cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "onnx" and report["output_bytes"] == out.stat().st_size
    return root / cell, out


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_onnxruntime_logits_equal_pytorch_over_a_500_character_walk(
    corpus, tiny_config, tmp_path, cell
):
    run, graph = exported(corpus, tiny_config, cell, tmp_path)
    model, checkpoint = load_model(run)
    ids = torch.as_tensor(checkpoint.vocab.encode(corpus.read_text("utf-8")[:WALK]))[None]
    with torch.inference_mode():
        expected, _ = model(ids)
    session = ort.InferenceSession(str(graph))
    names = [i.name for i in session.get_inputs()]
    zeros = np.zeros((2, 1, 32), np.float32)
    state = {name: zeros for name in names[1:]}
    steps = []
    for position in range(WALK):  # the step graph: one symbol and the state in, logits out
        logits, *after = session.run(
            None, {"ids": ids[:, position : position + 1].numpy(), **state}
        )
        state = dict(zip(names[1:], after, strict=True))
        steps.append(logits[0, 0])
    assert np.abs(np.stack(steps) - expected[0].numpy()).max() < 1e-4
    window, *_ = session.run(None, {"ids": ids.numpy(), **{n: zeros for n in names[1:]}})
    assert np.abs(window[0] - expected[0].numpy()).max() < 1e-4  # the whole window in one call


def test_the_docs_sampler_runs_on_numpy_and_onnxruntime_alone(corpus, tiny_config, tmp_path):
    _, graph = exported(corpus, tiny_config, "lstm", tmp_path, "--quantize", "int8")
    code = re.search(r"```python\n(.*?)```", DOCS.read_text("utf-8"), re.S).group(1)
    code = code.replace('"poet.onnx"', repr(str(graph))).replace('"ROMEO:\\n"', '"the "')
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("the ") and len(result.stdout) == 4 + 200 + 1  # and print's \n


def test_without_the_onnx_package_the_export_is_one_line(corpus, tiny_config, tmp_path):
    config = tiny_config(hidden=8, embed=4, max_steps=2, eval_every=2)
    train_command([corpus], config, out=tmp_path / "run", cache_dir=corpus.parent / ".cache")
    code = (
        "import sys; sys.modules['onnx'] = None; sys.argv = ['charrnn', 'export', "
        "'--checkpoint', 'run', '-o', 'm.onnx', '--format', 'onnx']; "
        "from charrnn.cli import main; main()"
    )  # onnx made unimportable, as where it is not installed
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 1 and not (tmp_path / "m.onnx").exists()
    assert result.stderr.strip().splitlines() == [
        "charrnn: error: export --format onnx needs the onnx package: "
        "pip install 'charrnn-cli[onnx]'"
    ]
