"""Text to token ids for ``edgeformer train``: byte-level (the default: UTF-8 bytes are ids 0-255),
or a Hugging Face ``tokenizer.json`` (``--tokenizer FILE`` or the card's ``tokenizer = "x.json"``)
through the ``tokenizers`` library (pip install 'edgeformer[text]').

The tokenizer's own special tokens are not added: the trainer frames texts with the card's
bos/eos/pad ids, as it does for bytes. A language model's files are tokenized once, line by line, into
an anonymous temporary file of int32 ids that training reads by slice (``TokenStream``), so memory
does not grow with the data; the file goes when the run ends.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from edgeformer.errors import DataError
from edgeformer.safe_read import read_text
from edgeformer.train_files import CHUNK, open_data
from edgeformer.travel import TRAVEL_BYTES, travelling_file


class Encoder(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...


class Bytes:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class TokenizerJson:
    """A Hugging Face tokenizer.json, read as a stranger's file (a regular file, not a link, bounded)."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DataError(f"--tokenizer {path} needs the `tokenizers` library: pip install tokenizers") from None
        path = travelling_file(path.parent, path.name, what="tokenizer", error=DataError)
        text = read_text(path, what="tokenizer", error=DataError, max_bytes=TRAVEL_BYTES)
        try:
            self.tokenizer = Tokenizer.from_str(text)
        except Exception as exc:  # noqa: BLE001 - the library raises its own exception types
            raise DataError(f"{path} is not a tokenizer.json the tokenizers library reads ({exc})") from None
        self.path, self.vocab_size = path, int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_lines(self, lines: list[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tokenizer.encode_batch(lines, add_special_tokens=False)]


class TokenStream:
    """The ids ``[bos] tokens [eos]`` of each text file, concatenated, in a temporary file of int32."""

    def __init__(self, files: list[Path], tokenizer: TokenizerJson, bos: int, eos: int) -> None:
        # the ids live as long as the stream (closed with it), so no context manager here
        self._file: BinaryIO = tempfile.TemporaryFile(prefix="edgeformer-tokens-")  # noqa: SIM115
        count = 0
        for path in files:
            count += self._write([bos])
            with open_data(path) as f:
                while lines := f.readlines(CHUNK):
                    for ids in tokenizer.encode_lines([line.decode("utf-8") for line in lines]):
                        count += self._write(ids)
            count += self._write([eos])
        self._file.flush()
        self.ids: Any = np.memmap(self._file, dtype=np.int32, mode="r", shape=(count,)) if count else np.zeros(0)

    def _write(self, ids: list[int]) -> int:
        self._file.write(np.asarray(ids, dtype=np.int32).tobytes())
        return len(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, span: slice) -> np.ndarray:
        return np.asarray(self.ids[span], dtype=np.int64)


def encoder_of(tokenizer: Path | None) -> Encoder:
    return Bytes() if tokenizer is None else TokenizerJson(tokenizer)
