"""The training view (charrnn.console): plain lines off a terminal, the preview under the bar on
one, and text shown without control codes."""

from __future__ import annotations

import io
import re

from charrnn.console import PREVIEW_PREFIX, ProgressBar, preview_lines, visible_text

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # every control code but \t and \n


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as a user's stderr does."""

    def isatty(self) -> bool:
        return True


def test_sample_text_is_shown_on_one_line_without_control_codes():
    text = "KING:\nno\tmore\x1b[31m red\r\x07 é 中"
    shown = visible_text(text)
    assert not CONTROL.search(shown) and "\n" not in shown and "\t" not in shown
    assert shown == "KING:\u21b5no\u2192more\\x1b[31m red\\r\\x07 é 中"
    lines = preview_lines("abcdefghij\n", width=None)
    assert lines == [PREVIEW_PREFIX + "abcdef", PREVIEW_PREFIX + "ghij\u21b5"]
    assert preview_lines("x" * 500, width=30) == [PREVIEW_PREFIX + "x" * 30] * 2


def test_off_a_terminal_the_view_is_plain_lines_with_each_preview_after_its_evaluation():
    stream = io.StringIO()
    bar = ProgressBar(file=stream)
    bar.message("run r: 10 characters")
    for step in range(1, 11):  # a 10-step run, evaluated at step 5 and 10
        fields = {"step": step, "train_loss": 2.0, "chars_per_s": 100.0, "elapsed_s": step}
        if step % 5 == 0:
            bar.preview(step, f"text at {step}\n")
            fields["val_loss"] = 1.5
        bar.update(step / 10, fields)
    bar.close()
    output = stream.getvalue()
    assert "\r" not in output and "\x1b" not in output
    lines = output.splitlines()
    assert lines[0] == "run r: 10 characters"
    assert lines[1] == "train  10% 00:00:01 step 1 loss 2 val - 100 chars/s"
    at_five = lines.index("train  50% 00:00:05 step 5 loss 2 val 1.5 100 chars/s")
    assert lines[at_five + 1 : at_five + 3] == [
        PREVIEW_PREFIX + "text ",
        PREVIEW_PREFIX + "at 5\u21b5",
    ]
    assert lines[-2:] == [PREVIEW_PREFIX + "text a", PREVIEW_PREFIX + "t 10\u21b5"]
    assert len(lines) == 1 + 10 + 2 * 2  # one line per percent step here, two per preview


def test_on_a_terminal_the_preview_sits_under_the_bar():
    stream = _Terminal()
    bar = ProgressBar(file=stream)
    bar.update(0.5, {"step": 5, "train_loss": 2.0, "val_loss": 1.5})
    bar.preview(5, "ROMEO:\nwhat light")
    bar.close()
    output = stream.getvalue()
    assert "step 5 loss 2 val 1.5" in output
    assert f"{PREVIEW_PREFIX}ROMEO:\u21b5what light" in output
    assert "\x1b[A" in output  # the cursor went back up: the lines under the bar are redrawn


def test_quiet_shows_nothing():
    stream = _Terminal()
    bar = ProgressBar(disable=True, file=stream)
    bar.message("hello")
    bar.update(1.0, {"step": 1, "val_loss": 1.0})
    bar.preview(1, "text")
    bar.close()
    assert stream.getvalue() == ""


def test_the_view_shows_the_gradient_norm_and_clip_share_and_warns_of_an_explosion():
    stream = io.StringIO()
    bar = ProgressBar(file=stream)
    fields = {"step": 50, "train_loss": 2.0, "chars_per_s": 100.0, "elapsed_s": 5.0}
    grads = {"grad_norm": 0.84, "grad_norm_max": 2.1, "clip_share": 0.12}
    bar.update(0.5, {**fields, **grads})
    event = {"kind": "gradient_jump", "step": 57, "message": "gradient norm jumped to 40"}
    bar.update(0.6, {**fields, "step": 60, **grads, "event": event})
    bar.update(0.7, {**fields, "step": 70})  # a line without them (an evaluation's alone)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "train  50% 00:00:05 step 50 loss 2 val - grad 0.84 max 2.1 clip 12% 100 chars/s",
        "charrnn: warning: gradient norm jumped to 40",
        "train  60% 00:00:05 step 60 loss 2 val - grad 0.84 max 2.1 clip 12% 100 chars/s",
        "train  70% 00:00:05 step 70 loss 2 val - 100 chars/s",
    ]
