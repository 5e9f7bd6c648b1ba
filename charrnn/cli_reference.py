"""docs/cli.md, the command-line reference, written from the Typer app itself.

Every row is the help record `--help` prints for that option, so the page says what the options
say; `tests/test_cli.py` fails when docs/cli.md differs from what this module writes.

    python -m charrnn.cli_reference > docs/cli.md     (or: make docs)
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator

import typer
import typer.main

from charrnn.cli import app

HEADER = """\
# Command-line reference

Every command and option of `charrnn`, with its help and default: the same text as
`charrnn COMMAND --help`. Settings of `train` are also keys of a `--config` TOML file
(underscores for dashes; see [training.md](training.md#configuration-files-and-presets)). What
each failure prints: [errors.md](errors.md).

<!-- Written by `python -m charrnn.cli_reference > docs/cli.md` (make docs); do not edit by hand:
tests/test_cli.py fails when this page and the commands' declarations disagree. -->
"""

_MARKDOWN_SPECIAL = re.compile(r"([\\*_<>|\[\]])")  # `code` in a help stays code


def escape(text: str) -> str:
    """`text` as literal Markdown in a table cell (no emphasis, no HTML tags, no column breaks)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def code(text: str) -> str:
    """`text` as inline code in a table cell (a | inside would end the cell)."""
    return "`" + text.replace("|", "\\|") + "`"


def anchor(name: str) -> str:
    """GitHub's anchor for the heading `charrnn NAME`."""
    return "charrnn-" + name


def param_rows(
    command: typer.core.TyperCommand, context: typer.Context
) -> Iterator[tuple[str, str, str]]:
    """(panel, names as --help shows them, help as --help shows it) for each visible parameter."""
    for param in command.get_params(context):
        record = param.get_help_record(context)
        if record is None:
            continue
        names, help_text = record
        kind = "Arguments" if param.param_type_name == "argument" else "Options"
        yield getattr(param, "rich_help_panel", None) or kind, names, help_text


def command_section(name: str, command: typer.core.TyperCommand, root: typer.Context) -> str:
    """One command's part of the page: usage, description and a table per help panel."""
    context = typer.Context(command, info_name=name, parent=root)
    lines = [f"## charrnn {name}", "", "```text", command.get_usage(context), "```", ""]
    lines += [inspect.cleandoc(command.help or ""), ""]
    panels: dict[str, list[str]] = {}
    for panel, names, help_text in param_rows(command, context):
        panels.setdefault(panel, []).append(f"| {code(names)} | {escape(help_text)} |")
    for panel, rows in panels.items():
        column = "Argument" if panel == "Arguments" else "Option"
        lines += [f"### {name}: {panel.lower()}", "", f"| {column} | Meaning |", "|---|---|"]
        lines += [*rows, ""]
    return "\n".join(lines)


def render() -> str:
    """The whole page, docs/cli.md."""
    group = typer.main.get_command(app)
    root = typer.Context(group, info_name="charrnn")
    commands = list(group.commands.items())
    index = [
        f"| [`{name}`](#{anchor(name)}) | {escape(command.get_short_help_str(limit=200))} |"
        for name, command in commands
    ]
    top = [
        f"| {code(names)} | {escape(help_text)} |"
        for _, names, help_text in param_rows(group, root)  # type: ignore[arg-type]
    ]
    parts = [
        HEADER,
        "## charrnn",
        "",
        "```text",
        group.get_usage(root),
        "```",
        "",
        "| Command | What it does |",
        "|---|---|",
        *index,
        "",
        "| Option | Meaning |",
        "|---|---|",
        *top,
        "",
        *(command_section(name, command, root) for name, command in commands),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
