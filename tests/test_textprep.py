"""Preprocessing: each step's effect, idempotence, chunked reading and the corpus cache key."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import invoke

from charrnn.config import DataConfig
from charrnn.errors import UsageError
from charrnn.text.corpus import (
    corpus_key,
    encode_text_file,
    prep_report,
    prepare_corpus,
    source_file,
)
from charrnn.text.preprocess import (
    UNKNOWN_SYMBOL,
    PrepTally,
    fold_ascii,
    preprocess_chunks,
    preprocess_text,
    strip_control,
)

OPTIONS = {
    "lowercase": DataConfig(lowercase=True),
    "ascii": DataConfig(ascii=True),
    "nfc": DataConfig(normalize="nfc"),
    "nfkc": DataConfig(normalize="nfkc"),
    "strip_control": DataConfig(strip_control=True),
    "all": DataConfig(lowercase=True, ascii=True, normalize="nfkc", strip_control=True),
    "lowercase+nfkc": DataConfig(lowercase=True, normalize="nfkc"),
    "lowercase+nfc+strip": DataConfig(lowercase=True, normalize="nfc", strip_control=True),
}
# Text with what the steps act on: accents (composed and not), ligatures, case, controls, CJK.
MESSY = st.text(
    st.sampled_from(
        list("aZ é\u0301\u00c5\ufb01\u2126\u212a\u0130\u03a3\u1e9e\u4e2d\n\t\x1b\x07\r\x7f\x9b[0m;")
    )
    | st.characters(),
    max_size=60,
)


@pytest.mark.parametrize("name", sorted(OPTIONS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=MESSY)
def test_each_option_and_their_combinations_are_idempotent(name, text):
    once = preprocess_text(text, OPTIONS[name])
    assert preprocess_text(once, OPTIONS[name]) == once


def test_each_step_does_what_its_flag_says():
    assert preprocess_text("Hello ÉCOLE", DataConfig(lowercase=True)) == "hello école"
    decomposed = "e\u0301"
    assert preprocess_text(decomposed, DataConfig(normalize="nfc")) == "\u00e9"
    assert preprocess_text("\ufb01 \u2460", DataConfig(normalize="nfkc")) == "fi 1"
    assert preprocess_text("\ufb01", DataConfig(normalize="nfc")) == "\ufb01"  # nfc keeps it
    coloured = "\x1b[1;31mred\x1b[0m\tok\x07\x00\n\x1b]0;title\x07end\x85"
    assert strip_control(coloured) == "red\tok\nend"
    assert preprocess_text("abc", DataConfig()) == "abc"  # all off: untouched


def test_ascii_folds_accents_and_counts_only_what_it_drops():
    assert fold_ascii("Café naïve Ångström ﬁ") == ("Cafe naive Angstrom fi", 0)
    assert fold_ascii("中文 ok 🎉") == (" ok ", 3)
    assert fold_ascii("plain") == ("plain", 0)


def test_chunked_reading_equals_the_whole_text_and_counts_drops():
    config = DataConfig(ascii=True, strip_control=True, normalize="nfc")
    text = "Cafe\u0301 \x1b[31m中\x1b[0m\n" * 50 + "tail é"
    whole = preprocess_text(text, config)
    # Cut inside an escape sequence and between a letter and its accent.
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    tally = PrepTally()
    assert "".join(preprocess_chunks(pieces, config, tally)) == whole
    assert tally.ascii_dropped == 50
    assert list(preprocess_chunks(pieces, DataConfig())) == pieces  # off: passed through


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    option=st.sampled_from(["lowercase", "ascii", "normalize", "strip_control", "min_char_count"]),
)
def test_the_cache_key_changes_when_any_option_changes(tmp_path, option):
    path = tmp_path / "c.txt"
    path.write_text("Some Text\n", "utf-8")
    base = DataConfig()
    changed = dataclasses.replace(
        base, **{option: {"normalize": "nfkc", "min_char_count": 3}.get(option, True)}
    )
    files = [source_file(path, base)]
    assert corpus_key(files, base) != corpus_key(files, changed)
    other = dataclasses.replace(changed, min_char_count=changed.min_char_count + 7)
    assert corpus_key(files, changed) != corpus_key(files, other)


def test_min_char_count_maps_rare_characters_to_one_unknown_symbol(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("aaaa bbbb\nxyz é\n" * 1 + "aaaa bbbb\n" * 3, "utf-8")
    corpus = prepare_corpus([path], DataConfig(min_char_count=3), tmp_path / "cache")
    vocab = corpus.vocab
    assert vocab.unknown == UNKNOWN_SYMBOL
    assert {chr(s) for s in vocab.symbols} == {"a", "b", " ", "\n", chr(UNKNOWN_SYMBOL)}
    report = prep_report(corpus)
    # x, y, z, the space before é and é: no, the space is frequent; x y z é are rare (4 chars).
    assert report["vocab_before"] == 8 and report["vocab_after"] == 5
    assert report["unknown_chars"] == 4
    assert report["unknown_share"] == pytest.approx(4 / corpus.n_chars)
    assert vocab.decode(corpus.ids[10:16]) == "\ufffd\ufffd\ufffd \ufffd\n"
    again = prepare_corpus([path], DataConfig(min_char_count=3), tmp_path / "cache")
    assert again.cached and prep_report(again) == report  # the report survives the cache
    # Unseen characters of another text are the unknown symbol too, never an error.
    other = tmp_path / "other.txt"
    other.write_text("ab中q", "utf-8")
    ids, dropped = encode_text_file(other, vocab, "utf-8", DataConfig(min_char_count=3))
    assert dropped == 0 and vocab.decode(ids) == "ab\ufffd\ufffd"
    assert vocab.encode("中").tolist() == [vocab.unknown_id]


def test_eval_files_are_preprocessed_as_the_corpus_was(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("hello world\n", "utf-8")
    config = DataConfig(lowercase=True, ascii=True)
    corpus = prepare_corpus([path], config, tmp_path / "cache")
    other = tmp_path / "o.txt"
    other.write_text("HÉLLO\x00 wörld 中\n", "utf-8")
    ids, dropped = encode_text_file(other, corpus.vocab, "utf-8", config)
    assert corpus.vocab.decode(ids) == "hello world \n" and dropped == 1  # the \x00
    assert prepare_corpus([other], config, tmp_path / "cache").prep.ascii_dropped == 1


def test_preprocessing_a_byte_corpus_is_refused(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abc\n", "utf-8")
    with pytest.raises(UsageError, match="work on characters"):
        prepare_corpus([path], DataConfig(bytes=True, lowercase=True), tmp_path / "cache")


def zipf_chinese(path, n_chars: int, seed: int) -> None:
    """A Chinese-like text: 3,000 CJK characters drawn with Zipf frequencies (most occur a few
    times or never), with commas, full stops and line ends."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, 3001)
    weights = 1.0 / ranks**1.1
    points = 0x4E00 + np.random.default_rng(0).permutation(3000)  # the same ranks in every file
    drawn = rng.choice(points, size=n_chars, p=weights / weights.sum())
    text = "".join(map(chr, drawn))
    lines = [text[i : i + 30] + ("。" if i % 60 else "，") for i in range(0, n_chars, 30)]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def test_chinese_with_rare_characters_trains_samples_unseen_and_evaluates(tmp_path):
    """The issue's done-criterion, on a generated Zipf corpus (no Chinese corpus ships here)."""
    zipf_chinese(tmp_path / "train.txt", 30_000, seed=1)
    zipf_chinese(tmp_path / "heldout.txt", 3_000, seed=2)
    prepared = invoke("prepare", "train.txt", "--min-char-count", "5", "--json", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    report = json.loads(prepared.stdout)
    assert report["vocab_before"] > 1500 and report["vocab_size"] < report["vocab_before"] / 2
    assert 0.02 < report["unknown_share"] < 0.5
    flags = ["--hidden", "16", "--embed", "8", "--batch-size", "4", "--seq-len", "16"]
    trained = invoke(
        "train", "train.txt", "--min-char-count", "5", "--out", "run", *flags,
        "--max-steps", "10", "--eval-every", "10", "--device", "cpu", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    unseen = chr(0x9F00)  # outside the 3,000 characters drawn
    prime = "的" + unseen
    sampled = invoke("sample", "--checkpoint", "run", "--prime", prime, "--length", "20",
                     "--seed", "1", cwd=tmp_path)  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith(prime) and len(sampled.stdout.rstrip("\n")) == 22
    scored = invoke("eval", "--checkpoint", "run", "heldout.txt", "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    scores = json.loads(scored.stdout)
    assert scores["unknown_chars"] == 0  # nothing dropped: rare and unseen are the unknown symbol
    assert 0 < scores["unknown_symbol_chars"] < scores["chars"]
    assert 0 <= scores["accuracy"] <= scores["top5_accuracy"] <= 1
    assert 0 <= scores["macro_f1"] <= 1
    info = json.loads(invoke("info", "--checkpoint", "run", "--json", cwd=tmp_path).stdout)
    assert info["unknown_symbol"] == chr(UNKNOWN_SYMBOL)
    assert info["preprocessing"]["vocab_before"] == report["vocab_before"]
    assert info["config"]["data"]["min_char_count"] == 5
