"""Checking what an app passes in, and turning text into padded token batches.

Every mistake is a typed error (see ``errors``) whose message names the input and the fix: token
ids that are not integers, of the wrong rank, empty, outside the vocabulary or longer than the
model's positions; masks that are not 0/1 or of another shape; bytes that are not UTF-8.

Byte-level bundles (manifest ``tokenizer = "bytes"``) take text: ids 0-255 are UTF-8 bytes, 256
padding, 257 begin-of-text, 258 end-of-text (``edgeformer.tokenizer``). Bundles that carry a
Hugging Face tokenizer.json take text through a codec (``edgeformer.runtime.text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeformer import tokenizer
from edgeformer.runtime.bundle import Spec
from edgeformer.runtime.errors import (
    EmptyInputError,
    InputDtypeError,
    InputError,
    InputShapeError,
    NoTokenizerError,
    SequenceTooLongError,
    TextEncodingError,
    TokenRangeError,
)
from edgeformer.runtime.text import Codec


@dataclass
class Batch:
    """Prompts or sequences as token rows, and whether the caller gave one or many, text or ids."""

    rows: list[np.ndarray]  # 1-D int64 arrays, possibly of different lengths
    single: bool  # one prompt given (not a list): answer with one result
    text: bool  # text given: answer with text


def _is_text(value: Any) -> bool:
    return isinstance(value, str | bytes | bytearray)


def text_to_ids(text: str | bytes | bytearray, kind: str | Codec, *, bos: bool) -> np.ndarray:
    """Token ids of one text for a bundle whose tokenizer is ``kind`` ("bytes"), or through a codec."""
    codec = None if isinstance(kind, str) else kind
    if codec is None and kind != "bytes":
        raise NoTokenizerError(
            "this bundle has no tokenizer (manifest tokenizer is empty); pass token ids (a list or int array), not text"
        )
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextEncodingError(
                f"text given as bytes is not valid UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                "decode it yourself or pass str"
            ) from None
    if not text:
        hint = ""
        if bos and codec is None:
            hint = f" (to generate from nothing, pass the begin-of-text id [{tokenizer.BOS}] as token ids)"
        raise EmptyInputError(f"the text is empty; give at least one character{hint}")
    try:
        text.encode("utf-8")  # every tokenizer takes valid Unicode only
    except UnicodeEncodeError as exc:
        raise TextEncodingError(
            f"the text holds {text[exc.start]!r} at offset {exc.start}, a lone surrogate that UTF-8 cannot "
            "encode (text decoded with errors='surrogateescape'?); pass valid text"
        ) from None
    if codec is not None:
        ids = codec.encode(text, bos=bos)
        if not ids:
            raise EmptyInputError(f"the tokenizer gives no tokens for {text[:40]!r}")
        return np.asarray(ids, dtype=np.int64)
    return np.asarray(tokenizer.encode(text, bos=bos), dtype=np.int64)


def _as_int64(array: np.ndarray, name: str) -> np.ndarray:
    """Integer ids as int64; unsigned ids too large for int64 are outside any vocabulary."""
    if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise TokenRangeError(f"{name} holds {int(array.max())}, outside the vocabulary of this model")
    return array.astype(np.int64)


def _int_row(row: Any, name: str, index: int) -> np.ndarray:
    try:
        array = np.asarray(row)
    except ValueError:
        raise InputShapeError(f"{name}[{index}] is not a flat sequence of token ids") from None
    if array.size == 0:
        raise EmptyInputError(f"{name}[{index}] is empty; a sequence needs at least one token")
    if array.dtype.kind not in "iu":
        raise InputDtypeError(f"{name} must hold integer token ids, got {array.dtype} values")
    if array.ndim != 1:
        raise InputShapeError(f"{name}[{index}] must be a 1-D sequence of token ids, got shape {array.shape}")
    return _as_int64(array, name)


def token_batch(value: Any, *, name: str = "input_ids", tokenizer_kind: str | Codec = "", bos: bool = False) -> Batch:
    """Rows of token ids from text, a list of texts, a 1-D or 2-D array, or a list of id lists."""
    if _is_text(value):
        return Batch([text_to_ids(value, tokenizer_kind, bos=bos)], single=True, text=True)
    if isinstance(value, np.ndarray):
        if value.ndim not in (1, 2):
            raise InputShapeError(f"{name} must be 1-D (a sequence) or 2-D (batch, sequence), got shape {value.shape}")
        if value.dtype.kind not in "iu":
            raise InputDtypeError(f"{name} must be an integer array (int64), got {value.dtype}")
        if value.size == 0:
            raise EmptyInputError(f"{name} is empty (shape {value.shape}); give at least one token")
        rows = [value] if value.ndim == 1 else list(value)
        return Batch([_as_int64(r, name) for r in rows], single=value.ndim == 1, text=False)
    if not isinstance(value, Sequence):
        raise InputDtypeError(f"{name} must be text, a list of token ids or an int array, got {type(value).__name__}")
    if len(value) == 0:
        raise EmptyInputError(f"{name} is empty; give at least one prompt or token")
    if all(_is_text(v) for v in value):
        return Batch([text_to_ids(v, tokenizer_kind, bos=bos) for v in value], single=False, text=True)
    if any(_is_text(v) for v in value):
        raise InputDtypeError(f"{name} mixes text and token ids; give one kind")
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value):
        return Batch([_int_row(value, name, 0)], single=True, text=False)
    if all(isinstance(v, Sequence | np.ndarray) for v in value):
        return Batch([_int_row(v, name, i) for i, v in enumerate(value)], single=False, text=False)
    raise InputDtypeError(f"{name} must hold integer token ids (or lists of them), got {type(value[0]).__name__}")


def check_rows(
    rows: list[np.ndarray], *, vocab_size: int, max_len: int, name: str = "input_ids", why: str = ""
) -> None:
    """Every row non-empty, within the vocabulary, and at most ``max_len`` tokens (``why`` explains)."""
    for i, row in enumerate(rows):
        if row.size == 0:
            raise EmptyInputError(f"{name}[{i}] is empty; a sequence needs at least one token")
        bad = np.flatnonzero((row < 0) | (row >= vocab_size))
        if bad.size:
            j = int(bad[0])
            raise TokenRangeError(
                f"{name}[{i}][{j}] = {int(row[j])} is outside the vocabulary [0, {vocab_size}) of this model"
            )
        if row.size > max_len:
            why = why or f"the model takes at most {max_len} (max_positions)"
            raise SequenceTooLongError(f"{name}[{i}] has {row.size} tokens; {why}")


def pad(rows: list[np.ndarray], pad_id: int, *, left: bool) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) ids and attention mask of rows padded to the longest, on the left or the right."""
    width = max(r.size for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        cols = slice(width - row.size, width) if left else slice(0, row.size)
        ids[i, cols], mask[i, cols] = row, 1
    return ids, mask


def check_mask(mask: Any, shape: tuple[int, ...], name: str = "attention_mask") -> np.ndarray:
    """An attention mask of the given shape holding only 0 and 1, as int64."""
    array = np.asarray(mask)
    if array.dtype.kind not in "iub":
        raise InputDtypeError(f"{name} must be an integer (or bool) array of 0 and 1, got {array.dtype}")
    if array.ndim == 1 and len(shape) == 2 and shape[0] == 1:
        array = array[None]
    if array.shape != shape:
        raise InputShapeError(f"{name} has shape {array.shape}; it must match input_ids, {shape}")
    if not np.isin(array, (0, 1)).all():
        raise InputError(f"{name} must hold only 0 (padding) and 1 (token)")
    if not array.any(axis=-1).all():
        raise EmptyInputError(f"{name} masks out every token of a row; each row needs at least one real token")
    return array.astype(np.int64)


def check_feeds(feeds: dict[str, Any], specs: Sequence[Spec], graph: str) -> dict[str, np.ndarray]:
    """Raw feeds for a graph: every input present, of the manifest's dtype, rank and fixed sizes."""
    unknown = sorted(set(feeds) - {s.name for s in specs})
    if unknown:
        raise InputError(f"graph {graph!r} has no input named {', '.join(unknown)}; it takes {[s.name for s in specs]}")
    out = {}
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(f"graph {graph!r} needs input {spec.name!r} ({spec.dtype}, shape {list(spec.shape)})")
        array = np.asarray(feeds[spec.name])
        if array.dtype != np.dtype(spec.dtype):
            raise InputDtypeError(f"{spec.name} must be {spec.dtype}, got {array.dtype}")
        if array.ndim != len(spec.shape):
            raise InputShapeError(
                f"{spec.name} must have rank {len(spec.shape)} (shape {list(spec.shape)}), got shape {array.shape}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise InputShapeError(f"{spec.name} dimension {axis} must be {want}, got {got} (shape {array.shape})")
        out[spec.name] = array
    return out
