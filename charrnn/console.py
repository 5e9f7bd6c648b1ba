"""Output for people: the training progress bar, tables, and one-line errors."""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
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


class ProgressBar:
    """A tqdm bar over the run's budget showing step, loss, val loss and chars/s."""

    def __init__(self, disable: bool = False) -> None:
        self.disabled = disable
        self.last_val: float | None = None
        self._bar: tqdm | None = None

    @property
    def bar(self) -> tqdm:
        """The tqdm bar, created on first use so failures before training print no bar."""
        if self._bar is None:
            self._bar = tqdm(
                total=BAR_STEPS,
                disable=self.disabled,
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
                desc="train",
            )
        return self._bar

    def update(self, fraction: float, fields: dict[str, Any]) -> None:
        target = min(BAR_STEPS, int(fraction * BAR_STEPS))
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)
        if "val_loss" in fields:
            self.last_val = fields["val_loss"]
        self.bar.set_postfix_str(
            f"step {fields.get('step', 0):,} loss {_fmt(fields.get('train_loss'))} "
            f"val {_fmt(self.last_val)} {_fmt(fields.get('chars_per_s'))} chars/s",
            refresh=True,
        )

    def message(self, text: str) -> None:
        if not self.disabled:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def print_table(title: str, rows: list[tuple[str, Any]], console: Console | None = None) -> None:
    """A two-column table of names and values."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, _fmt(value))
    (console or Console()).print(table)


def error_line(message: str) -> None:
    """The one line a user sees for a failure they can fix."""
    print(f"charrnn: error: {message}", file=sys.stderr)


def notice_line(message: str) -> None:
    """A line for the user that is neither an error nor a warning."""
    print(f"charrnn: {message}", file=sys.stderr)


def warning_line(message: str) -> None:
    print(f"charrnn: warning: {message}", file=sys.stderr)
