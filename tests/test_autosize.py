"""`--auto`: the sizing rule against brute force, the probe, and what a run records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from child import run_charrnn

from charrnn.commands import resume_command, train_command
from charrnn.config import ModelConfig, RunConfig
from charrnn.errors import TrainingError, UsageError
from charrnn.model.checkpoint import load_checkpoint
from charrnn.model.network import CharRNN, autocast_failure
from charrnn.text.corpus import Vocab
from charrnn.training.autosize import (
    BF16_GAIN,
    CANDIDATE_SHAPES,
    CHARS_PER_PARAMETER,
    DATA_PARAMETER_RATIO,
    MIN_STEPS,
    Shape,
    SpeedProbe,
    batch_and_window,
    candidate_shapes,
    choose_precision,
    choose_run_precision,
    choose_shape,
    count_parameters,
    dropout_for,
    first_guess,
    learning_rate,
    precision_shape,
)

VOCAB = 65
MODEL = ModelConfig()


def bf16_failure() -> str | None:
    """Why this CPU cannot train the default LSTM in bf16 (no AVX512: no oneDNN kernel), or
    None where it can."""
    return autocast_failure(MODEL, torch.bfloat16, torch.device("cpu"))


def shapes() -> list[Shape]:
    return candidate_shapes(MODEL, VOCAB, kept=())


def flops(shape: Shape) -> float:
    return float(shape.parameters)


def speed_of(work_per_s: float):
    """A machine on which a step costs in proportion to the parameters."""
    return lambda shape: work_per_s / shape.parameters


def brute_force(train_chars: int, seconds: float, work_per_s: float) -> Shape:
    """The largest shape that passes both caps, else the smallest: by checking every one."""
    passing = [
        s
        for s in shapes()
        if s.parameters <= DATA_PARAMETER_RATIO * train_chars
        and work_per_s / s.parameters * seconds >= CHARS_PER_PARAMETER * s.parameters
    ]
    return max(passing, key=lambda s: s.parameters) if passing else shapes()[0]


@pytest.mark.parametrize(
    ("train_chars", "seconds", "work_per_s"),
    [
        (1_000_000, 90, 40_000 * 350_000),  # tiny Shakespeare, 90 s: the time decides
        (1_000_000, 600, 40_000 * 350_000),
        (1_000_000, 36_000, 40_000 * 350_000),  # ten hours: the data decides
        (100_000_000, 36_000, 40_000 * 350_000),
        (1_000, 90, 40_000 * 350_000),  # a tiny corpus: the smallest shape
        (1_000_000, 1, 1e6),  # a very slow machine: the smallest shape
    ],
)
def test_the_rule_takes_the_largest_shape_that_passes_both_caps(train_chars, seconds, work_per_s):
    measured = []

    def speed(shape):
        measured.append(shape)
        return speed_of(work_per_s)(shape)

    chosen, limit, measurements = choose_shape(shapes(), train_chars, seconds, speed, flops)
    assert chosen == brute_force(train_chars, seconds, work_per_s)
    assert limit in {"time", "data", "largest"}
    # Only shapes up to the next one are trained; the rest are never probed.
    distinct = list(dict.fromkeys(measured))
    assert distinct == shapes()[: len(distinct)]
    assert len(distinct) <= shapes().index(chosen) + 2
    assert len(measured) <= len(distinct) + 2  # at most one second look, at the boundary
    assert measurements[-1].shape.parameters >= chosen.parameters


def test_longer_budgets_and_larger_corpora_never_choose_smaller_models():
    speed = speed_of(40_000 * 350_000)
    sizes = [
        choose_shape(shapes(), 10_000_000, seconds, speed, flops)[0].parameters
        for seconds in (30, 90, 600, 3600, 36_000)
    ]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    by_corpus = [
        choose_shape(shapes(), chars, 36_000, speed, flops)[0].parameters
        for chars in (10_000, 100_000, 1_000_000, 10_000_000)
    ]
    assert by_corpus == sorted(by_corpus) and by_corpus[0] < by_corpus[-1]


@pytest.mark.parametrize("seconds", [30, 90, 600, 3600])
def test_any_first_guess_finds_the_same_answer_and_a_good_one_measures_less(seconds):
    work_per_s, train_chars = 40_000 * 350_000, 1_000_000
    right = brute_force(train_chars, seconds, work_per_s)
    counts = {}
    measured: list[Shape] = []

    def speed(shape):
        measured.append(shape)
        return speed_of(work_per_s)(shape)

    for first in range(len(shapes())):
        measured.clear()
        chosen, _, _ = choose_shape(shapes(), train_chars, seconds, speed, flops, first)
        assert chosen == right, (first, chosen)
        counts[first] = len(measured)
    at_the_answer = counts[shapes().index(right)]
    assert at_the_answer <= min(counts.values()) + 1
    assert at_the_answer <= 4  # the answer, the shape above it, and a second look at both


def test_the_first_guess_extrapolates_from_the_measured_shape():
    anchor = shapes()[4]
    work_per_s = 40_000 * 350_000
    guess = first_guess(shapes(), anchor, speed_of(work_per_s)(anchor), 600, flops)
    # flops here is the parameter count, as speed_of assumes: the guess is exact.
    assert shapes()[guess] == brute_force(10**9, 600, work_per_s)
    assert first_guess(shapes(), anchor, 1e-6, 600, flops) == 0  # nothing passes


def test_bf16_is_chosen_on_a_cpu_only_when_the_probe_finds_it_faster():
    shape = precision_shape(shapes(), VOCAB)
    assert (shape.layers, shape.hidden) == (1, 256)  # the size of the `small` preset
    cpu = torch.device("cpu")

    def speeds(fp32, bf16):
        asked = []

        def speed(s, precision):
            asked.append((s, precision))
            return {"fp32": fp32, "bf16": bf16}[precision]

        return speed, asked

    speed, asked = speeds(40_000, 64_000)
    assert choose_precision(shape, cpu, "auto", (), speed) == (
        "bf16", {"fp32": 40_000, "bf16": 64_000},
    )  # fmt: skip
    assert asked == [(shape, "fp32"), (shape, "bf16")]  # clear at the first look
    speed, asked = speeds(40_000, 40_000 * BF16_GAIN * 0.99)  # not enough faster
    assert choose_precision(shape, cpu, "auto", (), speed)[0] == "fp32"
    assert len(asked) == 4  # not clear at the first look: a second
    speed, _ = speeds(40_000, 9_000)  # a CPU without native bf16
    assert choose_precision(shape, cpu, "auto", (), speed)[0] == "fp32"
    for device, given, kept in [
        (cpu, "fp32", {"precision"}),  # the user's --precision
        (torch.device("cuda"), "auto", ()),  # auto is bf16 there already
    ]:
        speed, asked = speeds(40_000, 64_000)
        assert choose_precision(shape, device, given, kept, speed) == (given, {})
        assert asked == []
    # A first look spoilt by a busy moment (bf16 measured slow), then the real speeds.
    answers = iter([40_000, 41_000, 39_000, 64_000])
    assert choose_precision(shape, cpu, "auto", (), lambda s, p: next(answers)) == (
        "bf16", {"fp32": 40_000, "bf16": 64_000},
    )  # fmt: skip
    answers = iter([40_000, None])  # the probe's time ran out: fp32
    assert choose_precision(shape, cpu, "auto", (), lambda s, p: next(answers)) == (
        "fp32", {"fp32": 40_000},
    )  # fmt: skip
    # Out of time in the second look: the first look's clear enough gain still counts.
    answers = iter([40_000, 48_000, None])
    assert choose_precision(shape, cpu, "auto", (), lambda s, p: next(answers)) == (
        "bf16", {"fp32": 40_000, "bf16": 48_000},
    )  # fmt: skip
    # A CPU that cannot train the cell in bf16 at all (no oneDNN bf16 LSTM without AVX512):
    # fp32 at once, nothing measured.
    speed, asked = speeds(40_000, 64_000)
    failure = "could not create a primitive descriptor"
    assert choose_precision(shape, cpu, "auto", (), speed, failure) == ("fp32", {})
    assert asked == []


def test_a_busy_moment_during_the_probe_is_looked_at_again():
    """The right answer measured once while another program was busy: just too slow to pass,
    then at its real speed. The second look at the boundary finds the right answer."""
    work_per_s, train_chars, seconds = 40_000 * 350_000, 1_000_000, 600
    right = brute_force(train_chars, seconds, work_per_s)
    busy = 0.9 * CHARS_PER_PARAMETER * right.parameters / seconds  # just fails the time cap
    assert busy < speed_of(work_per_s)(right)
    calls: list[Shape] = []

    def speed(shape, busy_every_time=False):
        calls.append(shape)
        if shape == right and (busy_every_time or calls.count(right) == 1):
            return busy
        return speed_of(work_per_s)(shape)

    chosen, _, measurements = choose_shape(shapes(), train_chars, seconds, speed, flops)
    assert chosen == right and calls.count(right) >= 2
    reported = {m.shape: m.chars_per_s for m in measurements}
    assert reported[right] == pytest.approx(speed_of(work_per_s)(right))  # the faster look
    # Busy at both looks: the smaller shape, as the rule says.
    always_busy = choose_shape(
        shapes(), train_chars, seconds, lambda s: speed(s, busy_every_time=True), flops
    )
    assert always_busy[0].parameters < right.parameters


def test_a_probe_out_of_time_keeps_the_best_shape_measured():
    answers = iter([1e6, 5e5, None])
    chosen, limit, measurements = choose_shape(
        shapes(), 10**9, 10**6, lambda shape: next(answers), flops
    )
    assert chosen == shapes()[1] and limit == "time" and len(measurements) == 2


def test_kept_layers_or_hidden_fix_that_part_of_the_shape():
    model = ModelConfig(layers=2, hidden=100)
    assert {s.layers for s in candidate_shapes(model, VOCAB, {"layers"})} == {2}
    assert {s.hidden for s in candidate_shapes(model, VOCAB, {"hidden"})} == {100}
    both = candidate_shapes(model, VOCAB, {"layers", "hidden"})
    assert [(s.layers, s.hidden) for s in both] == [(2, 100)]
    assert [s.parameters for s in shapes()] == sorted(s.parameters for s in shapes())
    assert len(shapes()) == len(CANDIDATE_SHAPES)


@pytest.mark.parametrize(
    ("cell", "layers", "hidden"), [("lstm", 1, 24), ("gru", 2, 16), ("rnn", 3, 8)]
)
def test_parameter_count_is_the_models(cell, layers, hidden):
    config = ModelConfig(cell=cell, layers=layers, hidden=hidden, embed=5)
    assert count_parameters(config, 11) == CharRNN(config, 11).num_parameters()


def test_window_then_batch_grow_only_while_the_run_keeps_its_steps():
    assert batch_and_window(1e6, (), 32, 32) == (32, 32)  # a short run: the tuned shape
    assert batch_and_window(1.5 * MIN_STEPS * 32 * 64, (), 32, 32) == (32, 64)
    assert batch_and_window(MIN_STEPS * 32 * 128 * 4, (), 32, 32) == (128, 128)
    assert batch_and_window(1e15, (), 32, 32) == (256, 128)
    assert batch_and_window(1e15, {"seq_len"}, 32, 16) == (256, 16)  # kept: as given
    assert batch_and_window(1e15, {"batch_size"}, 8, 32) == (8, 128)
    for chars in (1e5, 1e7, 1e9, 1e11):
        batch, window = batch_and_window(chars, (), 32, 32)
        assert (batch, window) == (32, 32) or chars / (batch * window) >= MIN_STEPS


def test_learning_rate_and_dropout_rules():
    assert learning_rate(256) == pytest.approx(6e-3)
    assert learning_rate(1024) == pytest.approx(3e-3)
    assert learning_rate(64) == pytest.approx(1e-2)  # capped
    assert dropout_for(700_000, 1_000_000, 20e6) == 0.3  # sees the text 20 times: memorises
    assert dropout_for(700_000, 1_000_000, 3e6) == 0.0  # three passes: not yet
    assert dropout_for(350_000, 1_000_000, 5.7e6) == 0.0  # 90 s in bf16: it would cost
    assert dropout_for(100_000, 10_000_000, 1e9) == 0.0  # too small to memorise


def test_the_probe_measures_the_real_training_step(tmp_path, tiny_config):
    ids = np.arange(4000, dtype=np.int64) % 20
    vocab = Vocab(tuple(range(97, 117)))
    probe = SpeedProbe(
        tiny_config(), vocab, ids, 4, 16, budget=2.0, device=torch.device("cpu"), run_dir=tmp_path
    )
    small, large = Shape(1, 8, 0), Shape(2, 64, 0)
    assert probe(small) > 0 and probe(large) > 0
    assert list(tmp_path.iterdir()) == []  # the probe writes nothing
    probe.deadline = 0.0
    assert probe(small) is None


def test_train_auto_records_its_choice_and_keeps_given_flags(tmp_path, repetitive_text):
    (tmp_path / "corpus.txt").write_text(repetitive_text(6000), "utf-8")
    result = run_charrnn(
        "train", "corpus.txt", "--auto", "--max-time", "4s", "--embed", "8", "--layers", "1",
        "--device", "cpu", "--threads", "1", "--out", "run", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if line.startswith("charrnn: auto: ")]
    assert len(notices) == 1, result.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text("utf-8"))
    auto = saved["auto"]
    assert saved["train"]["auto"] is True and auto["kept"] == ["layers"]
    assert saved["model"]["layers"] == 1 and saved["model"]["embed"] == 8
    assert (saved["model"]["hidden"], saved["train"]["batch_size"]) == (
        auto["hidden"],
        auto["batch_size"],
    )
    assert auto["hidden"] == 64  # the corpus is far too small for more: the smallest width
    assert f"1 x {auto['hidden']}" in notices[0]
    assert auto["probe"][0]["measured"] and auto["probe"][0]["chars_per_s"] > 0
    # On a CPU the probe compared fp32 and bf16 and the run trains in the one it chose; where
    # bf16 cannot train an LSTM at all, it is fp32 and the notice says why.
    if auto["bf16_failure"] is None:
        assert set(auto["precision_probe"]) == {"fp32", "bf16"}
        assert saved["train"]["precision"] == auto["precision"] in {"fp32", "bf16"}
        said = "bf16 (" if auto["precision"] == "bf16" else "fp32 (bf16 at "
    else:
        assert auto["precision_probe"] == {}
        assert saved["train"]["precision"] == auto["precision"] == "fp32"
        said = "fp32 (this CPU cannot train the model in bf16)"
    assert auto["bf16_failure"] == bf16_failure()
    assert said in notices[0]
    # Training got the budget less the probe.
    assert saved["train"]["max_time"] == pytest.approx(4.0 - auto["probe_s"], abs=1e-3)
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint.config == RunConfig.from_dict(saved)


def test_a_budget_too_short_for_the_probe_is_refused_before_training(
    tmp_path, tiny_config, write_corpus
):
    config = tiny_config(auto=True, max_time=2.0, max_steps=None)
    with pytest.raises(UsageError) as info:
        train_command([write_corpus()], config, out=tmp_path / "run")
    assert str(info.value) == (
        "--auto needs a --max-time of at least 3 s (its speed probe takes up to 1.5 s)"
    )
    assert not (tmp_path / "run" / "last.pt").exists()


def test_auto_from_a_config_file_keeps_that_files_keys_and_the_flags(
    tmp_path, write_corpus, monkeypatch
):
    from test_cli import invoke

    from charrnn import commands

    write_corpus()
    (tmp_path / "run.toml").write_text('auto = true\nmax_time = "1m"\nhidden = 48\n', "utf-8")
    seen = {}

    def train_command(corpus, config, **kwargs):
        seen.update(config=config, kept=kwargs["auto_kept"])
        raise UsageError("captured")

    monkeypatch.setattr(commands, "train_command", train_command)
    invoke("train", "corpus.txt", "--config", "run.toml", "--seq-len", "16", cwd=tmp_path)
    assert seen["config"].train.auto and seen["kept"] == {"hidden", "seq_len"}
    invoke("train", "corpus.txt", "--config", "run.toml", "--precision", "fp32", cwd=tmp_path)
    assert seen["kept"] == {"hidden", "precision"}
    invoke("train", "corpus.txt", "--max-time", "1m", "--lr", "0.01", cwd=tmp_path)
    assert not seen["config"].train.auto and seen["kept"] == set()  # no --auto: nothing kept


def test_precision_auto_keeps_fp32_where_the_probe_finds_bf16_slower(tmp_path, tiny_config):
    """A CPU without fast bf16 (the probe's answer stood in): the run stays fp32, as before."""
    ids = np.arange(4000, dtype=np.int64) % 20
    vocab = Vocab(tuple(range(97, 117)))
    config = tiny_config(precision="auto", max_steps=None, max_time=600.0)

    def slow_bf16(shape, precision):
        return {"fp32": 40_000.0, "bf16": 9_000.0}[precision]

    chosen, choice = choose_run_precision(config, vocab, ids, tmp_path, speed=slow_bf16)
    assert chosen.train.precision == "fp32"
    assert choice.to_dict()["bf16_ratio"] == pytest.approx(9 / 40, abs=1e-3)
    assert "fp32 (bf16 at 0.23x its speed here)" in choice.notice()
    # Where bf16 is clearly faster it is kept; just under the gain it is not.
    chosen, _ = choose_run_precision(config, vocab, ids, tmp_path, speed=lambda s, p: {
        "fp32": 40_000.0, "bf16": 64_000.0}[p])  # fmt: skip
    assert chosen.train.precision == "bf16"
    chosen, _ = choose_run_precision(config, vocab, ids, tmp_path, speed=lambda s, p: {
        "fp32": 40_000.0, "bf16": 40_000.0 * BF16_GAIN * 0.99}[p])  # fmt: skip
    assert chosen.train.precision == "fp32"
    # A fixed --precision is not probed; a run too short to pay for the probe is fp32.
    for given in ("fp32", "bf16"):
        fixed = config.replace(precision=given)
        assert choose_run_precision(fixed, vocab, ids, tmp_path, speed=slow_bf16) == (fixed, None)
    short = tiny_config(precision="auto")  # 20 steps
    chosen, choice = choose_run_precision(short, vocab, ids, tmp_path)
    assert chosen.train.precision == "fp32" and choice.speeds == {} and choice.notice() is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # ~1 minute on a busy 2-core machine: a run long enough to be probed
def test_train_precision_auto_probes_records_and_a_resume_keeps_it(tmp_path):
    """The real probe on this machine: the choice follows the measured ratio, is written to
    config.json and the start line, and a resumed run trains in the precision recorded."""
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh \n"), size=300_000))
    (tmp_path / "corpus.txt").write_text(text, "utf-8")
    common = ("--device", "cpu", "--threads", "1", "--quiet", "--eval-every", "100")
    result = run_charrnn(
        "train", "corpus.txt", "--hidden", "16", "--embed", "8", "--batch-size", "64",
        "--seq-len", "32", "--max-steps", "1000", "--max-time", "30s", "--out", "run",
        *common, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text("utf-8"))
    probe = saved["precision_probe"]
    if bf16_failure() is None:
        assert probe["probed"] and set(probe["chars_per_s"]) == {"fp32", "bf16"}
        expected = "bf16" if probe["bf16_ratio"] >= BF16_GAIN else "fp32"
    else:  # nothing to measure: bf16 cannot train the LSTM on this CPU
        assert not probe["probed"] and probe["bf16_failure"] == bf16_failure()
        expected = "fp32"
    assert saved["train"]["precision"] == probe["precision"] == expected
    assert f"charrnn: precision auto: {expected} (" in result.stderr
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint.config.train.precision == expected
    result = run_charrnn("train", "--resume", "run", "--max-steps", "1010", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "precision auto" not in result.stderr  # not probed again
    assert load_checkpoint(tmp_path / "run" / "last.pt").config.train.precision == expected


@pytest.mark.parametrize(
    ("flags", "sized"),
    [
        (["--max-time", "3m"], True),  # a long budget and no model given: --auto sizes it
        (["--max-time", "10m", "--precision", "fp32"], True),  # the precision is kept
        (["--max-time", "10m", "--max-steps", "50"], True),
        (["--max-time", "2m"], False),  # shorter: --auto would pick the default's own 1 x 256
        (["--max-time", "10m", "--no-auto"], False),
        (["--max-time", "10m", "--hidden", "128"], False),
        (["--max-time", "10m", "--lr", "0.01"], False),
        (["--max-time", "10m", "--preset", "small"], False),
        ([], False),
    ],
)
def test_a_long_budget_without_a_model_is_sized_by_auto(
    flags, sized, tmp_path, write_corpus, monkeypatch
):
    from test_cli import invoke

    from charrnn import commands

    write_corpus()
    seen = {}

    def train_command(corpus, config, **kwargs):
        seen.update(config=config, reason=kwargs["auto_reason"])
        raise UsageError("captured")

    monkeypatch.setattr(commands, "train_command", train_command)
    invoke("train", "corpus.txt", *flags, cwd=tmp_path)
    assert seen["config"].train.auto is sized
    assert (seen["reason"] is not None) is sized
    if sized:
        assert "--no-auto keeps the default model" in seen["reason"]
        # Under torchrun each rank would probe apart: the default model is kept there.
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "0")
        invoke("train", "corpus.txt", *flags, cwd=tmp_path)
        assert not seen["config"].train.auto and seen["reason"] is None


def test_auto_is_refused_under_torchrun(tmp_path, tiny_config, write_corpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    config = tiny_config(auto=True, max_time=60.0, max_steps=None)
    with pytest.raises(UsageError) as info:
        train_command([write_corpus()], config, out=tmp_path / "run")
    assert str(info.value) == "--auto measures one process's speed: start it without torchrun"
    assert not (tmp_path / "run").exists()


def test_precision_auto_is_fp32_at_once_where_bf16_cannot_train(tmp_path, tiny_config):
    """The real machine, no probe stood in: where bf16 cannot train the LSTM (no AVX512) the
    run is fp32 before anything is timed, and says why; elsewhere the probe measures both."""
    ids = np.arange(300_000, dtype=np.int64) % 20  # ten passes: long enough to be probed
    vocab = Vocab(tuple(range(97, 117)))
    config = tiny_config(precision="auto", max_steps=None, max_time=600.0, threads=1)
    chosen, choice = choose_run_precision(config, vocab, ids, tmp_path)
    failure = bf16_failure()
    if failure is None:
        assert set(choice.speeds) == {"fp32", "bf16"} and choice.bf16_failure is None
    else:
        assert chosen.train.precision == "fp32" and choice.speeds == {}
        assert choice.probe_seconds == 0.0 and choice.to_dict()["bf16_failure"] == failure
        assert choice.notice() == (
            f"precision auto: fp32 (this CPU cannot train the model in bf16: {failure})"
        )


def refused_precision() -> tuple[str, str]:
    """A --precision this CPU cannot train the LSTM in, and why: bf16 without AVX512; fp16
    without AVX512-FP16 (a Zen 4 has bf16 but not fp16)."""
    cpu = torch.device("cpu")
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        failure = autocast_failure(MODEL, dtype, cpu)
        if failure is not None:
            return precision, failure
    pytest.skip("this CPU trains the LSTM in both bf16 and fp16")


def test_a_precision_the_cpu_cannot_train_in_is_one_line_and_no_run(
    tmp_path, repetitive_text, tiny_config
):
    """Asked for by hand, on a new run or a resume (a run started on another machine), a
    precision this CPU has no LSTM kernel for is refused in one line before anything is
    written; the resume can go on in fp32."""
    precision, failure = refused_precision()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(repetitive_text(3000), "utf-8")
    result = run_charrnn(
        "train", "corpus.txt", "--hidden", "16", "--max-steps", "4", "--precision", precision,
        "--device", "cpu", "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"charrnn: error: --precision {precision}: this CPU cannot train the lstm in "
        f"{precision} ({failure}); use --precision fp32 or auto"
    )
    assert not (tmp_path / "run").exists()
    # A run recorded in that precision (as one started on a machine that has the kernel).
    train_command([corpus], tiny_config(max_steps=4, eval_every=4), out=tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    payload = torch.load(last, weights_only=True)
    payload["config"]["train"]["precision"] = precision
    torch.save(payload, last)
    before = last.read_bytes()
    with pytest.raises(TrainingError) as refused:
        resume_command(tmp_path / "run", {"max_steps": 8})
    assert str(refused.value) == (
        f"this run trains in {precision}, but this CPU cannot train the lstm in {precision} "
        f"({failure}); go on in fp32 with --precision fp32"
    )
    assert refused.value.exit_code == 1
    assert last.read_bytes() == before  # nothing lost
    resumed = resume_command(tmp_path / "run", {"max_steps": 8, "precision": "fp32"})
    assert resumed.progress.step == 8
    assert load_checkpoint(last).config.train.precision == "fp32"
