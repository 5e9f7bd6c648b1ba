"""Vocabulary, corpus reading and caching, splits and batches (charrnn.text.corpus)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.config import DataConfig
from charrnn.errors import CorpusError, UsageError
from charrnn.text.corpus import (
    CACHE_FORMAT,
    IGNORE_INDEX,
    StreamBatches,
    Vocab,
    encode_text_file,
    eval_windows,
    fit_batch_shape,
    id_dtype,
    prepare_corpus,
    read_text_chunks,
    resolve_corpus_paths,
    split_train_val,
)

CHARS = DataConfig()
BYTES = DataConfig(bytes=True)


def vocab_of(text: str) -> Vocab:
    return Vocab(tuple(sorted({ord(ch) for ch in text})))


def text_of(corpus) -> str:
    return corpus.vocab.decode(np.asarray(corpus.ids))


# ----------------------------------------------------------------------------- Vocab


@pytest.mark.parametrize(
    "text",
    [
        "hello, world\n",
        "床前明月光，疑是地上霜。\n",
        "party 🎉 time 👍🏽 family 👨‍👩‍👧 😀",
        "mixed: é ß Ω 床 🎉 \t\x00 end",
    ],
)
def test_vocab_round_trips_text_one_id_per_code_point(text):
    vocab = vocab_of(text)
    ids = vocab.encode(text)
    assert len(ids) == len(text)  # astral characters like 🎉 are one symbol, not two
    assert vocab.decode(ids) == text
    assert ids.min() >= 0 and ids.max() < vocab.size


def test_vocab_ids_follow_sorted_symbols():
    vocab = vocab_of("cab")
    assert vocab.encode("abc").tolist() == [0, 1, 2]
    with pytest.raises(UsageError, match="🎉"):
        vocab.encode("🎉a")


def test_vocab_encode_names_every_unknown_character():
    vocab = vocab_of("abc")
    with pytest.raises(UsageError) as info:
        vocab.encode("abXc床X")
    message = str(info.value)
    assert "'X'" in message and "'床'" in message and "U+5E8A" in message


def test_vocab_encode_known_drops_unknown_and_lists_them_once_in_order():
    vocab = vocab_of("abc")
    ids, unknown = vocab.encode_known("aZbYcZ")
    assert vocab.decode(ids) == "abc"
    assert unknown == ["Z", "Y"]


def test_bytes_vocab_round_trips_multibyte_text():
    text = "床前明月光 🎉 café\n"
    raw = text.encode("utf-8")
    vocab = Vocab(tuple(sorted(set(raw))), is_bytes=True)
    ids = vocab.encode(text)
    assert len(ids) == len(raw)
    assert vocab.decode(ids) == text
    assert vocab.size <= 256 and vocab.dtype == np.uint8


def test_vocab_dict_round_trip():
    vocab = Vocab((10, 97, 0x1F389), is_bytes=False)
    assert Vocab.from_dict(vocab.to_dict()) == vocab


def test_extended_vocab_keeps_old_ids():
    old = vocab_of("abc")
    new = old.extended_with(vocab_of("bcdz"))
    assert new.symbols[: old.size] == old.symbols
    assert new.encode("abc").tolist() == old.encode("abc").tolist()
    assert new.decode(new.encode("zad")) == "zad"


@pytest.mark.parametrize(
    ("size", "dtype"),
    [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_id_dtype_is_the_smallest_that_holds_every_id(size, dtype):
    assert id_dtype(size) == np.dtype(dtype)
    assert np.iinfo(id_dtype(size)).max >= size - 1


def test_prepared_ids_use_uint8_for_small_and_uint16_for_large_vocabularies(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("abcabc\n", "utf-8")
    large = tmp_path / "large.txt"
    text = "".join(chr(0x4E00 + i) for i in range(300)) + "\n"  # 301 distinct symbols
    large.write_text(text, "utf-8")
    small_corpus = prepare_corpus([small], CHARS, tmp_path / "cache")
    large_corpus = prepare_corpus([large], CHARS, tmp_path / "cache")
    assert small_corpus.ids.dtype == np.uint8
    assert large_corpus.ids.dtype == np.uint16
    assert large_corpus.vocab.size == 301
    assert text_of(large_corpus) == text


# ----------------------------------------------------------------------------- corpus and cache


def test_prepare_corpus_caches_and_reuses_identical_ids(write_corpus, tmp_path):
    path = write_corpus("床前明月光 🎉\nabc abc\n" * 20)
    first = prepare_corpus([path], CHARS, tmp_path / "cache")
    second = prepare_corpus([path], CHARS, tmp_path / "cache")
    assert first.cached is False and second.cached is True
    assert first.cache_path == second.cache_path and first.cache_path.is_file()
    assert second.vocab == first.vocab
    assert np.array_equal(np.asarray(second.ids), np.asarray(first.ids))
    assert second.ids.dtype == first.ids.dtype
    assert text_of(second) == "床前明月光 🎉\nabc abc\n" * 20
    assert not [p for p in (tmp_path / "cache").iterdir() if "tmp" in p.name]


def test_cache_key_follows_contents_not_size_or_name(write_corpus, tmp_path):
    path = write_corpus("abcd\n" * 50)
    first = prepare_corpus([path], CHARS, tmp_path / "cache")
    path.write_text("abce\n" * 50, "utf-8")  # same size, different contents
    changed = prepare_corpus([path], CHARS, tmp_path / "cache")
    assert changed.cached is False
    assert changed.cache_path != first.cache_path
    assert text_of(changed) == "abce\n" * 50


def test_bytes_mode_round_trips_and_caches_apart_from_chars(write_corpus, tmp_path):
    text = "naïve 床 🎉\n" * 10
    path = write_corpus(text)
    as_bytes = prepare_corpus([path], BYTES, tmp_path / "cache")
    as_chars = prepare_corpus([path], CHARS, tmp_path / "cache")
    assert as_bytes.vocab.is_bytes and not as_chars.vocab.is_bytes
    assert as_bytes.n_chars == len(text.encode("utf-8"))
    assert as_chars.n_chars == len(text)
    assert text_of(as_bytes) == text
    assert as_bytes.cache_path != as_chars.cache_path
    assert as_chars.cached is False


def test_crlf_and_cr_line_ends_become_lf(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(b"one\r\ntwo\rthree\n\r\nfour\r")
    corpus = prepare_corpus([path], CHARS, tmp_path / "cache")
    assert text_of(corpus) == "one\ntwo\nthree\n\nfour\n"
    assert ord("\r") not in corpus.vocab.symbols


@pytest.mark.parametrize("chunk_chars", [1, 2, 3, 7])
def test_line_ends_split_across_chunks_are_normalised_once(tmp_path, chunk_chars):
    path = tmp_path / "dos.txt"
    path.write_bytes("a\r\nb\r\r\n床\r🎉\r\n".encode())
    pieces = list(read_text_chunks(path, "utf-8", chunk_chars))
    assert "".join(pieces) == "a\nb\n\n床\n🎉\n"


def test_directory_reads_sorted_text_files_skipping_binary_and_hidden(tmp_path):
    root = tmp_path / "books"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_text("bee", "utf-8")
    (root / "a.txt").write_text("ay\n", "utf-8")
    (root / "sub" / "c.md").write_text("sea", "utf-8")
    (root / ".hidden.txt").write_text("HIDDEN", "utf-8")
    (root / ".git" / "config").write_text("GIT", "utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\x00\x00\x01binary")
    paths = resolve_corpus_paths([root])
    assert paths == [root / "a.txt", root / "b.txt", root / "sub" / "c.md"]
    corpus = prepare_corpus([root], CHARS, tmp_path / "cache")
    # Files are joined in order; a newline separates a file that lacks a final one.
    assert text_of(corpus) == "ay\nbee\nsea"


def test_glob_expands_to_sorted_matching_files(tmp_path):
    for name, text in [("b.txt", "2\n"), ("a.txt", "1\n"), ("c.log", "3\n")]:
        (tmp_path / name).write_text(text, "utf-8")
    paths = resolve_corpus_paths([str(tmp_path / "*.txt")])
    assert paths == [tmp_path / "a.txt", tmp_path / "b.txt"]
    corpus = prepare_corpus([str(tmp_path / "*.txt")], CHARS, tmp_path / "cache")
    assert text_of(corpus) == "1\n2\n"


def test_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        resolve_corpus_paths([tmp_path / "nope.txt"])


def test_glob_without_matches_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no files match"):
        resolve_corpus_paths([str(tmp_path / "*.txt")])


def test_directory_without_text_files_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no text files"):
        resolve_corpus_paths([tmp_path / "empty"])
    (tmp_path / "empty" / "blob.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "empty" / ".secret").write_text("hidden", "utf-8")
    with pytest.raises(UsageError, match="no text files"):
        resolve_corpus_paths([tmp_path / "empty"])


def test_empty_corpus_is_a_corpus_error(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        prepare_corpus([tmp_path / "empty.txt"], CHARS, tmp_path / "cache")


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"\xff", 0),
        ("héllo ".encode() + b"\xff rest", 7),
        ("床前".encode() + b"\xe6\x98" + b"x", 6),  # a 3-byte character cut short
        (b"ab\xe4\xb8", 2),  # the file ends inside a character
        # The bad byte lies past the first 1 MiB block, after a character split across it.
        (b"a" * ((1 << 20) - 1) + "é".encode() + b"abc\x80", (1 << 20) - 1 + 2 + 3),
    ],
)
def test_invalid_utf8_names_the_file_and_the_exact_byte_offset(tmp_path, data, offset):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError) as info:
        prepare_corpus([path], CHARS, tmp_path / "cache")
    message = str(info.value)
    assert str(path) in message
    assert f"at byte {offset} " in message
    assert "\n" not in message


def test_invalid_utf8_is_fine_in_bytes_mode(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ab\xffcd")
    corpus = prepare_corpus([path], BYTES, tmp_path / "cache")
    assert np.asarray(corpus.ids).tolist() == [corpus.vocab.symbols.index(b) for b in b"ab\xffcd"]


def test_other_encodings_are_decoded(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\r\n".encode("latin-1"))
    corpus = prepare_corpus([path], DataConfig(encoding="latin-1"), tmp_path / "cache")
    assert text_of(corpus) == "café\n"


@pytest.mark.parametrize("encoding", ["no-such-codec", "a\x00b", "\udcff", "base64"])
def test_unknown_encoding_is_a_usage_error(tmp_path, encoding):
    path = tmp_path / "a.txt"
    path.write_text("abc", "utf-8")
    with pytest.raises(UsageError, match="unknown encoding"):
        list(read_text_chunks(path, encoding))


def test_encode_text_file_drops_and_counts_unknown_symbols(tmp_path):
    vocab = vocab_of("abc\n")
    path = tmp_path / "eval.txt"
    path.write_bytes("abXc\r\n床b".encode())
    ids, unknown = encode_text_file(path, vocab, "utf-8")
    assert unknown == 2
    assert vocab.decode(ids) == "abc\nb"
    assert ids.dtype == vocab.dtype


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(min_size=1), chunk_chars=st.integers(1, 5))
def test_prepared_text_equals_written_text_with_line_ends_normalised(text, chunk_chars):
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.txt"
        path.write_bytes(text.encode("utf-8"))
        assert "".join(read_text_chunks(path, "utf-8", chunk_chars)) == expected
        corpus = prepare_corpus([path], CHARS, Path(tmp) / "cache")
        assert corpus.n_chars == len(expected)
        assert text_of(corpus) == expected


# ----------------------------------------------------------------------------- splits and batches


@pytest.mark.parametrize("n", [20, 21, 29, 30, 99, 100, 101, 997, 1000, 12345])
def test_split_matches_nanogpt(n):
    ids = np.arange(n)
    train, val = split_train_val(ids, 0.1)
    assert len(train) == int(n * 0.9)  # nanoGPT: n = len(data); train = data[:int(n*0.9)]
    assert np.array_equal(np.concatenate([train, val]), ids)


def test_split_too_short_is_a_corpus_error():
    with pytest.raises(CorpusError, match="validation"):
        split_train_val(np.arange(10), 0.1)  # one validation character
    with pytest.raises(CorpusError, match="training"):
        split_train_val(np.arange(10), 0.95)


def make_batches(n: int = 103, batch_size: int = 4, seq_len: int = 5) -> StreamBatches:
    # ids equal to positions make every check below a statement about positions in the text.
    return StreamBatches(np.arange(n, dtype=np.uint16), batch_size, seq_len)


def test_targets_are_inputs_shifted_by_one():
    batches = make_batches()
    for step in range(batches.steps_per_epoch):
        inputs, targets = batches.batch(step)
        assert inputs.shape == targets.shape == (4, 5)
        assert inputs.dtype == targets.dtype == np.int64
        assert np.array_equal(targets, inputs + 1)


def test_each_stream_continues_where_the_previous_window_ended():
    batches = make_batches()
    assert batches.stream_len == 25 and batches.steps_per_epoch == 5
    for step in range(batches.steps_per_epoch - 1):
        now, _ = batches.batch(step)
        after, _ = batches.batch(step + 1)
        assert np.array_equal(after[:, 0], now[:, -1] + 1)
    first, _ = batches.batch(0)
    # Streams are contiguous slices of the text, one after another.
    assert first[:, 0].tolist() == [0, 25, 50, 75]


def test_epoch_wraps_to_the_start():
    batches = make_batches()
    spe = batches.steps_per_epoch
    starts = [step for step in range(3 * spe) if batches.starts_epoch(step)]
    assert starts == [0, spe, 2 * spe]
    for step in range(spe):
        assert np.array_equal(batches.batch(step)[0], batches.batch(step + spe)[0])
        assert np.array_equal(batches.batch(step)[1], batches.batch(step + 2 * spe)[1])


def test_positions_depend_only_on_the_step():
    fresh = make_batches()
    used = make_batches()
    for step in [3, 0, 11, 4, 2]:
        used.batch(step)
    for step in [7, 0, 13, 7]:
        assert np.array_equal(fresh.batch(step)[0], used.batch(step)[0])
    assert fresh.chars_per_step == 4 * 5


def test_stream_batches_refuse_text_too_short_for_one_window():
    with pytest.raises(CorpusError):
        StreamBatches(np.arange(20), batch_size=4, seq_len=6)


def test_fit_batch_shape_keeps_a_shape_that_fits():
    assert fit_batch_shape(1001, 10, 100) == (10, 100, None)


@pytest.mark.parametrize(("n_train", "batch", "seq"), [(101, 64, 128), (500, 64, 16), (3, 8, 8)])
def test_fit_batch_shape_shrinks_and_warns(n_train, batch, seq):
    fitted_batch, fitted_len, warning = fit_batch_shape(n_train, batch, seq)
    assert warning is not None and str(n_train) in warning
    assert 1 <= fitted_batch <= batch and 1 <= fitted_len <= seq
    assert fitted_batch * fitted_len <= n_train - 1
    batches = StreamBatches(np.arange(n_train), fitted_batch, fitted_len)
    assert batches.steps_per_epoch >= 1


@pytest.mark.parametrize("n", [2, 3, 10, 50, 101])
@pytest.mark.parametrize("streams", [1, 2, 3, 7, 16, 200])
@pytest.mark.parametrize("width", [3, 512])
def test_eval_windows_score_every_prediction_exactly_once(n, streams, width):
    ids = np.arange(n)
    windows = list(eval_windows(ids, streams, width))
    assert all(x.shape[1] <= width and x.shape == y.shape for x, y in windows)
    inputs = np.concatenate([x for x, _ in windows], axis=1)
    targets = np.concatenate([y for _, y in windows], axis=1)
    scored = targets != IGNORE_INDEX
    pairs = list(zip(inputs[scored].tolist(), targets[scored].tolist(), strict=True))
    assert sorted(pairs) == [(i, i + 1) for i in range(n - 1)]
    assert inputs.shape[0] <= streams
    # Within a stream, each scored input follows the previous one (the state carries over).
    for row_in, row_ok in zip(inputs, scored, strict=True):
        run = row_in[row_ok]
        assert (np.diff(run) == 1).all()


def test_eval_windows_of_one_character_score_nothing():
    assert list(eval_windows(np.arange(1), 4, 512)) == []


# ----------------------------------------------------------------------------- byte-order marks


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        ("\ufeffab\n\ufeffc".encode(), "utf-8"),
        ("\ufeffab\n\ufeffc".encode("utf-16-le"), "utf-16-le"),
        ("ab\n\ufeffc".encode("utf-16"), "utf-16"),  # its decoder drops the mark itself
        ("ab\n\ufeffc".encode("utf-8-sig"), "utf-8-sig"),  # the same
    ],
)
def test_a_bom_at_the_start_of_a_file_is_dropped_and_only_there(tmp_path, raw, encoding):
    path = tmp_path / "bom.txt"
    path.write_bytes(raw)
    assert "".join(read_text_chunks(path, encoding, chunk_bytes=1)) == "ab\n\ufeffc"
    assert "".join(read_text_chunks(path, encoding)) == "ab\n\ufeffc"


def test_bytes_mode_keeps_the_bom_bytes(tmp_path):
    # --bytes models a file's bytes as they are: the mark is three of them.
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfab\n")
    corpus = prepare_corpus([path], DataConfig(bytes=True), tmp_path / "cache")
    assert corpus.n_chars == 6 and {0xEF, 0xBB, 0xBF} <= set(corpus.vocab.symbols)


def test_the_cache_key_changes_only_for_files_with_a_bom(tmp_path):
    # Caches written before BOMs were dropped hold U+FEFF: a file with one must get a new key;
    # every other file keeps its key (and its cache).
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("abc\n", "utf-8")
    marked.write_bytes("\ufeffabc\n".encode())

    def key_before_boms(path: Path) -> str:
        digest = hashlib.sha256(f"charrnn-corpus-{CACHE_FORMAT}".encode())
        digest.update(b"utf-8|False|1")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()[:20]

    config = DataConfig()
    assert prepare_corpus([plain], config, tmp_path / "c").key == key_before_boms(plain)
    with_bom = prepare_corpus([marked], config, tmp_path / "c")
    assert with_bom.key != key_before_boms(marked)
    assert with_bom.vocab == prepare_corpus([plain], config, tmp_path / "c").vocab
