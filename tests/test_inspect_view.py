"""inspect_view.py: the HTML page is self-contained and works in a real browser (headless
Chromium, skipped when none is installed); the plain terminal view puts bars under the text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch
from test_cli import invoke
from test_inspection import TEXT, random_model, text_vocab, write_checkpoint

from charrnn.analysis.inspect_view import coloured_text, html_report, surprisal_rgb
from charrnn.analysis.inspection import UnitRef, inspect_symbols
from charrnn.text.corpus import symbols_of

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER = next((found for name in BROWSERS if (found := shutil.which(name))), None)

# Injected first in <head>: every uncaught error and console.error is recorded in the page.
ERROR_TRAP = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push("error: " + e.message));
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push("console: " + args.join(" ")); };
</script>"""

# Injected last in <body>: read the colours, pick a unit in the picker, read them again, click the
# first --find row, and leave all of it in the DOM for --dump-dom.
PROBE = """<script>
(() => {
const colours = () => Array.from(document.querySelectorAll("#text span")).map(
  s => getComputedStyle(s).backgroundColor);
const probe = { before: colours(), options: document.querySelectorAll("#unit option").length,
                text: document.getElementById("text").textContent };
const unitBox = document.getElementById("unit"), stateBox = document.getElementById("state");
stateBox.value = "%STATE%";
unitBox.value = "%UNIT%";
unitBox.dispatchEvent(new Event("change"));
probe.after = colours();
const hovered = document.querySelectorAll("#text span")[5];
hovered.dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 10, clientY: 10 }));
probe.tip = document.getElementById("tip").textContent;
document.querySelector("a.pick").click();
probe.picked = [document.getElementById("mode").value, unitBox.value, stateBox.value];
probe.errors = window.__errors;
const out = document.createElement("pre");
out.id = "probe"; out.textContent = JSON.stringify(probe);
document.body.appendChild(out);
})();
</script>"""


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


