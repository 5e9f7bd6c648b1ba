"""The training loop through `train_command`: schedule, learning, files, determinism, limits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from charrnn.analysis.scoring import score_ids
from charrnn.commands import eval_command, train_command
from charrnn.config import MIN_EVAL_CHARS, RunConfig, evaluation_chars, resume_config
from charrnn.errors import UsageError
from charrnn.model.checkpoint import load_checkpoint, load_model
from charrnn.system.device import cgroup_cpu_limit, cpu_quota, use_cpu_threads
from charrnn.text.corpus import StreamBatches, split_train_val
from charrnn.training.plan import TrainHooks
from charrnn.training.trainer import lr_at, planned_steps

LOG_KEYS = {"step", "chars", "train_loss", "lr", "chars_per_s", "elapsed_s", "threads"}


def schedule(**keys) -> RunConfig:
    return RunConfig().replace(lr=1e-2, min_lr=1e-3, **keys).train


def metrics_of(run_dir) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


def test_warmup_rises_linearly_to_lr():
    config = schedule(warmup_steps=10)
    assert lr_at(0, 0.0, config) == pytest.approx(1e-3)
    assert lr_at(4, 0.0, config) == pytest.approx(5e-3)
    assert lr_at(9, 0.0, config) == pytest.approx(1e-2)  # warm at the end of warmup
    assert lr_at(500, 0.0, config) == pytest.approx(1e-2)


def test_cosine_runs_from_lr_to_min_lr():
    config = schedule(warmup_steps=0)
    assert lr_at(0, 0.0, config) == pytest.approx(1e-2)
    assert lr_at(50, 0.5, config) == pytest.approx((1e-2 + 1e-3) / 2)
    assert lr_at(100, 1.0, config) == pytest.approx(1e-3)
    assert lr_at(200, 1.7, config) == pytest.approx(1e-3)  # past the end it stays at min_lr
    rates = [lr_at(s, s / 20, config) for s in range(21)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_planned_steps_takes_the_tighter_limit():
    assert planned_steps(schedule(max_steps=30, max_epochs=None), 10) == 30
    assert planned_steps(schedule(max_steps=None, max_epochs=1.5), 10) == 15
    assert planned_steps(schedule(max_steps=12, max_epochs=1.5), 10) == 12
    assert planned_steps(schedule(max_steps=None, max_epochs=0.01), 10) == 1
    assert planned_steps(schedule(max_epochs=None, max_time=5.0), 10) is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    """One 60-step run on a repetitive corpus, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("trained")
    corpus = root / "verse.txt"
    corpus.write_text(("the quick brown fox jumps over the lazy dog.\n" * 100)[:4000], "utf-8")
    config = tiny_config(
        max_steps=60, eval_every=20, log_every=5, hidden=32, embed=16,
        batch_size=8, seq_len=32, lr=2e-2, min_lr=1e-3, eval_streams=3,
    )  # fmt: skip
    outcome = train_command([corpus], config, out=root / "run")
    return outcome


def test_training_lowers_val_loss_well_below_chance(trained):
    chance = math.log(trained.corpus.vocab.size)
    records = metrics_of(trained.run_dir)
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert records[0]["train_loss"] > 0.8 * chance  # it started near chance
    assert trained.progress.best_val_loss < 0.5 * chance
    assert val == sorted(val, reverse=True)
    assert trained.progress.step == 60
    assert trained.progress.chars_seen == 60 * 8 * 32


def test_run_directory_holds_checkpoints_config_and_metrics(trained):
    run = trained.run_dir
    names = {p.name for p in run.iterdir()}
    assert {"best.pt", "last.pt", "config.json", "metrics.jsonl"} <= names
    assert not [name for name in names if "tmp" in name]  # every write was atomic
    saved = json.loads((run / "config.json").read_text("utf-8"))
    assert RunConfig.from_dict(saved) == trained.config
    assert saved["corpus"]["n_chars"] == 4000
    last = load_checkpoint(run / "last.pt")
    assert last.progress["step"] == 60
    assert {"optimizer", "rng", "hidden"} <= set(last.resume)
    assert load_checkpoint(run).progress["best_val_loss"] == trained.progress.best_val_loss


