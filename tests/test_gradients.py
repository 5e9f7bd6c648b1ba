"""The gradient norm and clip share of every metrics line, counted again by hand, and the
warning a gradient explosion prints."""

from __future__ import annotations

import importlib.util
import io
import math
import statistics
from pathlib import Path

import pytest
import torch
from test_robustness import metrics

from charrnn.analysis.run_history import read_run
from charrnn.commands import distill_command, resume_command, train_command
from charrnn.config import DistillConfig
from charrnn.console import ProgressBar
from charrnn.errors import TrainingError
from charrnn.training.plan import TrainHooks
from charrnn.training.trainer import (
    EARLY_JUMP_FACTOR,
    JUMP_FACTOR,
    JUMP_MIN_HISTORY,
    NORMS_KEPT_APART,
    GradientWatch,
)

GRAD_FIELDS = ("grad_norm", "grad_norm_max", "clip_share")


def _total_norm(parameters: list[torch.Tensor]) -> float:
    """The 2-norm of all the gradients together, in float64."""
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in parameters))


@pytest.fixture
def hand_norms(monkeypatch) -> list[tuple[float, float]]:
    """Every training step's gradient norm, computed by hand just before the trainer clips
    and again just after: (before, after), in the order of the steps."""
    clip = torch.nn.utils.clip_grad_norm_
    seen: list[tuple[float, float]] = []

    def measured(parameters, max_norm, *args, **kwargs):
        parameters = [p for p in parameters if p.grad is not None]
        before = _total_norm(parameters)
        norm = clip(parameters, max_norm, *args, **kwargs)
        seen.append((before, _total_norm(parameters)))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", measured)
    return seen


def _windows(run_dir: Path, norms: list[float]) -> list[tuple[dict, list[float]]]:
    """Each metrics line with the hand-measured norms of the steps it reports."""
    pairs, start = [], 0
    for record in metrics(run_dir):
        pairs.append((record, norms[start : record["step"]]))
        start = record["step"]
    assert start == len(norms)  # every step was measured and reported once
    return pairs


def _assert_lines_match(run_dir: Path, norms: list[float], clip: float) -> float:
    """Every metrics line's fields equal the hand count; returns the run's clipped share."""
    windows = _windows(run_dir, norms)
    for record, hand in windows:
        if not hand:  # a line that only reports a final evaluation
            assert all(record[field] is None for field in GRAD_FIELDS)
            continue
        assert record["grad_norm"] == pytest.approx(statistics.fmean(hand), rel=1e-5)
        assert record["grad_norm_max"] == pytest.approx(max(hand), rel=1e-5)
        clipped = sum(clip > 0 and norm > clip for norm in hand)
        assert record["clip_share"] == clipped / len(hand)
    return sum(clip > 0 and norm > clip for norm in norms) / len(norms)


def test_with_a_tiny_clip_every_step_clips_and_each_line_matches_a_hand_count(
    write_corpus, tmp_path, tiny_config, hand_norms
):
    config = tiny_config(grad_clip=1e-6, max_steps=20, log_every=5, eval_every=10)
    train_command([write_corpus()], config, out=tmp_path / "run")
    assert len(hand_norms) == 20
    before = [b for b, _ in hand_norms]
    assert _assert_lines_match(tmp_path / "run", before, 1e-6) == 1.0
    assert all(r["clip_share"] == 1.0 for r in metrics(tmp_path / "run"))
    assert all(after == pytest.approx(1e-6, rel=1e-3) for _, after in hand_norms)  # it acted


