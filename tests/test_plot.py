"""`charrnn plot` and `charrnn compare` on real tiny runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from child import CHILD_ENV
from test_cli import assert_one_error_line, invoke, run_load_check

from charrnn.analysis.plot import PLOT_HINT
from charrnn.analysis.run_history import read_run
from charrnn.commands import train_command
from charrnn.model.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config, repetitive_text) -> list[Path]:
    """Two tiny runs of different sizes on the same corpus."""
    root = tmp_path_factory.mktemp("plot")
    (root / "corpus.txt").write_text(repetitive_text(3000), "utf-8")
    made = []
    for name, hidden in (("small", 8), ("wider", 16)):
        config = tiny_config(hidden=hidden, max_steps=20, eval_every=5, lr=0.02)
        made.append(train_command([root / "corpus.txt"], config, out=root / name).run_dir)
    return made


def test_plot_writes_a_png_of_the_asked_size(runs, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    # Through the real command in a child, which never loads torch to draw.
    _, loaded = run_load_check(
        "plot", *runs, "-o", "curves.png", "--width", "900", "--height", "400", cwd=tmp_path
    )
    assert loaded == "exit 0 False False"
    with Image.open(tmp_path / "curves.png") as image:
        image.load()  # decodes every pixel
        assert image.format == "PNG" and image.size == (900, 400)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colours) > 50  # curves, text and a legend, not a blank canvas
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_plot_refuses_an_unknown_format_and_a_directory_that_is_not_a_run(runs, tmp_path):
    line = assert_one_error_line(invoke("plot", *runs, "-o", "curves.gif", cwd=tmp_path), 2)
    assert "end it in .png, .svg or .pdf" in line
    (tmp_path / "empty").mkdir()
    line = assert_one_error_line(invoke("plot", "empty", cwd=tmp_path), 2)
    assert line == "charrnn: error: empty is not a run directory (it has no config.json)"


def test_plot_without_matplotlib_says_how_to_install_it(runs, tmp_path):
    hide = "import sys; sys.modules['matplotlib'] = None\n"  # import matplotlib now fails
    (tmp_path / "sitecustomize.py").write_text(hide, "utf-8")
    env = {**CHILD_ENV, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "plot", *map(str, runs), "-o", "c.png"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert assert_one_error_line(result, 1) == f"charrnn: error: {PLOT_HINT}"
    assert not (tmp_path / "c.png").exists()


def test_compare_json_reports_each_runs_size_progress_and_best_loss(runs, tmp_path):
    result = invoke("compare", *runs, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["run"] for row in rows] == [str(run) for run in runs]
    for row, run in zip(rows, runs, strict=True):
        best = load_checkpoint(run / "best.pt")
        assert row["parameters"] == sum(t.numel() for t in best.model_state.values())
        assert row["hidden"] == best.config.model.hidden
        assert row["steps"] == 20 and row["chars"] == 20 * 4 * 16
        assert row["best_val_loss"] == best.progress["best_val_loss"]
        assert row["best_val_bpc"] == pytest.approx(row["best_val_loss"] / math.log(2))
        history = read_run(run)
        assert row["elapsed_s"] == history.records[-1]["elapsed_s"]
        assert row["chars_per_s"] == pytest.approx(row["chars"] / row["elapsed_s"])
    assert rows[0]["parameters"] < rows[1]["parameters"]


def test_compare_prints_one_table_of_the_runs(runs, tmp_path):
    result = invoke("compare", *runs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "small" in result.stdout and "wider" in result.stdout
    assert "lstm 1x8" in result.stdout and "lstm 1x16" in result.stdout
    assert "bits/char" in result.stdout


def _without_gradient_fields(run: Path, old: Path) -> Path:
    """A copy of `run` as a run from before the gradient norm was logged."""
    old.mkdir()
    (old / "config.json").write_text((run / "config.json").read_text("utf-8"), "utf-8")
    lines = (run / "metrics.jsonl").read_text("utf-8").splitlines()
    gradient = ("grad_norm", "grad_norm_max", "clip_share", "event")
    stripped = [{k: v for k, v in json.loads(line).items() if k not in gradient} for line in lines]
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped), "utf-8")
    return old


def test_the_gradient_panel_sits_under_the_loss_and_old_runs_still_plot(runs, tmp_path):
    pytest.importorskip("matplotlib")
    from charrnn.analysis.plot import draw_curves, import_pyplot

    old = _without_gradient_fields(runs[0], tmp_path / "old")
    new = read_run(runs[1])
    figure = draw_curves([read_run(old), new], 900, 600)
    try:
        norm_panels = [a for a in figure.axes if a.get_yscale() == "log"]
        assert len(norm_panels) == 2  # against characters and against time
        by_chars = norm_panels[0]
        assert by_chars.get_ylabel() == "gradient norm"
        norms = [r["grad_norm"] for r in new.gradient_points()]
        drawn = [list(line.get_ydata()) for line in by_chars.get_lines()]
        assert norms in drawn  # the new run's mean norm per line; the old run has none
        assert [new.config.train.grad_clip] * 2 in drawn  # the clip threshold
    finally:
        import_pyplot().close(figure)
    only_old = draw_curves([read_run(old)], 900, 600)
    try:
        assert len(only_old.axes) == 2  # the loss panels alone, as before
        assert all(a.get_yscale() == "linear" for a in only_old.axes)
    finally:
        import_pyplot().close(only_old)
    result = invoke("plot", old, runs[1], "-o", "mixed.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mixed.png").stat().st_size > 1000