def test_metrics_lines_carry_the_documented_keys(trained):
    records = metrics_of(trained.run_dir)
    assert [r["step"] for r in records] == list(range(5, 61, 5))
    for record in records:
        assert set(record) >= LOG_KEYS, record
        assert record["chars"] == record["step"] * 8 * 32
        assert ("val_loss" in record) == (record["step"] % 20 == 0)
        assert 1e-3 <= record["lr"] <= 2e-2
        assert record["chars_per_s"] > 0 and math.isfinite(record["train_loss"])


def test_best_checkpoint_scores_its_recorded_val_loss(trained):
    model, checkpoint = load_model(trained.run_dir / "best.pt")
    _, val_ids = split_train_val(np.asarray(trained.corpus.ids), checkpoint.config.data.val_frac)
    result = score_ids(model, val_ids, checkpoint.config.train.eval_streams)
    assert result.loss == checkpoint.progress["best_val_loss"]
    assert checkpoint.progress["best_val_loss"] == trained.progress.best_val_loss


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "last.pt").model_state


def test_same_seed_same_weights_different_seed_different_weights(
    write_corpus, tmp_path, tiny_config
):
    corpus = write_corpus()
    runs = {}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        config = tiny_config(seed=seed, max_steps=12, eval_every=6)
        runs[name] = weights(train_command([corpus], config, out=tmp_path / name).run_dir)
    for key in runs["a"]:
        assert torch.equal(runs["a"][key], runs["b"][key]), key
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_max_time_stops_the_run(write_corpus, tmp_path, tiny_config):
    config = tiny_config(max_steps=None, eval_every=10**6, log_every=10**6).replace(
        max_epochs=None, max_time=1.0
    )
    outcome = train_command([write_corpus()], config, out=tmp_path / "run")
    assert outcome.progress.elapsed >= 1.0
    assert outcome.progress.step >= 1
    assert load_checkpoint(tmp_path / "run" / "last.pt").progress["step"] == outcome.progress.step
    records = metrics_of(tmp_path / "run")
    assert records[-1]["step"] == outcome.progress.step and "val_loss" in records[-1]


@pytest.mark.parametrize("epochs", [0.5, 1.0, 1.5])
def test_max_epochs_limits_the_steps(write_corpus, tmp_path, tiny_config, repetitive_text, epochs):
    corpus = write_corpus(repetitive_text(1200))
    config = tiny_config(max_steps=None, max_epochs=epochs, eval_every=10**6, log_every=10**6)
    outcome = train_command([corpus], config, out=tmp_path / "run")
    train_ids, _ = split_train_val(np.asarray(outcome.corpus.ids), 0.1)
    steps_per_epoch = StreamBatches(train_ids, 4, 16).steps_per_epoch
    assert outcome.progress.step == math.ceil(epochs * steps_per_epoch)


def test_should_stop_saves_last_and_stops(write_corpus, tmp_path, tiny_config):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 4

    outcome = train_command(
        [write_corpus()],
        tiny_config(max_steps=1000),
        out=tmp_path / "run",
        hooks=TrainHooks(should_stop=should_stop),
    )
    assert 1 <= outcome.progress.step < 1000
    assert load_checkpoint(tmp_path / "run" / "last.pt").progress["step"] == outcome.progress.step


def test_too_small_a_corpus_shrinks_the_batch_with_a_warning(write_corpus, tmp_path, tiny_config):
    config = tiny_config(batch_size=64, seq_len=128, max_steps=3, eval_every=3)
    outcome = train_command([write_corpus("abcdefgh\n" * 30)], config, out=tmp_path / "run")
    assert len(outcome.warnings) == 1 and "batch_size" in outcome.warnings[0]
    fitted = outcome.config.train
    assert fitted.batch_size * fitted.seq_len <= 243 - 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text("utf-8"))
    assert saved["train"]["batch_size"] == fitted.batch_size
    assert saved["train"]["seq_len"] == fitted.seq_len


def test_a_run_directory_with_checkpoints_is_not_overwritten(write_corpus, tmp_path, tiny_config):
    corpus = write_corpus()
    config = tiny_config(max_steps=2, eval_every=2)
    train_command([corpus], config, out=tmp_path / "run")
    before = (tmp_path / "run" / "best.pt").read_bytes()
    with pytest.raises(UsageError, match="already holds checkpoints"):
        train_command([corpus], config, out=tmp_path / "run")
    assert (tmp_path / "run" / "best.pt").read_bytes() == before


