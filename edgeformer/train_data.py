"""The user's training data for ``edgeformer train --data``, read and checked before any step runs.

- decoder (language model): text files, each one document: ``[bos] bytes [eos]``, concatenated;
- encoder with an lm head (masked-LM pretraining): text files, as for a decoder;
- encoder with a classification head: JSON lines ``{"text": ..., "label": ...}`` or CSV with a
  ``text,label`` header; a label is an index below ``num_labels`` or a name of ``[training].labels``;
- encoder-decoder: JSON lines ``{"source": ..., "target": ...}`` or TSV ``source<TAB>target``.

Tokenization is byte-level (ids 0-255, the card's pad/bos/eos ids for the rest). Bad data (an empty
file, bytes that are not UTF-8, a label not in the card, a pair without a target) is refused with a
``DataError`` naming the file and the line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformer.config import ModelCard
from edgeformer.errors import DataError
from edgeformer.safe_read import read_bytes

DATA_BYTES = 1 << 32  # one data file is read whole; 4 GiB is the most it may have
TASKS = {"decoder": "language-model", "encoder": "classification", "encoder-decoder": "sequence-to-sequence"}


@dataclass(frozen=True)
class Dataset:
    task: str  # TASKS values
    texts: list[str]  # documents (language-model), texts (classification) or sources (sequence-to-sequence)
    labels: list[int]  # classification only
    targets: list[str]  # sequence-to-sequence only
    files: dict[str, int]  # path -> bytes read


def task_of(card: ModelCard) -> str:
    cfg = card.config
    if cfg.family == "encoder" and cfg.head == "lm":
        return "masked-language-model"
    if cfg.family == "encoder" and cfg.head != "classification":
        raise DataError(f"{card.name}: training an encoder needs head = 'classification' or 'lm' (not {cfg.head!r})")
    if cfg.family != "encoder" and cfg.head != "lm":
        raise DataError(f"{card.name}: training a {cfg.family} needs head = 'lm' (this card's is {cfg.head!r})")
    if cfg.vocab_size < 256:
        raise DataError(f"{card.name}: byte-level data needs vocab_size >= 256 (the card has {cfg.vocab_size})")
    return TASKS[cfg.family]


def _text_of(path: Path) -> str:
    data = read_bytes(path, what="data file", error=DataError, max_bytes=DATA_BYTES)
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: bytes that are not UTF-8 (byte {exc.start} of the file)") from None


def _rows(path: Path, text: str, columns: tuple[str, str]) -> list[tuple[int, str, Any]]:
    """(line, first column, second column) of a JSONL, CSV or TSV file; blank lines skipped."""
    out: list[tuple[int, str, Any]] = []
    if path.suffix in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(columns[0]), str):
                raise DataError(f"{path}:{n}: a line must be an object with a string {columns[0]!r}")
            if row.get(columns[1]) in (None, ""):
                raise DataError(f"{path}:{n}: no {columns[1]!r}")
            out.append((n, row[columns[0]], row[columns[1]]))
        return out
    if path.suffix not in (".csv", ".tsv"):
        raise DataError(f"{path}: give {' or '.join(columns)} rows as .jsonl, .csv or .tsv")
    reader = csv.reader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ",")
    for n, row in enumerate(reader, 1):
        if not row or (n == 1 and [c.strip() for c in row[:2]] == list(columns)):
            continue  # a blank line, or the header
        if len(row) < 2 or not row[1].strip():
            raise DataError(f"{path}:{n}: no {columns[1]!r} (expected {columns[0]}, {columns[1]})")
        out.append((n, row[0], row[1]))
    return out


def _label(card: ModelCard, value: Any, where: str) -> int:
    names = [str(n) for n in card.training.get("labels", [])]
    if isinstance(value, str) and value in names:
        return names.index(value)
    number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < card.config.num_labels:
        return number
    known = ", ".join(names) if names else f"0 to {card.config.num_labels - 1}"
    raise DataError(f"{where}: label {value!r:.40} is not in the card {card.name} ({known})")


def read_data(card: ModelCard, paths: list[Path]) -> Dataset:
    """Every example of ``paths`` for the card's task; DataError names the file and line of a bad one."""
    task = task_of(card)
    data = Dataset(task, [], [], [], {})
    if not paths:
        raise DataError("no --data files given")
    for path in paths:
        text = _text_of(path)
        data.files[str(path)] = len(text.encode("utf-8"))
        if task in ("language-model", "masked-language-model"):
            data.texts.append(text)
            continue
        columns = ("text", "label") if task == "classification" else ("source", "target")
        rows = _rows(path, text, columns)
        if not rows:
            raise DataError(f"{path}: no examples")
        for n, first, second in rows:
            data.texts.append(first)
            if task == "classification":
                data.labels.append(_label(card, second, f"{path}:{n}"))
            elif not isinstance(second, str):
                raise DataError(f"{path}:{n}: the target must be a string")
            else:
                data.targets.append(second)
    return data
