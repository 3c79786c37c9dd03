"""Calibration and validation data for quantization: token rows from the user, fed to each graph.

Where the rows come from, in order of preference:

- an ``.npz`` with ``input_ids`` (N, L) and optionally ``attention_mask`` (N, L);
- a text file (or string), for byte-level models: cut into windows of L bytes;
- for byte-level models with nothing given: the docstrings of this Python's standard library
  (``edgeformer.data``), the data the demo models were trained on, train split for calibration
  and the held-out split for validation;
- otherwise random tokens, and the report says so (random tokens say little about accuracy).

``graph_feeds`` turns rows into the inputs each graph of a bundle takes: prefill with an empty
cache for decoders, and for an encoder-decoder's decoder the cross-attention cache computed by the
bundle's own float encoder.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgeformer import safe_read
from edgeformer.errors import EdgeformerError

Feeds = dict[str, np.ndarray]
MAX_TOKENS = 1 << 24  # rows x tokens of a calibration .npz (quantize uses a few thousand)
MAX_TEXT_BYTES = 256 << 20  # a calibration text file


class CalibrationError(EdgeformerError):
    """Calibration data that cannot be read or does not fit the model."""


@dataclass
class Rows:
    ids: np.ndarray  # (N, L) int64
    mask: np.ndarray  # (N, L) int64, 1 for real tokens
    source: str  # where they came from, for the report


def _byte_rows(text: str, length: int, n: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    if data.size == 0:
        raise CalibrationError("the calibration text is empty")
    rows = max(1, min(n, data.size // length))
    ids = np.full((rows, length), pad, dtype=np.int64)
    mask = np.zeros((rows, length), dtype=np.int64)
    for i in range(rows):
        chunk = data[i * length : (i + 1) * length]
        ids[i, : chunk.size], mask[i, : chunk.size] = chunk, 1
    return ids, mask


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, refused (CalibrationError) unless it is a regular file: a FIFO
    would hang np.load, a device would never end, a name too long or with NUL cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such calibration file") from None
    except (OSError, ValueError) as exc:
        reason = safe_read.os_reason(exc) if isinstance(exc, OSError) else "a NUL byte in the name"
        raise CalibrationError(f"{str(path)[:200]!r}: the calibration file cannot be opened ({reason})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CalibrationError(f"{path}: the calibration file is not a regular file (a FIFO, a device or a directory)")
    return os.fdopen(fd, "rb")


def _array_elements(data: Any, key: str) -> int:
    """How many elements array ``key`` of an open .npz holds, read from its header (not decompressed)."""
    with data.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(member)
    return int(np.prod(shape, dtype=object))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(input_ids, attention_mask or None) of a calibration .npz: no pickles, arrays bounded in size."""
    with _open_regular(path) as file:
        try:
            with np.load(file, allow_pickle=False) as data:
                if "input_ids" not in data.files:
                    raise CalibrationError(f"{path}: an .npz of calibration data needs an 'input_ids' array")
                keys = [k for k in ("input_ids", "attention_mask") if k in data.files]
                for key in keys:
                    if _array_elements(data, key) > MAX_TOKENS:
                        raise CalibrationError(f"{path}: {key} holds more than {MAX_TOKENS:,} tokens; give fewer rows")
                ids = np.asarray(data["input_ids"], dtype=np.int64)
                mask = np.asarray(data["attention_mask"], dtype=np.int64) if "attention_mask" in keys else None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise CalibrationError(f"{path}: not a readable .npz of arrays ({exc})") from None
    return ids, mask