def test_the_final_metrics_line_has_the_documented_keys(write_corpus, tmp_path, tiny_config):
    config = tiny_config(max_steps=7, eval_every=5, log_every=5)
    train_command([write_corpus()], config, out=tmp_path / "run")
    records = metrics_of(tmp_path / "run")
    assert records[-1]["step"] == 7 and "val_loss" in records[-1]
    for record in records:
        assert set(record) >= LOG_KEYS, record


def test_an_evaluation_after_the_last_logged_step_reports_no_speed(
    write_corpus, tmp_path, tiny_config
):
    # Step 10 is logged, then evaluated on its own line: no steps in that window, so no speed
    # (a 0 would read as a stall in a plot of chars_per_s).
    config = tiny_config(max_steps=10, eval_every=7, log_every=5)
    train_command([write_corpus()], config, out=tmp_path / "run")
    records = metrics_of(tmp_path / "run")
    assert [r["step"] for r in records] == [5, 7, 10, 10]
    assert records[-2]["chars_per_s"] > 0 and "val_loss" not in records[-2]
    assert records[-1]["chars_per_s"] is None and records[-1]["train_loss"] is None
    assert math.isfinite(records[-1]["val_loss"])


# ----------------------------------------------------------------------------- CPU threads


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None),
     ("", None), ("abc def", None), ("0 100000", None)],
)  # fmt: skip
def test_a_cgroup_quota_gives_whole_cpus(cpu_max, cpus):
    assert cgroup_cpu_limit(cpu_max) == cpus


def test_the_quota_is_read_from_cgroup_v2_then_v1(tmp_path):
    assert cpu_quota(tmp_path) is None  # no cgroup files: no limit
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(tmp_path) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cpu_quota(tmp_path) == 1


def test_threads_setting_sets_torch_threads_and_auto_never_raises_them():
    before = torch.get_num_threads()
    try:
        assert use_cpu_threads(2) == 2 and torch.get_num_threads() == 2
        assert use_cpu_threads(0) <= 2 and torch.get_num_threads() <= 2
        assert use_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_is_validated_saved_and_may_change_on_resume():
    with pytest.raises(UsageError, match="threads must be between 0 and 1024, got -1"):
        RunConfig().replace(threads=-1)
    saved = RunConfig().replace(threads=1)
    assert RunConfig.from_dict(saved.to_dict()).train.threads == 1
    assert resume_config(saved, {"threads": 2}).train.threads == 2


@pytest.mark.parametrize(
    ("eval_chars", "eval_every", "n_val", "expected"),
    [
        (0, 2000, 111_540, 111_540),  # tiny shakespeare: the whole split
        (0, 2000, 10_000_000, 2000 * 32 * 32 // 4),  # 100 MB: a quarter of a training interval
        (0, 10, 10_000_000, MIN_EVAL_CHARS),  # frequent evaluations still score enough text
        (5000, 2000, 10_000_000, 5000),  # as asked
        (10**9, 2000, 400, 400),  # never more than the split
    ],
)
def test_evaluation_chars_bounds_the_validation_prefix(eval_chars, eval_every, n_val, expected):
    config = RunConfig().replace(eval_chars=eval_chars, eval_every=eval_every).train
    assert evaluation_chars(config, n_val) == expected


def test_training_scores_a_recorded_prefix_and_eval_the_whole_split(
    write_corpus, tmp_path, tiny_config
):
    outcome = train_command([write_corpus()], tiny_config(eval_chars=100), out=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["eval_chars"] == 100
    evaluations = [r for r in metrics_of(tmp_path / "run") if "val_loss" in r]
    assert evaluations and all(r["val_chars"] == 100 and r["eval_s"] >= 0 for r in evaluations)
    model, checkpoint = load_model(tmp_path / "run" / "best.pt")
    _, val = split_train_val(outcome.corpus.ids, checkpoint.config.data.val_frac)
    prefix = score_ids(model, np.asarray(val[:100]), checkpoint.config.train.eval_streams)
    assert prefix.loss == pytest.approx(outcome.progress.best_val_loss, abs=1e-6)
    whole = eval_command(tmp_path / "run" / "best.pt", [])
    assert whole.chars == val.shape[0] - 1 and whole.loss != pytest.approx(prefix.loss, abs=1e-6)


def test_auto_evaluation_chars_are_resolved_and_recorded(write_corpus, tmp_path, tiny_config):
    train_command([write_corpus()], tiny_config(), out=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["eval_chars"] == saved["corpus"]["n_val"]  # small: the whole split
