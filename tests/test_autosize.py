"""`--auto`: the sizing rule against brute force, the probe, and what a run records."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from child import run_charrnn

from charrnn.commands import resume_command, train_command
from charrnn.config import ModelConfig, RunConfig
from charrnn.errors import TrainingError, UsageError
from charrnn.model.checkpoint import load_checkpoint
from charrnn.model.network import CharRNN, autocast_failure
from charrnn.system.device import cpu_bf16_support
from charrnn.text.corpus import Vocab
from charrnn.training.autosize import (
    BF16_MIN_WORK,
    CANDIDATE_SHAPES,
    CHARS_PER_PARAMETER,
    DATA_PARAMETER_RATIO,
    MIN_STEPS,
    Shape,
    SpeedProbe,
    batch_and_window,
    candidate_shapes,
    choose_run_precision,
    choose_shape,
    count_parameters,
    dropout_for,
    first_guess,
    learning_rate,
    precision_by_rule,
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


def test_bf16_is_chosen_by_the_cpus_instructions_and_the_shape_only():
    """The rule read from the measured table (benchmarks/RESULTS.md): bf16 only on a CPU with
    its own bf16 instructions, and only for shapes where it paid there."""
    lstm, gru = ModelConfig(cell="lstm", hidden=256), ModelConfig(cell="gru", hidden=256)
    assert precision_by_rule(lstm, 32, "AVX512-BF16")[0] == "bf16"
    assert precision_by_rule(lstm, 32, "AMX-BF16")[0] == "bf16"
    precision, reason = precision_by_rule(lstm, 32, None)  # AVX2, or AVX512 without BF16
    assert precision == "fp32" and reason == "this CPU has no bf16 instructions"
    assert precision_by_rule(gru, 32, "AVX512-BF16")[0] == "bf16"  # 1.20-1.32x measured quietly
    assert precision_by_rule(gru, 16, "AVX512-BF16")[0] == "fp32"  # 1 x 128 at 32: 0.96x
    assert precision_by_rule(ModelConfig(cell="rnn", hidden=128), 32, "AVX512-BF16")[0] == "fp32"
    small = ModelConfig(cell="lstm", hidden=16)
    precision, reason = precision_by_rule(small, 32, "AVX512-BF16")
    assert precision == "fp32" and "below the 2,048 where bf16 pays" in reason
    for cell, least in BF16_MIN_WORK.items():  # the boundary is the table's smallest win
        model = ModelConfig(cell=cell, hidden=least // 32)
        assert precision_by_rule(model, 32, "AVX512-BF16")[0] == "bf16"
        assert precision_by_rule(model, 31, "AVX512-BF16")[0] == "fp32"


@pytest.mark.parametrize(
    ("flags", "capability", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, "AVX512", "AVX512-BF16"),
        ({"avx512f", "amx_bf16", "avx512_bf16"}, "AVX512", "AMX-BF16"),
        ({"avx512f", "avx512_bf16"}, "AVX2", None),  # torch told not to use AVX512
        ({"avx512f"}, "AVX512", None),  # Zen 3, Skylake-X: no bf16 arithmetic
        ({"avx2"}, "AVX2", None),
        (set(), "DEFAULT", None),  # not an x86 Linux
    ],
)
def test_the_cpus_bf16_instructions_come_from_its_flags_and_torchs_dispatch(
    flags, capability, expected
):
    assert cpu_bf16_support(frozenset(flags), capability) == expected


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
    # On a CPU the rule chose the precision (for the 1 x 256 anchor at batch 32), and the run
    # trains in it; the notice says why.
    rule = auto["precision_rule"]
    assert saved["train"]["precision"] == auto["precision"] == rule["precision"]
    assert rule["bf16_instructions"] == cpu_bf16_support()
    assert f", {rule['precision']} ({rule['reason']})" in notices[0]
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


def test_precision_auto_on_a_cpu_follows_the_rule_and_says_why(tiny_config):
    config = tiny_config(precision="auto", hidden=256, batch_size=32, max_time=600.0)
    chosen, choice = choose_run_precision(config, bf16_support=lambda: None)
    assert chosen.train.precision == "fp32" and choice.precision == "fp32"
    assert choice.reason == "this CPU has no bf16 instructions"
    assert choice.notice() is None  # plain fp32: nothing to say at the start (config.json says)
    assert choice.to_dict()["bf16_instructions"] is None
    if bf16_failure() is None:  # this CPU can train an LSTM in bf16: the rule's answer stands
        chosen, choice = choose_run_precision(config, bf16_support=lambda: "AVX512-BF16")
        assert chosen.train.precision == "bf16"
        assert choice.to_dict()["reason"] == "AVX512-BF16 and a lstm 256 units x batch 32"
        assert choice.notice() == f"precision auto: bf16 ({choice.reason})"
    # A short run is judged as a long one (nothing is timed); a small model stays fp32.
    small = tiny_config(precision="auto")
    assert choose_run_precision(small, bf16_support=lambda: "AVX512-BF16")[0] == small.replace(
        precision="fp32"
    )
    # A fixed --precision is left alone.
    for given in ("fp32", "bf16"):
        fixed = config.replace(precision=given)
        assert choose_run_precision(fixed, bf16_support=lambda: "AVX512-BF16") == (fixed, None)


def test_train_precision_auto_records_the_rule_and_a_resume_keeps_it(
    tmp_path, write_corpus, tiny_config
):
    """The rule on this machine: the choice and why are written to config.json, and a resumed
    run trains in the precision recorded."""
    config = tiny_config(precision="auto", hidden=128, batch_size=16, max_steps=2, eval_every=2)
    train_command([write_corpus()], config, out=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text("utf-8"))
    rule = saved["precision_rule"]
    expected, reason = precision_by_rule(config.model, 16, cpu_bf16_support())
    if bf16_failure() is not None:
        expected = "fp32"
    assert saved["train"]["precision"] == rule["precision"] == expected
    assert rule["bf16_instructions"] == cpu_bf16_support() and rule["reason"]
    resume_command(tmp_path / "run", {"max_steps": 4})
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


def test_precision_auto_is_fp32_where_bf16_cannot_train_whatever_the_rule(tiny_config):
    """The real machine, with the rule told this CPU has bf16 instructions: where bf16 cannot
    train the LSTM here after all (no oneDNN kernel: one tiny step tried for real) the run is
    fp32 and says why."""
    config = tiny_config(precision="auto", hidden=256, batch_size=32)
    chosen, choice = choose_run_precision(config, bf16_support=lambda: "AVX512-BF16")
    failure = bf16_failure()
    if failure is None:
        assert chosen.train.precision == "bf16" and choice.bf16_failure is None
    else:
        assert chosen.train.precision == "fp32" and choice.to_dict()["bf16_failure"] == failure
        assert choice.notice() == (
            f"precision auto: fp32 (this CPU cannot train the lstm in bf16: {failure})"
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


def test_the_same_command_and_seed_train_the_same_run_beside_a_busy_core(
    tmp_path, write_corpus, tiny_config
):
    """`--precision auto` decides by rule, so a busy program during the first run cannot flip
    it: the two runs' weights and metrics are the same to the bit (a 1 x 256 at batch 32: bf16
    by the rule on a CPU with bf16 instructions, fp32 elsewhere)."""
    corpus = write_corpus()
    config = tiny_config(precision="auto", hidden=256, batch_size=32, max_steps=4, eval_every=2)
    spin = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])  # bounded: 60 s at most
    try:
        train_command([corpus], config, out=tmp_path / "busy")
    finally:
        busy.kill()
        busy.wait()
    train_command([corpus], config, out=tmp_path / "quiet")
    runs = [tmp_path / "busy", tmp_path / "quiet"]
    configs = [json.loads((run / "config.json").read_text("utf-8")) for run in runs]
    assert configs[0]["train"]["precision"] == configs[1]["train"]["precision"]
    assert configs[0]["precision_rule"] == configs[1]["precision_rule"]
    weights = [load_checkpoint(run / "last.pt").model_state for run in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    timing = {"elapsed_s", "chars_per_s", "eval_s", "threads"}

    def untimed(run):
        lines = (run / "metrics.jsonl").read_text("utf-8").splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    assert untimed(runs[0]) == untimed(runs[1])