def load_rows(
    config: dict[str, Any],
    tokenizer: str | None,
    *,
    path: str | Path | None = None,
    split: str = "train",
    n: int = 32,
    length: int | None = None,
    seed: int = 0,
) -> Rows:
    """Up to ``n`` rows of ``length`` tokens (default: the model's maximum, capped at 128)."""
    length = min(int(config["max_positions"]), length or 128)
    pad = max(int(config.get("pad_token_id", 0)), 0)
    vocab = int(config["vocab_size"])
    if path is not None:
        path = Path(path)
        if path.suffix == ".npz":
            ids, mask = _read_npz(path)
            if ids.ndim != 2 or ids.shape[0] == 0:
                raise CalibrationError(f"{path}: input_ids must be (rows, tokens), got shape {ids.shape}")
            if ids.min() < 0 or ids.max() >= vocab:
                raise CalibrationError(f"{path}: input_ids must lie in [0, {vocab}) for this model")
            ids = ids[:n, : int(config["max_positions"])]
            mask = np.ones_like(ids) if mask is None else mask[:n, : ids.shape[1]]
            if mask.shape != ids.shape:
                raise CalibrationError(f"{path}: attention_mask {mask.shape} does not match input_ids {ids.shape}")
            return Rows(ids, mask, f"{path.name} ({ids.shape[0]} rows)")
        if tokenizer != "bytes":
            raise CalibrationError(
                f"{path}: text calibration needs a byte-level model; give an .npz with input_ids instead"
            )
        text = safe_read.read_text(path, what="calibration file", error=CalibrationError, max_bytes=MAX_TEXT_BYTES)
        ids, mask = _byte_rows(text, length, n, pad)
        return Rows(ids, mask, f"{path.name} ({ids.shape[0]} rows of {length} bytes)")
    if tokenizer == "bytes":
        from edgeformer.data import load_docstrings

        docs = load_docstrings(split)
        text = "\n\n".join(d.text for d in docs[:: max(1, len(docs) // (n * 8))])
        ids, mask = _byte_rows(re.sub(r"\n{3,}", "\n\n", text), length, n, pad)
        return Rows(ids, mask, f"stdlib docstrings, {split} split ({ids.shape[0]} rows of {length} bytes)")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (n, length), dtype=np.int64)
    return Rows(ids, np.ones_like(ids), f"random tokens ({n} rows of {length})")


def _cache_shape(spec: Any, batch: int) -> tuple[int, ...]:
    heads, dim = spec["shape"][1], spec["shape"][3]
    return (batch, int(heads), 0, int(dim))


def _fixed_sizes(graph: dict[str, Any]) -> tuple[int | None, int | None]:
    spec = next((s for s in graph["inputs"] if s["name"] == "input_ids"), None)
    shape = spec["shape"] if spec is not None else ["batch", "sequence"]
    batch, sequence = shape[:2]
    return (batch if isinstance(batch, int) else None, sequence if isinstance(sequence, int) else None)


def _fit(rows: np.ndarray, length: int | None) -> np.ndarray:
    """Rows cut or zero-padded (pad id 0, mask 0) on the right to a fixed length."""
    if length is None or rows.shape[1] == length:
        return rows
    if rows.shape[1] > length:
        return rows[:, :length]
    return np.pad(rows, ((0, 0), (0, length - rows.shape[1])))


def graph_feeds(
    manifest: dict[str, Any], rows: Rows, batch: int = 8, encoder_session: Any = None
) -> dict[str, list[Feeds]]:
    """Feeds for every graph of the bundle, ``batch`` rows at a time. An encoder-decoder's decoder
    needs ``encoder_session`` (the float encoder) for its cross-attention cache."""
    out: dict[str, list[Feeds]] = {}
    for name, graph in manifest["graphs"].items():
        feeds_list = []
        fixed_batch, fixed_length = _fixed_sizes(graph)  # a static-shape graph takes rows of one size
        step = fixed_batch or batch
        for start in range(0, len(rows.ids) - (len(rows.ids) % step if fixed_batch else 0), step):
            ids, mask = (
                _fit(rows.ids[start : start + step], fixed_length),
                _fit(rows.mask[start : start + step], fixed_length),
            )
            b, t = ids.shape
            feeds: Feeds = {}
            cross: dict[str, np.ndarray] = {}
            if name == "decoder" and encoder_session is not None:
                names = [o.name for o in encoder_session.get_outputs()]
                values = encoder_session.run(names, {"input_ids": ids, "attention_mask": mask})
                cross = {k.replace("present.", "past_key_values."): v for k, v in zip(names, values, strict=True)}
            for spec in graph["inputs"]:
                key = spec["name"]
                if key == "input_ids":
                    feeds[key] = ids
                elif key in ("attention_mask", "encoder_attention_mask"):
                    feeds[key] = mask
                elif key == "position_ids":
                    feeds[key] = np.broadcast_to(np.arange(t, dtype=np.int64), (b, t)).copy()
                elif key in cross:
                    feeds[key] = cross[key]
                elif key.startswith("past_key_values"):
                    feeds[key] = np.zeros(_cache_shape(spec, b), dtype=np.float32)
                else:
                    raise CalibrationError(f"graph {name}: no calibration value for input {key!r}")
            feeds_list.append(feeds)
        out[name] = feeds_list
    return out