@pytest.fixture
def page(tmp_path):
    """A 2-layer LSTM checkpoint, a text with one unknown character, and the inspect outputs."""
    vocab = text_vocab(TEXT)
    write_checkpoint(tmp_path / "model.pt", random_model("lstm", 2, vocab.size), vocab)
    (tmp_path / "text.txt").write_text(TEXT[:100] + "€" + TEXT[100:], "utf-8")
    args = ["inspect", "--checkpoint", "model.pt", "text.txt", "--find", "--device", "cpu"]
    result = invoke(*args, "--html", "page.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "charrnn: wrote page.html\n"
    assert "units that track features" in result.stdout
    result = invoke(*args, "--cell-index", "1:3", "--json", cwd=tmp_path)
    return tmp_path, json.loads(result.stdout)


def test_the_page_is_self_contained(page):
    root, _ = page
    html = (root / "page.html").read_text("utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<link" not in html and "@import" not in html
    assert html.count("<script") == 2  # the data and the page's own script, both inline


@pytest.mark.skipif(BROWSER is None, reason="no Chromium or Chrome binary installed")
def test_the_page_renders_and_the_picker_recolours_the_text_in_chromium(page, tmp_path):
    root, data = page
    html = (root / "page.html").read_text("utf-8")
    probed = html.replace("<head>", "<head>" + ERROR_TRAP, 1).replace(
        "</body>", PROBE.replace("%STATE%", "c").replace("%UNIT%", "1:3") + "</body>", 1
    )
    (root / "probed.html").write_text(probed, "utf-8")
    result = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (root / "probed.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, result.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert "Uncaught" not in result.stderr
    shown = TEXT[:100] + "€" + TEXT[100:]
    assert probe["text"] == shown.replace("\n", "\u21b5\n")  # the whole text, newlines marked
    assert probe["options"] == 2 * 16  # every unit of both layers
    # Before: coloured by surprisal (white to red, no blue); after: by unit 1:3's value.
    values = [p.get("value") for p in data["positions"]]
    scale = max(abs(v) for v in values if v is not None)
    changed = 0
    for k, (before, after, value) in enumerate(
        zip(probe["before"], probe["after"], values, strict=True)
    ):
        if value is None:  # the unknown character stays uncoloured
            assert shown[k] == "€" and rgb(after)[:3] == rgb(before)[:3]
            continue
        r, g, b = rgb(after)
        if value > 0.1 * scale:
            assert r == 255 and b < 255, (k, value, after)
        elif value < -0.1 * scale:
            assert b == 255 and r < 255, (k, value, after)
        changed += before != after
    assert changed > len(values) // 2
    # Resting on a character shows its bits and what the model expected there.
    expected = data["positions"][5]
    assert f"{expected['bits']:.2f} bits" in probe["tip"]
    tip_rows = dict(re.findall(r'^  ("[^"]*") ([\d.]+)%$', probe["tip"], re.M))
    assert len(tip_rows) == 5
    for char, probability in expected["top5"]:
        assert float(tip_rows[json.dumps(char)]) == pytest.approx(100 * probability, abs=0.06)
    best = data["find"][0]
    assert probe["picked"] == ["unit", f"{best['layer']}:{best['unit']}", best["state"]]


def test_plain_text_puts_a_bar_line_under_each_line():
    vocab = text_vocab(TEXT)
    model = random_model("lstm", 1, vocab.size)
    inspection = inspect_symbols(model, vocab, symbols_of(TEXT[:40], False), show=0, find=False)
    lines = coloured_text(inspection, plain=True).plain.split("\n")
    text_lines = TEXT[:40].split("\n")
    assert lines[0::2] == [line for line in text_lines if line] or lines[0::2] == text_lines
    assert all(len(bars) == len(text) for text, bars in zip(lines[0::2], lines[1::2], strict=True))
    assert lines[1][0] == " "  # nothing predicted the first character
    line = "(a b) [c] (a b)"  # one line: one bar per character, scaled to the unit's range
    inspection = inspect_symbols(model, vocab, symbols_of(line, False), show=0, find=False)
    unit = UnitRef(0, 1, "c")
    values = inspection.unit_values(unit).tolist()
    bars = coloured_text(inspection, unit, plain=True).plain.split("\n")[1]
    assert len(bars) == len(line)
    assert bars[values.index(max(values))] == "█" and bars[values.index(min(values))] == "▁"


def test_html_escapes_the_text():
    text = "<script>alert(1)</script>\n" * 3
    vocab = text_vocab(text)
    torch.manual_seed(0)
    model = random_model("gru", 1, vocab.size)
    inspection = inspect_symbols(model, vocab, symbols_of(text, False), show=0, find=True)
    html = html_report(inspection, "<b>name</b>", None)
    assert "<script>alert" not in html and "<b>name</b>" not in html


@pytest.mark.skipif(BROWSER is None, reason="no Chromium or Chrome binary installed")
def test_the_page_paints_each_character_in_the_terminals_colour(tmp_path):
    """The colour ramp is computed once: the page shows what `surprisal_rgb` gives the terminal."""
    vocab = text_vocab(TEXT)
    inspection = inspect_symbols(
        random_model("lstm", 2, vocab.size), vocab, symbols_of(TEXT, False), show=0, find=False
    )
    probe = """<script>
    const out = document.createElement("pre"); out.id = "probe";
    out.textContent = JSON.stringify(Array.from(document.querySelectorAll("#text span")).map(
      s => getComputedStyle(s).backgroundColor));
    document.body.appendChild(out);
    </script></body>"""
    page = tmp_path / "page.html"
    page.write_text(html_report(inspection, "text", None).replace("</body>", probe, 1), "utf-8")
    result = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, result.stderr[-2000:]
    shown = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(shown) == len(TEXT)
    assert shown[0] == "rgba(0, 0, 0, 0)"  # the first character has no prediction
    expected = [surprisal_rgb(float(bits)) for bits in inspection.bits[1:]]
    assert [rgb(colour) for colour in shown[1:]] == expected
