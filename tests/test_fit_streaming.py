"""Training data larger than memory (issue #22): one streaming pass checks the files before any step
and keeps only the examples' offsets; batches read their examples from disk."""

from __future__ import annotations

import json
import tomllib
import tracemalloc

import numpy as np
import pytest

from edgeformer.config import parse_card
from edgeformer.errors import DataError
from edgeformer.train_data import read_data
from edgeformer.train_files import CHUNK
from tests.test_fit import FAMILIES, TINY


def card_of(family: str, training: str = ""):
    return parse_card(tomllib.loads(f'name = "c"\n[model]\n{FAMILIES[family]}{TINY}\n[training]\n{training}'))


def peak_of(read) -> int:
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_a_text_file_eight_times_larger_takes_no_more_memory(tmp_path):
    line = "Return the absolute value of the argument.\n"
    for name, copies in (("small.txt", 25_000), ("large.txt", 200_000)):  # ~1 MiB and ~8.6 MiB
        (tmp_path / name).write_text(line * copies)
    card = card_of("decoder")

    def read(name: str) -> None:
        data = read_data(card, [tmp_path / name])
        assert data.stream is not None
        ids = data.stream[len(data.stream) - 40 :]  # read back from the end of the file
        assert ids[-1] == 258 and bytes(ids[-20:-1].astype(np.uint8)).decode() == line[-19:]

    small, large = peak_of(lambda: read("small.txt")), peak_of(lambda: read("large.txt"))
    assert large - small < 64 << 10 and large < 3 * CHUNK  # flat: not the 8.6 MiB a whole read holds


def test_reading_rows_keeps_their_offsets_not_their_text(tmp_path):
    row = json.dumps({"text": "Return the absolute value of the argument, as a float. " * 2, "label": 1}) + "\n"
    for name, copies in (("small.jsonl", 2_000), ("large.jsonl", 16_000)):
        (tmp_path / name).write_text(row * copies)
    card = card_of("encoder")
    small = peak_of(lambda: read_data(card, [tmp_path / "small.jsonl"]))
    large = peak_of(lambda: read_data(card, [tmp_path / "large.jsonl"]))
    grown = (tmp_path / "large.jsonl").stat().st_size - (tmp_path / "small.jsonl").stat().st_size
    assert large - small < 24 * 14_000 + (64 << 10) < grown / 3  # the index: bytes per example, not per byte


def test_examples_read_back_lazily_are_the_files_rows(tmp_path):
    (tmp_path / "a.tsv").write_text("source\ttarget\none\t1\n\ntwo\t2\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"source": "three", "target": "3"}) + "\n")
    data = read_data(card_of("encoder-decoder"), [tmp_path / "a.tsv", tmp_path / "b.jsonl"])
    assert list(data.texts) == ["one", "two", "three"] and data.targets[1:] == ["2", "3"]
    assert data.texts[-1] == "three" and len(data.targets) == 3
    with pytest.raises(IndexError):
        data.texts[3]


def test_a_bad_line_far_into_a_file_is_named(tmp_path):
    good = json.dumps({"text": "fine", "label": 0}) + "\n"
    (tmp_path / "far.jsonl").write_text(good * 60_000 + json.dumps({"text": "x", "label": "nine"}) + "\n" + good)
    with pytest.raises(DataError, match=r"far\.jsonl:60001: label 'nine' is not in the card c \(0 to 1\)"):
        read_data(card_of("encoder"), [tmp_path / "far.jsonl"])
    lines = b"a" * (CHUNK - 1) + "é\n".encode() + b"ok\n" * 99_999 + b"bad \xff\n"  # é split by the chunk boundary
    (tmp_path / "far.txt").write_bytes(lines)
    with pytest.raises(DataError, match=r"far\.txt:100001: bytes that are not UTF-8"):
        read_data(card_of("decoder"), [tmp_path / "far.txt"])
    (tmp_path / "split.txt").write_bytes(lines[:-6])  # the same text without the bad line: accepted
    assert read_data(card_of("decoder"), [tmp_path / "split.txt"]).files[str(tmp_path / "split.txt")] == len(lines) - 6


def test_a_data_path_that_is_not_a_regular_file_is_refused(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.txt")  # a stream would hang on it: refused after opening without blocking
    with pytest.raises(DataError, match=r"data file .*pipe\.txt is a FIFO \(named pipe\), not a file"):
        read_data(card_of("decoder"), [tmp_path / "pipe.txt"])
    with pytest.raises(DataError, match=r"data file .* is a directory, not a file"):
        read_data(card_of("encoder"), [tmp_path])
