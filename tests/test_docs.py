"""The README and docs/: a short front door, and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (outside code blocks)."""
    text = re.sub(r"^```.*?^```", "", path.read_text("utf-8"), flags=re.MULTILINE | re.DOTALL)
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE):
        words = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
        anchors.add(words.replace(" ", "-"))
    return anchors


def test_the_readme_is_a_short_front_door():
    text = (REPO / "README.md").read_text("utf-8")
    assert len(text.splitlines()) <= 250
    first_code = text[text.index("```") :]
    assert first_code.startswith("```bash\nmake demo") and "\nmake test" in first_code[:200]


def test_every_relative_link_names_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text("utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # https: and the like
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and anchor not in heading_anchors(linked)):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


# Flags of other programs the pages show: torchrun's and docker's.
OTHER_PROGRAMS_FLAGS = {
    "--nnodes",
    "--nproc_per_node",
    "--rdzv-backend",
    "--rdzv-endpoint",
    "--rdzv-id",
    "--standalone",
    "--cpus",
}


def test_every_option_the_pages_mention_exists():
    import typer.main

    from charrnn.cli import app

    group = typer.main.get_command(app)
    params = [*group.params, *(p for c in group.commands.values() for p in c.params)]
    known = {"--help"} | {o for p in params for o in (*p.opts, *p.secondary_opts)}
    unknown = []
    for page in PAGES:
        if page.name in {"cli.md", "errors.md"}:  # generated; errors.md shows mistyped options
            continue
        mentioned = set(
            re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", page.read_text("utf-8"))
        )
        unknown += [
            f"{page.name}: {flag}" for flag in sorted(mentioned - known - OTHER_PROGRAMS_FLAGS)
        ]
    assert unknown == []
