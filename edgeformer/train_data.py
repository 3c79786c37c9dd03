"""The user's training data for ``edgeformer train --data``, read and checked before any step runs.

- decoder (language model): text files, each one document: ``[bos] bytes [eos]``, concatenated;
- encoder with an lm head (masked-LM pretraining): text files, as for a decoder;
- encoder with a classification head: JSON lines ``{"text": ..., "label": ...}`` or CSV with a
  ``text,label`` header; a label is an index below ``num_labels`` or a name of ``[training].labels``;
- encoder-decoder: JSON lines ``{"source": ..., "target": ...}`` or TSV ``source<TAB>target``.

Tokenization is byte-level (ids 0-255, the card's pad/bos/eos ids for the rest), or a Hugging Face
tokenizer.json (``edgeformer.train_tokens``). Bad data (an empty
file, bytes that are not UTF-8, a label not in the card, a pair without a target) is refused with a
``DataError`` naming the file and the line, in one streaming pass before any step: nothing of the
data is kept but the offsets of the examples (``edgeformer.train_files``), and training reads each
example from disk when a batch needs it, so memory does not grow with the size of the files.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeformer import tokenizer
from edgeformer.config import ModelCard
from edgeformer.errors import DataError
from edgeformer.train_files import ByteStream, Rows, parse_row, scan_lines, scan_text
from edgeformer.train_tokens import Bytes, Encoder, TokenizerJson, TokenStream

TASKS = {"decoder": "language-model", "encoder": "classification", "encoder-decoder": "sequence-to-sequence"}


@dataclass(frozen=True)
class Dataset:
    task: str  # TASKS values, or masked-language-model
    texts: Sequence[str]  # texts (classification) or sources (sequence-to-sequence), read lazily
    labels: Sequence[int] | np.ndarray  # classification only (int32)
    targets: Sequence[str]  # sequence-to-sequence only
    files: dict[str, int]  # path -> bytes read
    stream: Stream | None = field(default=None, compare=False)  # (masked) language model: the token stream
    encoder: Encoder = field(default_factory=Bytes, compare=False)  # text -> ids (bytes or a tokenizer.json)


class Stream(Protocol):
    """A language model's ids, read by slice from disk (ByteStream, TokenStream)."""

    def __len__(self) -> int: ...

    def __getitem__(self, span: slice) -> np.ndarray: ...


def task_of(card: ModelCard) -> str:
    cfg = card.config
    if cfg.family == "encoder" and cfg.head == "lm":
        return "masked-language-model"
    if cfg.family == "encoder" and cfg.head != "classification":
        raise DataError(f"{card.name}: training an encoder needs head = 'classification' or 'lm' (not {cfg.head!r})")
    if cfg.family != "encoder" and cfg.head != "lm":
        raise DataError(f"{card.name}: training a {cfg.family} needs head = 'lm' (this card's is {cfg.head!r})")
    return TASKS[cfg.family]


def _check_vocab(card: ModelCard, encoder: Encoder) -> None:
    size = card.config.vocab_size
    if isinstance(encoder, Bytes) and size < 256:
        raise DataError(f"{card.name}: byte-level data needs vocab_size >= 256 (the card has {size})")
    if encoder.vocab_size > size:
        raise DataError(
            f"{card.name}: the tokenizer has {encoder.vocab_size} tokens, more than the card's vocab_size {size}"
        )


def _label(card: ModelCard, value: Any, where: str) -> int:
    names = [str(n) for n in card.training.get("labels", [])]
    if isinstance(value, str) and value in names:
        return names.index(value)
    number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < card.config.num_labels:
        return number
    known = ", ".join(names) if names else f"0 to {card.config.num_labels - 1}"
    raise DataError(f"{where}: label {value!r:.40} is not in the card {card.name} ({known})")


def _special(value: int, default: int) -> int:
    return value if value >= 0 else default


def read_data(card: ModelCard, paths: list[Path], encoder: Encoder | None = None) -> Dataset:
    """The examples of ``paths`` for the card's task, checked in one pass and then read lazily;
    DataError names the file and line of a bad one. ``encoder``: bytes (None) or a tokenizer.json."""
    task, encoder = task_of(card), encoder or Bytes()
    _check_vocab(card, encoder)
    if not paths:
        raise DataError("no --data files given")
    if task in ("language-model", "masked-language-model"):
        sizes = [(path, scan_text(path)) for path in paths]
        bos, eos = _special(card.config.bos_token_id, tokenizer.BOS), _special(card.config.eos_token_id, tokenizer.EOS)
        files = {str(p): n for p, n in sizes}
        if isinstance(encoder, TokenizerJson):
            return Dataset(task, [], [], [], files, TokenStream(paths, encoder, bos, eos), encoder)
        return Dataset(task, [], [], [], files, ByteStream(sizes, bos, eos))
    columns = ("text", "label") if task == "classification" else ("source", "target")
    labels, files, indexed = array("i"), {}, []
    for path in paths:

        def check(number: int, text: str, path: Path = path) -> bool:
            row = parse_row(path, text, columns, number)
            if row is not None and task == "classification":
                labels.append(_label(card, row[1], f"{path}:{number}"))
            elif row is not None and not isinstance(row[1], str):
                raise DataError(f"{path}:{number}: the target must be a string")
            return row is not None

        size, offsets = scan_lines(path, check)
        if not len(offsets):
            raise DataError(f"{path}: no examples")
        files[str(path)] = size
        indexed.append((path, offsets))
    label_ids = np.frombuffer(labels, dtype=np.int32) if labels else np.zeros(0, dtype=np.int32)
    if task == "classification":
        return Dataset(task, Rows(indexed, 0, columns), label_ids, [], files, encoder=encoder)
    return Dataset(task, Rows(indexed, 0, columns), [], Rows(indexed, 1, columns), files, encoder=encoder)
