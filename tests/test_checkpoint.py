"""Saving and loading checkpoints, atomically and safely (charrnn.model.checkpoint)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from charrnn.config import RunConfig
from charrnn.errors import CheckpointError, UsageError
from charrnn.model.checkpoint import (
    PLAIN_FORMAT_VERSION,
    Checkpoint,
    load_checkpoint,
    load_model,
    resolve_checkpoint_path,
    save_checkpoint,
)
from charrnn.model.network import CharRNN
from charrnn.text.corpus import Vocab

VOCAB = Vocab(tuple(ord(c) for c in "\n abc床🎉"))


def make_checkpoint(**model_keys) -> Checkpoint:
    config = RunConfig().replace(hidden=12, embed=6, layers=2, cell="gru", **model_keys)
    torch.manual_seed(0)
    model = CharRNN(config.model, VOCAB.size)
    return Checkpoint(
        config=config,
        vocab=VOCAB,
        model_state=model.state_dict(),
        progress={"step": 40, "best_val_loss": 1.25},
        resume={"hidden": torch.ones(2, 1, 12)},
        corpus={"sources": ["/data/a.txt"], "n_chars": 1000},
    )


def test_round_trip_keeps_config_vocab_weights_and_progress(tmp_path):
    original = make_checkpoint()
    path = tmp_path / "model.pt"
    save_checkpoint(original, path)
    loaded = load_checkpoint(path)
    assert loaded.config == original.config
    assert loaded.vocab == original.vocab
    assert loaded.model_state.keys() == original.model_state.keys()
    for name, tensor in original.model_state.items():
        assert torch.equal(loaded.model_state[name], tensor), name
    assert loaded.progress == original.progress
    assert loaded.corpus == original.corpus
    assert torch.equal(loaded.resume["hidden"], torch.ones(2, 1, 12))
    model, _ = load_model(path)
    ids = torch.tensor([[0, 3, 5, 6]])
    expected = CharRNN(original.config.model, VOCAB.size)
    expected.load_state_dict(original.model_state)
    with torch.no_grad():
        assert torch.equal(model(ids)[0], expected.eval()(ids)[0])
    assert not model.training


def test_save_leaves_no_temporary_files_and_replaces_the_old_file(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(make_checkpoint(), path)
    second = make_checkpoint()
    second.progress = {"step": 99}
    save_checkpoint(second, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    assert load_checkpoint(path).progress == {"step": 99}


def test_save_to_a_missing_directory_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot save"):
        save_checkpoint(make_checkpoint(), tmp_path / "missing" / "best.pt")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    payload = {"format": "charrnn-checkpoint", "format_version": 1, "x": _Exploit(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # The file really is an exploit: an unsafe load runs the command.
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())  # proves the file is dangerous
    assert marker.exists()


def _truncated(path: Path) -> None:
    save_checkpoint(make_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8 + os.urandom(512))


def _plain_dict(path: Path) -> None:
    torch.save({"a": 1}, path)


def _future_version(path: Path) -> None:
    payload = make_checkpoint().to_payload()
    payload["format_version"] = 999
    torch.save(payload, path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _missing_model(path: Path) -> None:
    payload = make_checkpoint().to_payload()
    del payload["model"]
    torch.save(payload, path)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_truncated, "not a readable checkpoint"),
        (_random_bytes, ""),
        (_plain_dict, "not a charrnn checkpoint"),
        (_future_version, "999"),
        (_empty, "not a readable checkpoint"),
        (_missing_model, "damaged"),
    ],
    ids=["truncated", "random-bytes", "plain-dict", "format-999", "empty", "no-weights"],
)
def test_unusable_files_raise_a_one_line_checkpoint_error(tmp_path, make, fragment):
    path = tmp_path / "broken.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert fragment in message
    assert str(path) in message
    assert "\n" not in message and len(message) < 400


def test_weights_that_do_not_fit_the_config_are_a_checkpoint_error(tmp_path):
    checkpoint = make_checkpoint()
    checkpoint.config = checkpoint.config.replace(hidden=13)
    path = tmp_path / "mismatch.pt"
    save_checkpoint(checkpoint, path)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)


def test_format_version_is_recorded(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(make_checkpoint(), path)
    payload = torch.load(path, weights_only=True)
    # Version 1 unless the file holds int8 weights (test_export), so older readers read it.
    assert payload["format_version"] == PLAIN_FORMAT_VERSION == 1
    assert payload["format"] == "charrnn-checkpoint"


def test_resolve_checkpoint_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint_path(run)
    save_checkpoint(make_checkpoint(), run / "last.pt")
    assert resolve_checkpoint_path(run) == run / "last.pt"
    save_checkpoint(make_checkpoint(), run / "best.pt")
    assert resolve_checkpoint_path(run) == run / "best.pt"
    assert resolve_checkpoint_path(run / "last.pt") == run / "last.pt"
    with pytest.raises(UsageError, match="not found"):
        resolve_checkpoint_path(tmp_path / "nowhere.pt")
    with pytest.raises(UsageError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
