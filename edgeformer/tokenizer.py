"""Byte-level tokenizer of the demo models: needs neither torch nor numpy.

Ids 0-255 are the bytes of UTF-8 text; 256 is padding, 257 begin-of-text, 258 end-of-text.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, BOS, EOS = 256, 257, 258
VOCAB_SIZE = 259


def encode(text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
    ids = list(text.encode("utf-8"))
    return ([BOS] if bos else []) + ids + ([EOS] if eos else [])


def decode(ids: Iterable[int]) -> str:
    """Text of the byte ids; special ids are dropped and broken UTF-8 is replaced, never raised."""
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
