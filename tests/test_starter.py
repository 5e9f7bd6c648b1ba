"""The starter model in the package: `--checkpoint shakespeare` works with no training and no
download, for every verb that reads a model and for `charrnn.load`; a real path of that name
wins."""

from __future__ import annotations

import json
import shutil

import torch
from test_cli import invoke

import charrnn
from charrnn.model.checkpoint import built_in_model, load_checkpoint

VERSE = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east.\n"


def test_the_starter_is_a_small_int8_file_that_loads_weights_only():
    path = built_in_model("shakespeare")
    assert path is not None and path.is_file()
    assert path.stat().st_size <= 1_500_000
    payload = torch.load(path, weights_only=True)
    assert payload["export"] == {"dtype": "float16", "quantize": "int8"}
    checkpoint = load_checkpoint(path)
    assert checkpoint.progress["best_val_loss"] < 1.5  # nats/char on tiny Shakespeare's split
    assert built_in_model("nonesuch") is None


def test_sample_info_eval_inspect_and_export_take_the_built_in_name(tmp_path):
    result = invoke(
        "sample", "--checkpoint", "shakespeare", "--prime", "ROMEO:", "--length", "80",
        "--seed", "1", "--threads", "1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout.rstrip("\n")) >= 80
    info = json.loads(invoke("info", "--checkpoint", "shakespeare", "--json", cwd=tmp_path).stdout)
    assert info["built_in"] is True and info["config"]["model"]["cell"] == "lstm"
    assert "built in" in invoke("info", "--checkpoint", "shakespeare", cwd=tmp_path).stdout
    (tmp_path / "verse.txt").write_text(VERSE, "utf-8")
    scored = invoke(
        "eval", "--checkpoint", "shakespeare", "verse.txt", "--json", "--threads", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["loss"] < 2.5  # it has read Shakespeare: far below ln 65
    inspected = invoke(
        "inspect", "--checkpoint", "shakespeare", "verse.txt", "--json", cwd=tmp_path
    )
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["chars"] == len(VERSE) - 1
    exported = invoke("export", "--checkpoint", "shakespeare", "-o", "copy.pt", cwd=tmp_path)
    assert exported.returncode == 0 and (tmp_path / "copy.pt").is_file()
    model = charrnn.load("shakespeare")
    assert model.info["built_in"] is True
    assert "".join(model.generate("ROMEO:", length=20, seed=1)).startswith("ROMEO:")
    assert not list(tmp_path.glob("shakespeare*"))  # nothing was written under that name


def test_a_real_path_named_shakespeare_wins(tmp_path):
    shutil.copy(built_in_model("shakespeare"), tmp_path / "copy.pt")
    (tmp_path / "shakespeare").mkdir()  # a run directory with no checkpoint yet
    result = invoke("info", "--checkpoint", "shakespeare", cwd=tmp_path)
    assert result.returncode == 1
    assert "run directory shakespeare has no checkpoint yet" in result.stderr
    (tmp_path / "shakespeare").rmdir()
    (tmp_path / "copy.pt").rename(tmp_path / "shakespeare")  # a file of that name
    info = json.loads(invoke("info", "--checkpoint", "shakespeare", "--json", cwd=tmp_path).stdout)
    assert info["built_in"] is False and info["parameters"] > 0


def test_an_export_of_an_export_keeps_its_storage_unless_told(tmp_path):
    """The built-in model is int8: exporting it as it is stays int8 (about its own size);
    `--quantize none` and `--dtype` say otherwise."""
    source = built_in_model("shakespeare").stat().st_size
    kept = invoke("export", "--checkpoint", "shakespeare", "-o", "kept.pt", "--json", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["quantize"] == "int8"
    assert (tmp_path / "kept.pt").stat().st_size < 1.1 * source
    assert load_checkpoint(tmp_path / "kept.pt").export["quantize"] == "int8"
    full = invoke(
        "export", "--checkpoint", "shakespeare", "-o", "full.pt", "--quantize", "none",
        "--dtype", "float32", cwd=tmp_path,
    )  # fmt: skip
    assert full.returncode == 0, full.stderr
    assert load_checkpoint(tmp_path / "full.pt").export == {"dtype": "float32", "quantize": None}
    assert (tmp_path / "full.pt").stat().st_size > 3 * source
