"""End to end: the real `charrnn` command line, as a user runs it.

Each `python -m charrnn` costs a couple of seconds (importing torch), so the subprocess tests are
few; more error cases run in-process through Typer's runner, which drives the same app.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from child import CHILD_ENV, run_charrnn
from test_config import OTHER_SAMPLE_VALUES, OTHER_VALUES, flat
from typer.testing import CliRunner

from charrnn import commands
from charrnn.cli import app
from charrnn.config import (
    DEFAULT_CACHE_DIR,
    Cell,
    DataConfig,
    ExportDtype,
    ModelConfig,
    Quantize,
    RunConfig,
    SampleConfig,
    TrainConfig,
    declared_settings,
)
from charrnn.errors import UsageError
from charrnn.model.checkpoint import load_checkpoint

PRIME = "the "
TRAIN_FLAGS = [
    "--hidden", "32", "--embed", "16", "--batch-size", "8", "--seq-len", "32",
    "--max-steps", "30", "--eval-every", "10", "--lr", "0.02", "--warmup-steps", "0",
    "--device", "cpu", "--seed", "1", "--quiet",
]  # fmt: skip


def charrnn(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_charrnn(*args, cwd=cwd)


def assert_one_error_line(result, exit_code: int) -> str:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("charrnn: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory, repetitive_text) -> Path:
    """A run trained by `charrnn train` on a ~5 KB corpus."""
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus.txt").write_text(repetitive_text(5000), "utf-8")
    result = charrnn("train", "corpus.txt", "--out", "run", *TRAIN_FLAGS, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return root / "run"


def test_train_writes_the_run_directory(run):
    for name in ["best.pt", "last.pt", "config.json", "metrics.jsonl"]:
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text("utf-8"))
    assert config["model"]["hidden"] == 32 and config["train"]["max_steps"] == 30
    assert load_checkpoint(run / "last.pt").progress["step"] == 30


def test_sample_starts_with_the_prime_and_repeats_with_a_seed(run):
    args = ["sample", "--checkpoint", run, "--prime", PRIME, "--length", "50", "--seed", "3"]
    first = charrnn(*args, cwd=run.parent)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(PRIME)
    assert first.stdout.endswith("\n")
    assert len(first.stdout) == len(PRIME) + 50 + 1
    second = charrnn(*args, cwd=run.parent)
    assert second.stdout == first.stdout


def test_eval_json_agrees_with_training_evaluation(run):
    result = charrnn("eval", "--checkpoint", run, "--json", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert set(scores) == {
        "loss", "bpc", "perplexity", "chars", "unknown_chars", "unknown_symbol_chars",
        "accuracy", "top5_accuracy", "macro_precision", "macro_recall", "macro_f1",
    }  # fmt: skip
    assert scores["bpc"] == pytest.approx(scores["loss"] / math.log(2), rel=1e-12)
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-12)
    best = load_checkpoint(run / "best.pt")
    assert scores["chars"] == best.corpus["n_val"] - 1
    assert scores["unknown_chars"] == 0
    # The number training recorded for best.pt is the number `eval` reports for it.
    assert scores["loss"] == pytest.approx(best.progress["best_val_loss"], rel=1e-9)


def test_info_json_describes_the_checkpoint(run):
    result = charrnn("info", "--checkpoint", run / "best.pt", "--json", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    details = json.loads(result.stdout)
    best = load_checkpoint(run / "best.pt")
    assert details["vocab_size"] == best.vocab.size
    assert details["best_val_loss"] == best.progress["best_val_loss"]
    assert details["step"] == best.progress["step"]
    assert details["config"]["model"]["hidden"] == 32
    assert details["parameters"] == sum(t.numel() for t in best.model_state.values())


@pytest.fixture
def corrupt_checkpoint(tmp_path) -> Path:
    path = tmp_path / "corrupt.pt"
    torch.save({"format": "charrnn-checkpoint"}, path)
    path.write_bytes(path.read_bytes()[:40])
    return path


@pytest.mark.parametrize(
    ("case", "exit_code", "fragment"),
    [
        ("missing-corpus", 2, "not found"),
        ("temperature-0", 2, "temperature"),
        ("missing-checkpoint", 2, "not found"),
        ("invalid-utf8", 1, "at byte 3"),
        ("corrupt-checkpoint", 1, "corrupt.pt"),
    ],
)
def test_errors_print_one_line_and_exit_with_the_right_code(
    tmp_path, corrupt_checkpoint, case, exit_code, fragment
):
    (tmp_path / "bad.txt").write_bytes(b"abc\xffdef" * 100)
    args = {
        "missing-corpus": ["train", "nope.txt", "--quiet"],
        "temperature-0": ["sample", "--checkpoint", corrupt_checkpoint, "--temperature", "0"],
        "missing-checkpoint": ["sample", "--checkpoint", "missing.pt"],
        "invalid-utf8": ["train", "bad.txt", "--quiet", "--device", "cpu"],
        "corrupt-checkpoint": ["sample", "--checkpoint", corrupt_checkpoint],
    }[case]
    line = assert_one_error_line(charrnn(*args, cwd=tmp_path), exit_code)
    assert fragment in line


LOAD_CHECK = """
import sys
from charrnn.cli import main
sys.argv = ["charrnn", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    loaded = ["torch" in sys.modules, "charrnn.training.trainer" in sys.modules]
    print("exit", exit.code, *loaded, file=sys.stderr)
"""


def run_load_check(*args: str | Path, cwd: Path) -> tuple[str, str]:
    """Run `charrnn ARGS` in a child: its stdout, and its last stderr line, which reads
    `exit CODE TORCH_LOADED TRAIN_LOADED` (whether torch and the training loop were imported)."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_CHECK, *map(str, args)],
        cwd=cwd, env=CHILD_ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result.stdout, result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["--help"], 0),
        (["train", "corpus.txt", "--hidden", "abc"], 2),
        (["sample"], 2),
        (["prepare", "corpus.txt", "--cache-dir", "cache", "--json"], 0),
    ],
    ids=["help", "bad-option", "missing-option", "prepare"],
)
def test_help_option_errors_and_prepare_start_without_loading_torch(
    tmp_path, repetitive_text, args, exit_code
):
    # torch is about 1.5 s of start-up; these answer without it (prepare needs only numpy).
    (tmp_path / "corpus.txt").write_text(repetitive_text(2000), "utf-8")
    stdout, loaded = run_load_check(*args, cwd=tmp_path)
    assert loaded == f"exit {exit_code} False False"
    if args[0] == "prepare":
        assert json.loads(stdout)["chars"] == 2000


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--checkpoint", "run", "--length", "5"],
        ["eval", "--checkpoint", "run"],
        ["info", "--checkpoint", "run/best.pt"],
        ["train", "corpus.txt", "--max-steps", "1", "--hidden", "8", "--device", "cpu", "-q"],
    ],
    ids=["sample", "eval", "info", "train"],
)
def test_only_train_imports_the_training_loop(run, tmp_path, args):
    # The training loop is train's alone; the train row shows the check sees it when loaded.
    if args[0] == "train":
        args = [*args, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache"]
    stdout, loaded = run_load_check(*args, cwd=run.parent)
    assert loaded == f"exit 0 True {args[0] == 'train'}", stdout


# ----------------------------------------------------------------------------- in-process


class _Result:
    """The parts of a Typer runner result that `assert_one_error_line` reads."""

    def __init__(self, result) -> None:
        self.returncode, self.stderr = result.exit_code, result.stderr
        self.stdout = result.stdout
        self.exception = result.exception


def invoke(*args: str | Path, cwd: Path) -> _Result:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return _Result(result)


def test_no_command_prints_the_help(tmp_path):
    result = invoke(cwd=tmp_path)
    assert result.returncode == 2
    assert "Commands:" in result.stdout and "train" in result.stdout and "sample" in result.stdout


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--hidden", "0"], "hidden"),
        (["--cell", "transformer"], "unknown cell 'transformer'"),
        (["--dropout", "1"], "dropout"),
        (["--max-time", "soon"], "duration"),
        (["--preset", "huge"], "unknown preset"),
    ],
)
def test_bad_training_settings_are_usage_errors(write_corpus, tmp_path, flags, fragment):
    write_corpus()
    result = invoke("train", "corpus.txt", "--quiet", *flags, cwd=tmp_path)
    assert fragment in assert_one_error_line(result, 2)
    assert not (tmp_path / "runs").exists()  # nothing was written


