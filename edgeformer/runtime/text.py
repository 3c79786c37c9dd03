"""Text in and out of a bundle: the byte-level tokenizer of the demo models, or a Hugging Face
``tokenizer.json`` carried in the bundle (read with the optional ``tokenizers`` library, imported
only when text is given; token ids work without it).

A codec turns one text into token ids (special tokens as the tokenizer adds them: the byte
tokenizer's begin-of-text when asked, a tokenizer.json's own post-processor such as BERT's
[CLS] ... [SEP] or BART's <s> ... </s>) and token ids back into text (special tokens dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from edgeformer import tokenizer as bytes_tokenizer
from edgeformer.runtime.bundle import Bundle, safe_member
from edgeformer.runtime.errors import BundleIntegrityError, NoTokenizerError

BYTES = "bytes"


class Codec(Protocol):
    def encode(self, text: str, *, bos: bool) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class ByteCodec:
    """UTF-8 bytes are ids 0-255; 257 begins a text (see ``edgeformer.tokenizer``)."""

    def encode(self, text: str, *, bos: bool) -> list[int]:
        return bytes_tokenizer.encode(text, bos=bos)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes_tokenizer.decode(ids)


class TokenizerJsonCodec:
    """A Hugging Face tokenizer.json, through the ``tokenizers`` library. ``bos`` is the
    tokenizer's business here: its post-processor adds whatever special tokens the model expects."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise NoTokenizerError(
                f"this bundle's tokenizer ({path.name}) needs the `tokenizers` library: pip install tokenizers "
                "(or pass token ids instead of text)"
            ) from None
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the library's own error types
            raise BundleIntegrityError(f"{path} is not a tokenizer.json the tokenizers library reads: {exc}") from None

    def encode(self, text: str, *, bos: bool) -> list[int]:
        return list(self._tokenizer.encode(text).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)


def codec_for(bundle: Bundle) -> Codec | None:
    """The bundle's codec: bytes, its tokenizer.json (listed in the manifest's files, so its sha256
    is checked with the rest), or None when it has no tokenizer."""
    kind = bundle.tokenizer
    if kind == BYTES:
        return ByteCodec()
    if not kind:
        return None
    if not kind.endswith(".json"):
        raise NoTokenizerError(f"{bundle.path}: tokenizer {kind!r} is not one this runtime knows (bytes or a .json)")
    if kind not in bundle.typed.files:
        raise BundleIntegrityError(f"{bundle.path}: tokenizer {kind} is not listed in the manifest's files")
    return TokenizerJsonCodec(safe_member(bundle.path, kind))


class TextStream:
    """Decodes one row's tokens as they come: each call gives the text the new token adds (""
    while a character is incomplete), so the pieces join to the decoded whole."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.tokens: list[int] = []
        self.text = ""

    def push(self, token: int, *, last: bool) -> str:
        self.tokens.append(token)
        full = self.codec.decode(self.tokens)
        if not last and full.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        piece = full[len(self.text) :] if full.startswith(self.text) else full
        self.text = full
        return piece


def decode_rows(codec: Codec, rows: Sequence[Sequence[int]]) -> list[str]:
    return [codec.decode(row) for row in rows]
