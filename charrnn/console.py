"""Output for people: the training progress bar, tables, and one-line errors."""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text
from tqdm import tqdm

BAR_STEPS = 1000  # the bar counts thousandths of the run's budget (steps or time)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def _gradient_status(fields: dict[str, Any]) -> str:
    """' grad 0.84 max 2.1 clip 12%': the window's mean and largest gradient norm before
    clipping and the share of its steps clipped; '' for a line without them."""
    if fields.get("grad_norm") is None:
        return ""
    share = fields.get("clip_share") or 0.0
    return (
        f" grad {_fmt(fields['grad_norm'])} max {_fmt(fields.get('grad_norm_max'))} "
        f"clip {share:.0%}"
    )


PREVIEW_LINES = 2
PREVIEW_PREFIX = "  | "
_VISIBLE = {"\n": "\u21b5", "\t": "\u2192"}  # newline and tab, shown as arrows


def visible_text(text: str) -> str:
    """`text` on one line with no control codes: newlines and tabs as arrows, other
    unprintable characters as escapes (\\x1b)."""
    return "".join(_VISIBLE.get(ch) or (ch if ch.isprintable() else ascii(ch)[1:-1]) for ch in text)


def preview_lines(text: str, width: int | None = None) -> list[str]:
    """A sample as at most `PREVIEW_LINES` lines of `width` characters (default: the text cut
    into that many equal parts), each starting with `PREVIEW_PREFIX`."""
    flat = visible_text(text)
    width = width or max(1, math.ceil(len(flat) / PREVIEW_LINES))
    parts = [flat[i : i + width] for i in range(0, len(flat), width)][:PREVIEW_LINES]
    return [PREVIEW_PREFIX + part for part in parts]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class ProgressBar:
    """The training view on stderr.

    On a terminal: a tqdm bar over the run's budget (step, loss, val loss, chars/s) with the
    latest sample preview on two lines under it. Anywhere else (a pipe, `| tee`, a log file, CI,
    a notebook): plain lines with no control codes, one per percent of the run and one for each
    evaluation, followed by that evaluation's preview.
    """

    def __init__(self, disable: bool = False, file: TextIO | None = None) -> None:
        self.disabled = disable
        self.file = file or sys.stderr
        self.interactive = _is_terminal(self.file)
        self.last_val: float | None = None
        self._bar: tqdm | None = None
        self._preview_bars: list[tqdm] = []
        self._pending_preview: list[str] = []
        self._printed_percent = -1

    @property
    def bar(self) -> tqdm:
        """The tqdm bar, created on first use so failures before training print no bar."""
        if self._bar is None:
            self._bar = tqdm(
                total=BAR_STEPS,
                disable=self.disabled,
                file=self.file,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
                desc="train",
            )
        return self._bar

    def _status(self, fields: dict[str, Any]) -> str:
        return (
            f"step {fields.get('step', 0):,} loss {_fmt(fields.get('train_loss'))} "
            f"val {_fmt(self.last_val)}{_gradient_status(fields)} "
            f"{_fmt(fields.get('chars_per_s'))} chars/s"
        )

    def update(self, fraction: float, fields: dict[str, Any]) -> None:
        """Show the run's progress after a metrics line (`fields`: that line's values); a
        gradient event (an explosion) is one warning line above the bar."""
        evaluated = "val_loss" in fields
        if evaluated:
            self.last_val = fields["val_loss"]
        if self.disabled:
            return
        if fields.get("event"):
            self.message(f"charrnn: warning: {fields['event']['message']}")
        if not self.interactive:
            percent = min(100, int(fraction * 100))
            if evaluated or percent > self._printed_percent:
                self._printed_percent = percent
                seconds = fields.get("elapsed_s") or 0.0
                elapsed = time.strftime("%H:%M:%S", time.gmtime(seconds))
                self._print(f"train {percent:3d}% {elapsed} {self._status(fields)}")
            if evaluated:
                for line in self._pending_preview:
                    self._print(line)
                self._pending_preview = []
            return
        target = min(BAR_STEPS, int(fraction * BAR_STEPS))
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)
        self.bar.set_postfix_str(self._status(fields), refresh=True)

    def preview(self, step: int, text: str) -> None:
        """Show a sample of the model at `step` (on a terminal: under the bar, replacing the last;
        elsewhere: printed after the evaluation's line)."""
        if self.disabled:
            return
        if not self.interactive:
            self._pending_preview = preview_lines(text)
            return
        width = max(10, shutil.get_terminal_size().columns - len(PREVIEW_PREFIX) - 1)
        lines = preview_lines(text, width)
        while len(self._preview_bars) < PREVIEW_LINES:
            position = len(self._preview_bars) + 1
            self._preview_bars.append(
                tqdm(total=0, position=position, bar_format="{desc}", file=self.file, leave=True)
            )
        for index, preview_bar in enumerate(self._preview_bars):
            preview_bar.set_description_str(lines[index] if index < len(lines) else "")

    def message(self, text: str) -> None:
        if self.disabled:
            return
        if self.interactive:
            self.bar.write(text, file=self.file)
        else:
            self._print(text)

    def _print(self, line: str) -> None:
        print(line, file=self.file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        for preview_bar in self._preview_bars:
            preview_bar.close()


def print_table(title: str, rows: list[tuple[str, Any]], console: Console | None = None) -> None:
    """A two-column table of names and values."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, _fmt(value))
    _print_unwrapped(table, console or Console())


def print_columns(
    title: str, header: list[str], rows: list[list[Any]], console: Console | None = None
) -> None:
    """A table with a header row; text columns (the first two) left, numbers right."""
    table = Table(title=title, title_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*(Text(_fmt(value)) for value in row))  # Text: no markup in run names
    _print_unwrapped(table, console or Console())


def _print_unwrapped(table: Table, console: Console) -> None:
    """Print `table`; to a file or a pipe at its whole width, so that no value is wrapped."""
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(10_000)).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)


def error_line(message: str) -> None:
    """The one line a user sees for a failure they can fix."""
    print(f"charrnn: error: {message}", file=sys.stderr)


def notice_line(message: str) -> None:
    """A line for the user that is neither an error nor a warning."""
    print(f"charrnn: {message}", file=sys.stderr)


def warning_line(message: str) -> None:
    print(f"charrnn: warning: {message}", file=sys.stderr)