def test_a_moderate_clip_acts_on_the_steps_over_it_and_the_share_counts_them(
    write_corpus, tmp_path, tiny_config, hand_norms
):
    corpus = write_corpus()
    train_command([corpus], tiny_config(grad_clip=0.0, lr=0.02), out=tmp_path / "free")
    free = [b for b, _ in hand_norms]
    assert _assert_lines_match(tmp_path / "free", free, 0.0) == 0.0  # off: nothing clipped
    assert all(after == before for before, after in hand_norms)

    clip = statistics.median(free)  # about half the steps of a similar run go over it
    hand_norms.clear()
    train_command([corpus], tiny_config(grad_clip=clip, lr=0.02), out=tmp_path / "clipped")
    before = [b for b, _ in hand_norms]
    share = _assert_lines_match(tmp_path / "clipped", before, clip)
    assert 0.0 < share < 1.0
    shares = [r["clip_share"] for r in metrics(tmp_path / "clipped") if r["clip_share"] is not None]
    assert len(set(shares)) > 1  # the lines differ: each counts its own steps
    for b, after in hand_norms:  # clipping acted exactly on the steps counted
        assert after == pytest.approx(min(b, clip), rel=1e-4)


def test_a_long_log_window_reports_every_step_in_it(
    write_corpus, tmp_path, tiny_config, hand_norms
):
    steps = NORMS_KEPT_APART + 44  # past the count where the window joins its norms
    config = tiny_config(max_steps=steps, log_every=steps, eval_every=steps, grad_clip=0.3)
    train_command([write_corpus()], config, out=tmp_path / "run")
    before = [b for b, _ in hand_norms]
    assert [r["step"] for r in metrics(tmp_path / "run")] == [steps]
    assert 0.0 < _assert_lines_match(tmp_path / "run", before, 0.3) < 1.0


def test_every_kind_of_run_logs_the_gradient_norm_and_clip_share(
    write_corpus, tmp_path, tiny_config
):
    corpus = write_corpus()
    config = tiny_config(max_steps=10, log_every=5)
    train_command([corpus], config, out=tmp_path / "new")
    resume_command(tmp_path / "new", {"max_steps": 20})
    train_command([corpus], config, out=tmp_path / "init", init_from=tmp_path / "new")
    student = tiny_config(hidden=8, embed=4, max_steps=10, log_every=5)
    distill_command([corpus], tmp_path / "new", student, DistillConfig(), out=tmp_path / "d")
    for run, steps in (("new", [5, 10, 15, 20]), ("init", [5, 10]), ("d", [5, 10])):
        records = metrics(tmp_path / run)
        assert [r["step"] for r in records] == steps, run
        for record in records:
            assert record["grad_norm"] > 0 and math.isfinite(record["grad_norm"]), run
            assert record["grad_norm_max"] >= record["grad_norm"], run
            assert 0.0 <= record["clip_share"] <= 1.0, run
            assert "event" not in record, run


def test_a_huge_learning_rate_without_clipping_is_reported_with_its_step_and_norm(
    write_corpus, tmp_path, tiny_config, hand_norms
):
    stream = io.StringIO()
    config = tiny_config(
        cell="rnn", nonlinearity="relu", lr=0.3, grad_clip=0.0, max_steps=10, log_every=5
    )
    train_command(
        [write_corpus()],
        config,
        out=tmp_path / "run",
        hooks=TrainHooks(reporter=ProgressBar(file=stream)),
    )
    norms = [b for b, _ in hand_norms]
    events = [r["event"] for r in metrics(tmp_path / "run") if "event" in r]
    assert events, norms
    event = events[0]
    step = event["step"]
    assert event["kind"] == "gradient_jump"
    assert event["grad_norm"] == pytest.approx(norms[step], rel=1e-5)
    assert norms[step] > EARLY_JUMP_FACTOR * statistics.median(norms[:step])  # a real blow-up
    warnings = [line for line in stream.getvalue().splitlines() if "warning" in line]
    assert warnings[0] == f"charrnn: warning: {event['message']}"
    assert f"at step {step:,}," in warnings[0] and f"{norms[step]:.4g}" in warnings[0]
    assert "--grad-clip 1 (now off)" in warnings[0] and "a lower --lr (now 0.3)" in warnings[0]
    _assert_plot_marks_the_explosion(tmp_path / "run", len(events))


