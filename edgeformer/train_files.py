"""Training data read from disk as it is needed, so that memory does not grow with the files.

- ``scan_text``: one pass over a text file in chunks: UTF-8 checked (the line of a bad byte named),
  its size returned, nothing kept;
- ``scan_lines``: one pass over a JSONL/CSV/TSV file line by line, each line handed to a check and
  the byte offset of each kept line recorded (8 bytes an example: the index, not the text);
- ``ByteStream``: the language-model stream ``[bos] file bytes [eos]`` of each file, concatenated,
  whose slices are read from the files by offset;
- ``Rows``: one column of the examples of row files, each read back by its offset.
"""

from __future__ import annotations

import codecs
import csv
import json
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np

from edgeformer.errors import DataError
from edgeformer.safe_read import open_binary

DATA_BYTES = 1 << 40  # a data file is streamed, never read whole: a bound on sizes, not on memory
LINE_BYTES = 1 << 20  # one example (a JSONL/CSV/TSV line) is at most 1 MiB
CHUNK = 1 << 20


def open_data(path: Path) -> BinaryIO:
    return open_binary(path, what="data file", error=DataError, max_bytes=DATA_BYTES)


def scan_text(path: Path) -> int:
    """The size of the text file ``path`` after checking, in one streaming pass, that it holds text
    (not only white space) and is UTF-8; DataError names the line of the first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    size, lines, blank = 0, 0, True
    with open_data(path) as f:
        while chunk := f.read(CHUNK):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = max(0, exc.start - pending)
                line = lines + chunk[:at].count(b"\n") + 1
                raise DataError(f"{path}:{line}: bytes that are not UTF-8 (byte {size + at} of the file)") from None
            size, lines, blank = size + len(chunk), lines + chunk.count(b"\n"), blank and not chunk.strip()
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path}:{lines + 1}: bytes that are not UTF-8 (the file ends inside a character)") from None
    if blank:
        raise DataError(f"{path}: the file is empty")
    return size


def scan_lines(path: Path, check: Callable[[int, str], bool]) -> tuple[int, np.ndarray]:
    """(size, offsets of the kept lines) of a row file read once, line by line; ``check(line number,
    text)`` raises DataError for a bad line and returns whether it is an example (not blank or a header)."""
    offsets, offset, number = array("q"), 0, 0
    with open_data(path) as f:
        while raw := f.readline(LINE_BYTES + 1):
            number += 1
            if len(raw) > LINE_BYTES and not raw.endswith(b"\n"):
                raise DataError(f"{path}:{number}: a line longer than {LINE_BYTES:,} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: bytes that are not UTF-8 (byte {offset + exc.start} of the file)"
                ) from None
            if check(number, text):
                offsets.append(offset)
            offset += len(raw)
    return offset, np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, dtype=np.int64)


def parse_row(path: Path, text: str, columns: tuple[str, str], number: int) -> tuple[str, Any] | None:
    """(first column, second column) of one line of a JSONL, CSV or TSV file; None for a blank line
    or a header. DataError names the file and line of a line without the second column."""
    if not text.strip():
        return None
    if path.suffix in (".jsonl", ".json"):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get(columns[0]), str):
            raise DataError(f"{path}:{number}: a line must be an object with a string {columns[0]!r}")
        if row.get(columns[1]) in (None, ""):
            raise DataError(f"{path}:{number}: no {columns[1]!r}")
        return row[columns[0]], row[columns[1]]
    if path.suffix not in (".csv", ".tsv"):
        raise DataError(f"{path}: give {' or '.join(columns)} rows as .jsonl, .csv or .tsv")
    cells = next(csv.reader([text.rstrip("\r\n")], delimiter="\t" if path.suffix == ".tsv" else ","), [])
    if number == 1 and [c.strip() for c in cells[:2]] == list(columns):
        return None
    if len(cells) < 2 or not cells[1].strip():
        raise DataError(f"{path}:{number}: no {columns[1]!r} (expected {columns[0]}, {columns[1]})")
    return cells[0], cells[1]


class ByteStream:
    """Token ids ``[bos] bytes [eos]`` of each file, concatenated, read from disk by slice."""

    def __init__(self, files: list[tuple[Path, int]], bos: int, eos: int) -> None:
        self.paths = [p for p, _ in files]
        self.starts = np.cumsum([0] + [size + 2 for _, size in files])
        self.bos, self.eos = bos, eos
        self._handles: dict[int, BinaryIO] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _piece(self, k: int, a: int, b: int) -> np.ndarray:
        """Positions a..b (from the file's [bos]) of file k."""
        size = int(self.starts[k + 1] - self.starts[k]) - 2
        handle = self._handles.get(k) or self._handles.setdefault(k, open_data(self.paths[k]))
        lo, hi = max(a, 1), min(b, size + 1)
        handle.seek(lo - 1)
        body = np.frombuffer(handle.read(max(0, hi - lo)), dtype=np.uint8).astype(np.int64)
        head = [self.bos] if a == 0 else []
        tail = [self.eos] if b == size + 2 else []
        return np.concatenate([np.array(head, dtype=np.int64), body, np.array(tail, dtype=np.int64)])

    def __getitem__(self, span: slice) -> np.ndarray:
        start, stop, _ = span.indices(len(self))
        pieces = []
        for k in range(len(self.paths)):
            a, b = max(start, int(self.starts[k])), min(stop, int(self.starts[k + 1]))
            if a < b:
                pieces.append(self._piece(k, a - int(self.starts[k]), b - int(self.starts[k])))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


class Rows(Sequence[str]):
    """One column of the examples of row files, each line read back from its recorded offset."""

    def __init__(self, files: list[tuple[Path, np.ndarray]], column: int, columns: tuple[str, str]) -> None:
        self.files, self.column, self.columns = files, column, columns
        self.ends = np.cumsum([len(offsets) for _, offsets in files])
        self._handles: dict[int, BinaryIO] = {}

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def _one(self, i: int) -> str:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        k = int(np.searchsorted(self.ends, i, side="right"))
        path, offsets = self.files[k]
        handle = self._handles.get(k) or self._handles.setdefault(k, open_data(path))
        handle.seek(int(offsets[i - (int(self.ends[k - 1]) if k else 0)]))
        row = parse_row(path, handle.readline(LINE_BYTES + 1).decode("utf-8"), self.columns, 0)
        if row is None:
            raise DataError(f"{path}: changed while training (an example's line is blank now)")
        return str(row[self.column])

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._one(j) for j in range(*i.indices(len(self)))]
        return self._one(i)

    def __iter__(self) -> Iterator[str]:
        return (self._one(j) for j in range(len(self)))
