"""edgeformer.safe_read: files from a stranger are read as data, with bounds, and fail with typed errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeformer.errors import CardError
from edgeformer.safe_read import MAX_DEPTH, loads_json, loads_toml, nesting_depth, read_json, read_text


def test_nesting_depth_counts_lists_and_dicts() -> None:
    assert nesting_depth(3) == 0
    assert nesting_depth({"a": [1, {"b": 2}]}) == 3
    assert nesting_depth([[[[]]]]) == 4


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 200_000])
def test_deep_json_is_refused_with_a_typed_error(depth: int) -> None:
    with pytest.raises(CardError, match="nests deeper"):
        loads_json("[" * depth + "]" * depth, where="config.json", error=CardError)


def test_json_at_the_depth_limit_is_read() -> None:
    assert nesting_depth(loads_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, where="x", error=CardError)) == MAX_DEPTH


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_deep_toml_is_refused_with_a_typed_error(depth: int) -> None:
    with pytest.raises(CardError, match="nests deeper"):
        loads_toml("a = " + "[" * depth + "]" * depth, where="card", error=CardError)


def test_invalid_json_and_toml_name_the_file() -> None:
    with pytest.raises(CardError, match="card.toml is not valid TOML"):
        loads_toml("a = = 1", where="card.toml", error=CardError)
    with pytest.raises(CardError, match="m.json is not valid JSON"):
        loads_json("{", where="m.json", error=CardError)


def test_special_files_are_refused_without_hanging_or_reading_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    cases = {fifo: "FIFO", zero: "a device", tmp_path: "directory", tmp_path / "missing.json": "does not exist"}
    for path, why in cases.items():
        with pytest.raises(CardError, match=why):
            read_json(path, what="manifest", error=CardError)


def test_long_names_and_binary_bytes_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="File name too long"):
        read_text(tmp_path / ("x" * 300), what="card", error=CardError)
    binary = tmp_path / "card.toml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(CardError, match="not UTF-8"):
        read_text(binary, what="card", error=CardError)


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(CardError, match="2,048 bytes, more than the 1,024"):
        read_json(big, what="manifest", error=CardError, max_bytes=1024)