def _assert_plot_marks_the_explosion(run_dir: Path, count: int) -> None:
    """`charrnn plot` draws a red line through the loss and the gradient panels per event."""
    if importlib.util.find_spec("matplotlib") is None:
        return
    from charrnn.analysis.plot import draw_curves, import_pyplot

    figure = draw_curves([read_run(run_dir)], 900, 600)
    try:
        marks = [
            line for axes in figure.axes for line in axes.get_lines()
            if line.get_color() == "red"
        ]  # fmt: skip
        assert len(marks) == 4 * count  # two loss panels, two gradient panels
    finally:
        import_pyplot().close(figure)


def test_non_finite_gradients_are_reported_then_stop_the_run_naming_step_and_norm(
    write_corpus, tmp_path, tiny_config
):
    stream = io.StringIO()
    config = tiny_config(
        cell="rnn", nonlinearity="relu", lr=3.0, grad_clip=0.0, max_steps=20, log_every=5
    )
    hooks = TrainHooks(reporter=ProgressBar(file=stream))
    with pytest.raises(TrainingError) as info:
        train_command([write_corpus()], config, out=tmp_path / "run", hooks=hooks)
    message = str(info.value)
    assert "5 steps in a row at step 5 (gradient norm inf)" in message
    assert "--grad-clip 1 (now off)" in message and "a lower --lr (now 3)" in message
    (record,) = metrics(tmp_path / "run")  # steps 0 to 4; the fifth bad step stopped the run
    assert record["event"]["kind"] == "gradient_nonfinite" and record["event"]["step"] == 1
    assert record["event"]["grad_norm"] is None and record["event"]["steps"] == 4
    assert "charrnn: warning: gradient norm was inf at step 1 and the step was skipped" in (
        stream.getvalue()
    )


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_healthy_run_raises_no_alarm(write_corpus, tmp_path, tiny_config, cell):
    # 300 steps at a brisk learning rate: the norms wander 5x around their median and
    # fall as the verse is learnt by heart, which is no explosion.
    config = tiny_config(cell=cell, lr=0.02, max_steps=300, log_every=50, eval_every=300)
    train_command([write_corpus()], config, out=tmp_path / "run")
    records = metrics(tmp_path / "run")
    assert len(records) == 6 and not [r["event"] for r in records if "event" in r]


def _watch(tiny_config, warmup: int = 0, scaled: bool = False) -> GradientWatch:
    return GradientWatch(tiny_config(warmup_steps=warmup).train, None, scaled)


def test_a_jump_is_called_against_the_recent_median_and_only_a_blow_up_early(tiny_config):
    steady = [1.0, 1.2, 0.8] * 30
    watch = _watch(tiny_config)
    assert "event" not in watch.summarize(0, steady)
    line = watch.summarize(90, [1.1, 0.9 * JUMP_FACTOR, 1.1 * JUMP_FACTOR, 1.0])
    assert line["event"]["step"] == 92 and line["event"]["grad_norm"] == 1.1 * JUMP_FACTOR
    assert line["event"]["steps"] == 1 and line["grad_norm_max"] == 1.1 * JUMP_FACTOR
    # The first steps (fewer than JUMP_MIN_HISTORY known) and warmup take a blow-up.
    early = [1.0] * (JUMP_MIN_HISTORY - 5) + [0.5 * EARLY_JUMP_FACTOR]
    assert "event" not in _watch(tiny_config).summarize(0, early)
    assert _watch(tiny_config).summarize(0, [1.0, 2 * EARLY_JUMP_FACTOR])["event"]["step"] == 1
    in_warmup = _watch(tiny_config, warmup=100)
    assert "event" not in in_warmup.summarize(0, steady + [2 * JUMP_FACTOR])
    assert in_warmup.summarize(91, [1.0] * 9 + [2 * JUMP_FACTOR])["event"]["step"] == 100


def test_a_scalers_overflow_is_not_an_explosion_but_a_plain_runs_is(tiny_config):
    norms = [1.0, math.inf, 1.0]
    assert "event" not in _watch(tiny_config, scaled=True).summarize(0, norms)
    line = _watch(tiny_config).summarize(0, norms)
    assert line["event"]["kind"] == "gradient_nonfinite" and line["event"]["step"] == 1
    assert line["grad_norm"] == 1.0 and line["clip_share"] == 0.0  # of the two steps taken