def test_failing_train_without_quiet_prints_only_the_error(tmp_path):
    result = invoke("train", "nope.txt", cwd=tmp_path)
    assert_one_error_line(result, 2)


def test_a_bad_value_for_a_generated_option_is_one_error_line(tmp_path):
    result = invoke("train", "corpus.txt", "--eval-streams", "many", cwd=tmp_path)
    line = assert_one_error_line(result, 2)
    assert "invalid value for '--eval-streams'" in line
    assert line.endswith("(see 'charrnn train --help')")


# ----------------------------------------------------------------------------- one declaration

TRAIN_RUN_OPTIONS = {
    "--resume", "--init-from", "--preset", "--config", "--out", "--cache-dir", "--quiet", "--help",
}  # fmt: skip
TRAINING_CLASSES = (ModelConfig, DataConfig, TrainConfig)


def listed_options(help_text: str) -> list[str]:
    """The first long flag of every option line of a --help text (`-q, --quiet` is --quiet)."""
    options = help_text[help_text.index("\nOptions:\n") :]
    return re.findall(r"^  (?:-\w, )?(--[a-z0-9-]+)", options, flags=re.MULTILINE)


def command_options(name: str) -> dict[str, typer.core.TyperOption]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[name].params if p.param_type_name == "option"}


def test_train_help_lists_one_option_per_setting_and_the_run_options(tmp_path):
    result = invoke("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    listed = listed_options(result.stdout)
    keys = [f.name for cls in TRAINING_CLASSES for f in dataclasses.fields(cls)]
    assert len(listed) == len(set(listed))
    assert set(listed) == {"--" + key.replace("_", "-") for key in keys} | TRAIN_RUN_OPTIONS
    assert "--eval-streams" in listed
    for spelling in ["--bytes / --chars", "--compile / --no-compile", "--max-time <str>"]:
        assert f"  {spelling} " in result.stdout


def test_train_options_carry_their_declared_help_and_panel_and_default_to_not_given():
    options = command_options("train")
    for cls in TRAINING_CLASSES:
        for setting in declared_settings(cls):
            option = options[setting.name]
            assert option.help == setting.help
            assert option.rich_help_panel == setting.panel
            assert option.default is None  # not given: a preset or a TOML file may set it
    run_panel = {name for name, o in options.items() if o.rich_help_panel == "Run"}
    assert {"resume", "init_from", "preset", "config", "out", "cache_dir", "quiet"} <= run_panel


def test_sample_options_are_the_sample_config(tmp_path):
    options = command_options("sample")
    for field in dataclasses.fields(SampleConfig):
        assert options[field.name].default == field.default
    for setting in declared_settings(SampleConfig):
        assert options[setting.name].help == setting.help
    fixed = {"checkpoint", "prime", "prime_file", "separator", "output", "device", "threads"}
    fixed |= {"interactive", "reset"}  # the prompt loop: a mode of the command, not a setting
    assert set(options) == {f.name for f in dataclasses.fields(SampleConfig)} | fixed
    listed = listed_options(invoke("sample", "--help", cwd=tmp_path).stdout)
    assert len(listed) == len(set(listed)) == len(options) + 1  # and --help


class _Captured(UsageError):
    """Raised by a stand-in command once it has recorded its arguments."""


@pytest.fixture
def captured(monkeypatch) -> dict:
    """Replace the commands the CLI calls with ones that record their arguments and stop."""
    calls: dict = {}

    def record(name):
        def command(*args, **kwargs):
            calls[name] = (args, kwargs)
            raise _Captured("captured")

        return command

    for name in ["train_command", "resume_command", "sample_command", "eval_command"]:
        monkeypatch.setattr(commands, name, record(name))
    return calls


def test_train_flags_set_every_setting_and_defaults_are_the_declared_ones(
    write_corpus, tmp_path, captured
):
    write_corpus()
    invoke("train", "corpus.txt", cwd=tmp_path)
    assert captured["train_command"][0][1] == RunConfig()
    flags = []
    for setting in (s for cls in TRAINING_CLASSES for s in declared_settings(cls)):
        value = OTHER_VALUES[setting.name]
        flags += [setting.option] if value is True else [setting.option, str(value)]
    invoke("train", "corpus.txt", *flags, cwd=tmp_path)
    assert flat(captured["train_command"][0][1]) == OTHER_VALUES


def test_resume_passes_resumable_flags_and_refuses_others_before_loading(tmp_path, captured):
    invoke("train", "--resume", "run", "--max-steps", "9", "--no-compile", cwd=tmp_path)
    (run_dir, overrides), _ = captured.pop("resume_command")
    assert run_dir == Path("run")
    assert {k: v for k, v in overrides.items() if v is not None} == {
        "max_steps": 9,
        "compile": False,
    }
    line = assert_one_error_line(invoke("train", "--resume", "run", "--lr", "1", cwd=tmp_path), 2)
    assert line.endswith("--lr cannot change (start a new run with --init-from to change them)")
    assert not captured


def test_sample_and_eval_defaults(tmp_path, captured):
    invoke("sample", "--checkpoint", "run", cwd=tmp_path)
    (path, prime, config, device), kwargs = captured["sample_command"]
    assert (path, prime, config, device) == (Path("run"), "", SampleConfig(), "auto")
    assert kwargs["threads"] == 0
    flags = []
    for setting in declared_settings(SampleConfig):
        text = OTHER_SAMPLE_VALUES[setting.name][0]
        flags += [setting.option] if text is None else [setting.option, text]
    invoke("sample", "--checkpoint", "run", *flags, cwd=tmp_path)
    config = captured["sample_command"][0][2]
    assert dataclasses.asdict(config) == {k: v for k, (_, v) in OTHER_SAMPLE_VALUES.items()}
    invoke("eval", "--checkpoint", "run", cwd=tmp_path)
    assert captured["eval_command"][0][3] == "auto"  # the device: one default, auto, everywhere


def test_prepare_caches_where_a_default_train_run_does(write_corpus, tmp_path):
    write_corpus()
    result = invoke("prepare", "corpus.txt", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(json.loads(result.stdout)["cache"]).parent == DEFAULT_CACHE_DIR
    run_dir = commands.default_run_dir(["corpus.txt"])
    assert commands.default_cache_dir(run_dir) == DEFAULT_CACHE_DIR == Path("runs/.cache")
    assert command_options("prepare")["cache_dir"].default == DEFAULT_CACHE_DIR


# ----------------------------------------------------------------------------- import graph

PACKAGE = Path(commands.__file__).parent
# Imports run one way, down this list: a module imports only modules of lower layers. Names are
# dotted below the package ("text.corpus"); a subpackage's own `__init__` is "text".
LAYERS = [
    ["__init__"],  # the package's face: re-exports the API of `api`, imported on first use
    ["__main__", "cli_reference"],  # cli_reference writes docs/cli.md from the app
    ["cli", "api"],  # two front ends over the same commands
    ["commands"],
    ["training.plan"],  # one plan, one executor: new runs, --init-from, distill and --resume
    ["serve.app"],  # charrnn serve: routes and the server's life
    ["serve.engine", "serve.protocol"],
    ["training.distill", "training.autosize"],  # an objective; the probe runs the trainer's step
    # the loop scores validation text; memory: inspection's tracer, scoring's windows
    ["training.trainer", "analysis.inspect_view", "analysis.memory"],
    ["generation.interactive", "analysis.inspection"],  # inspection: scoring's windows
    ["generation.sampling", "analysis.scoring", "analysis.plot", "model.export"],
    ["generation.beam", "generation.streams", "model.onnx_graph"],  # streams: batched text
    ["model.web_page"],  # the page; the ONNX graph shares its summary and cell check
    ["model.checkpoint", "analysis.metrics"],
    ["model.network", "text.run_text", "model.quantize"],
    ["text.corpus", "training.distributed", "analysis.run_history"],
    ["text.preprocess", "run_dir"],  # the text steps all share; a run directory's files
    ["system.atomic", "system.device", "config"],
    ["errors", "console", "system.cpuload", "system.digest", "version", "model.kernels"],
    # subpackage docstrings: they import nothing
    ["system", "text", "model", "training", "generation", "analysis", "serve"],
]  # fmt: skip


def module_name(path: Path) -> str:
    """A source file's dotted name below the package: "text.corpus", "text" for its __init__."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def charrnn_imports(path: Path, known: set[str]) -> set[str]:
    """The charrnn modules a source file imports, anywhere in it (`__init__` for the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names]
            if module == "charrnn" and any(
                alias.name not in known for alias in node.names
            ):  # `from charrnn import commands` imports a submodule; `__version__` the package
                names.append(module)
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "charrnn":
                continue
            below = ".".join(parts[1:])
            # the longest known module the name starts with: "text.corpus.Vocab" -> "text.corpus"
            while below and below not in known:
                below = below.rpartition(".")[0]
            found.add(below or "__init__")
    return found - {module_name(path)}


def test_imports_run_one_way():
    rank = {module: depth for depth, layer in enumerate(LAYERS) for module in layer}
    sources = sorted(PACKAGE.rglob("*.py"))
    assert {module_name(p) for p in sources} == set(rank)  # a new module needs a layer
    known = set(rank)
    upward = [
        f"{module_name(p)} imports {imported}"
        for p in sources
        for imported in sorted(charrnn_imports(p, known))
        if imported not in {"system", "text", "model", "training", "generation", "analysis"}
        and rank[imported] <= rank[module_name(p)]
    ]
    assert upward == []
    assert charrnn_imports(PACKAGE / "cli.py", known) == {
        "commands", "config", "console", "system.cpuload", "text.corpus", "errors",
        "analysis.plot", "analysis.run_history", "version",
    }  # fmt: skip


MAX_FUNCTION_LINES = 100


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'module.py:line name (N lines)' for every function or method under `root` longer than
    `limit` lines, decorators and docstring included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > limit:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_length_check_finds_a_long_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(100))
    (package / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}", "utf-8")
    assert long_functions(package) == ["pkg/m.py:5 long (101 lines)"]


def test_no_function_in_the_package_is_longer_than_100_lines():
    assert long_functions(PACKAGE) == []


RUN_FILE_NAMES = {"best.pt", "last.pt", "config.json", "metrics.jsonl", ".lock", "memory.json"}


def test_a_run_directory_s_file_names_are_spelled_in_one_module():
    spelled: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and node.value in RUN_FILE_NAMES:
                spelled.setdefault(node.value, set()).add(module_name(path))
    assert spelled == {name: {"run_dir"} for name in RUN_FILE_NAMES}


# ----------------------------------------------------------------------------- the training view

CONTROL_CODES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # ANSI escapes start with \x1b; \r too


def test_train_through_a_pipe_prints_plain_lines_previews_and_a_summary(tmp_path, repetitive_text):
    (tmp_path / "corpus.txt").write_text(repetitive_text(5000), "utf-8")
    flags = [flag for flag in TRAIN_FLAGS if flag != "--quiet"]
    env = {k: v for k, v in CHILD_ENV.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    result = run_charrnn(
        "train", "corpus.txt", "--out", "run", *flags, "--preview-chars", "60",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not CONTROL_CODES.search(result.stdout + result.stderr)
    previews = [line for line in result.stderr.splitlines() if line.startswith("  | ")]
    assert len(previews) == 2 * 3  # two lines at each of the 3 evaluations (steps 10, 20, 30)
    assert all(len(line) == len("  | ") + 30 for line in previews)
    status = [line for line in result.stderr.splitlines() if line.startswith("train ")]
    assert status[-1].startswith("train 100% ") and "step 30 " in status[-1]
    best = load_checkpoint(tmp_path / "run" / "best.pt").progress["best_val_loss"]
    assert f"{best / math.log(2):.4g}" in result.stdout  # the best val loss in bits/char
    command = re.search(r"charrnn sample --checkpoint \S+", result.stdout).group(0)
    sampled = invoke(*shlex.split(command)[1:], "--length", "20", cwd=tmp_path)
    assert sampled.returncode == 0 and len(sampled.stdout) == 21  # the command works as printed


# ----------------------------------------------------------------------------- help and completion


def every_option() -> list[tuple[str, typer.core.TyperOption, str]]:
    """(command, option, its help line as --help renders it) for the app and every command."""
    group = typer.main.get_command(app)
    root = typer.Context(group, info_name="charrnn")
    found = [("charrnn", p, p.get_help_record(root)[1]) for p in group.params]
    for name, command in group.commands.items():
        context = typer.Context(command, info_name=name, parent=root)
        found += [(name, p, p.get_help_record(context)[1]) for p in command.params]
    return [(name, p, text) for name, p, text in found if p.param_type_name == "option"]


def test_every_option_has_one_line_of_help_with_its_default():
    options = every_option()
    assert {name for name, _, _ in options} >= {"train", "sample", "plot", "compare", "charrnn"}
    for command, option, text in options:
        where = f"{command} {option.opts[0]}"
        assert option.help and "\n" not in option.help.strip(), where
        if option.is_flag and not option.secondary_opts:
            continue  # an on/off switch, off unless given
        assert re.search(r"default: \S|\[required\]", text), where
    train = {option.name: text for command, option, text in options if command == "train"}
    # Click's way of showing a default that is not the option's value (None: 'not given').
    assert "[default: (256)]" in train["hidden"] and "[default: (chars)]" in train["bytes"]
    assert "[default: (160)]" in train["preview_chars"]


def test_shell_completion_completes_commands_and_options(tmp_path):
    script = Path(sys.executable).parent / "charrnn"  # completion goes by the program's name
    env = {**CHILD_ENV, "_CHARRNN_COMPLETE": "complete_bash", "COMP_CWORD": "2"}
    words = {"charrnn tr": "1", "charrnn train --max-t": "2"}
    replies = [
        subprocess.run(
            [script], cwd=tmp_path, env={**env, "COMP_WORDS": line, "COMP_CWORD": cword},
            capture_output=True, text=True, timeout=60,
        ).stdout.split()
        for line, cword in words.items()
    ]  # fmt: skip
    assert replies == [["train"], ["--max-time"]]


# ----------------------------------------------------------------------------- docs/cli.md

CLI_REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_docs_cli_md_is_written_from_the_commands():
    from charrnn.cli_reference import render

    assert CLI_REFERENCE.read_text("utf-8") == render(), (
        "docs/cli.md is out of date: run `make docs` (python -m charrnn.cli_reference)"
    )


def reference_sections() -> dict[str, str]:
    """docs/cli.md's part for each command ('' for `charrnn` itself), by command name."""
    parts = re.split(r"^## charrnn\b ?", CLI_REFERENCE.read_text("utf-8"), flags=re.MULTILINE)
    return {part.split("\n", 1)[0].strip(): part for part in parts[1:]}


def test_docs_cli_md_lists_what_every_help_lists():
    sections = reference_sections()
    group = typer.main.get_command(app)
    assert set(sections) == {"", *group.commands}
    runner = CliRunner()
    for name, section in sections.items():
        shown = runner.invoke(app, [*name.split(), "--help"], terminal_width=100)
        assert shown.exit_code == 0, name
        help_text = " ".join(shown.stdout.split())
        rows = re.findall(r"^\| `(.+?)` \|", section, flags=re.MULTILINE)
        names = [row.replace("\\|", "|") for row in rows if not row.startswith("[")]
        for names_shown in names:  # each option as --help spells it, with its metavar
            assert names_shown in help_text, (name, names_shown)
        if name:  # and no option of --help is missing from the page
            documented = {re.match(r"(?:-\w, )?(\S+)", n).group(1) for n in names}
            assert set(listed_options(shown.stdout)) <= documented, name


def test_help_and_shell_completion_list_the_words_a_choice_takes(tmp_path):
    script = Path(sys.executable).parent / "charrnn"  # completion goes by the program's name
    env = {**CHILD_ENV, "_CHARRNN_COMPLETE": "complete_bash", "COMP_CWORD": "3"}
    lines = ["charrnn train --cell ", "charrnn export --quantize i", "charrnn sample --unknown "]
    replies = [
        subprocess.run(
            [script], cwd=tmp_path, env={**env, "COMP_WORDS": line},
            capture_output=True, text=True, timeout=60,
        ).stdout.split()
        for line in lines
    ]  # fmt: skip
    assert replies == [list(Cell.values()), ["int8"], ["error", "skip"]]
    train_help = invoke("train", "--help", cwd=tmp_path).stdout
    assert (
        "--cell <lstm|gru|rnn|mingru>" in train_help
        and "--precision <auto|fp32|bf16|fp16>" in train_help
    )


def test_the_words_export_lists_are_the_ones_it_accepts():
    from charrnn.model.export import QUANTIZE_CHOICES
    from charrnn.model.quantize import DTYPES

    assert ExportDtype.values() == tuple(DTYPES)
    assert Quantize.values() == QUANTIZE_CHOICES
