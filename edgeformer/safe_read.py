"""Reading files that may come from a stranger: manifests, cards, config.json, io declarations.

Standard library only (the device runtime uses it). Every reader here:

- opens without blocking and refuses anything but a regular file after opening it (a directory, a
  FIFO that would hang, ``/dev/zero`` behind a symbolic link that would never end);
- reads at most ``max_bytes`` (a manifest or a card is kilobytes; a file claiming to be one that
  is gigabytes long is refused, not read into memory);
- turns every ``OSError`` (a name too long, permission denied, an I/O error) and every decoding
  failure into the caller's typed error, whose message names the file and what to do;
- parses JSON and TOML with a bound on nesting: Python's parsers recurse, so a few thousand ``[``
  end in ``RecursionError`` deep inside them.

The caller passes the error class to raise (``BundleFormatError`` for a manifest, ``CardError``
for a card, ``ModelImportError`` for a Hugging Face directory), so each layer keeps its own types.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, BinaryIO

MAX_DEPTH = 64  # nesting of JSON arrays/objects or TOML tables/arrays; real files use fewer than 10
SMALL_FILE_BYTES = 64 << 20  # manifests, cards, config.json: far below this


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def os_reason(exc: OSError) -> str:
    """An OSError in a few words (its strerror, not the repr with the errno and the path)."""
    return exc.strerror or type(exc).__name__


def _open_regular(path: Path, what: str, error: type[Exception], max_bytes: int) -> tuple[int, int]:
    """(descriptor, size) of the regular file ``path`` opened for reading; anything else raises ``error``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be opened ({os_reason(exc)})") from None
    except ValueError:  # an embedded NUL byte: no file can have that name
        raise error(f"{what} {str(path)!r} is not a usable file name (it holds a NUL byte)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is {_kind(info.st_mode)}, not a file")
        if info.st_size > max_bytes:
            raise error(f"{what} {path} is {info.st_size:,} bytes, more than the {max_bytes:,} such a file may have")
    except OSError as exc:
        os.close(fd)
        raise error(f"{what} {path} cannot be read ({os_reason(exc)})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def open_binary(path: str | Path, *, what: str, error: type[Exception], max_bytes: int) -> BinaryIO:
    """The regular file ``path`` opened for buffered binary reading, for a caller that streams it
    (a data file larger than memory); the checks of ``read_bytes``, the reading is the caller's."""
    fd, _ = _open_regular(Path(path), what, error, max_bytes)
    return os.fdopen(fd, "rb")


def read_bytes(path: str | Path, *, what: str, error: type[Exception], max_bytes: int = SMALL_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``; anything else raises ``error`` naming ``what``."""
    path = Path(path)
    fd, _ = _open_regular(path, what, error, max_bytes)
    try:
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{what} {path} grew past {max_bytes:,} bytes while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({os_reason(exc)})") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, *, what: str, error: type[Exception], max_bytes: int = SMALL_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` (see ``read_bytes``)."""
    data = read_bytes(path, what=what, error=error, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply lists and dicts nest in ``value`` (a scalar is 0); stops counting past ``limit``."""
    depth = 0
    level = [value] if isinstance(value, dict | list) else []
    while level and depth <= limit:
        depth += 1
        children = (c for item in level for c in (item.values() if isinstance(item, dict) else item))
        level = [c for c in children if isinstance(c, dict | list)]
    return depth


def _check_depth(value: Any, where: str, error: type[Exception]) -> Any:
    if nesting_depth(value) > MAX_DEPTH:
        raise error(f"{where} nests deeper than {MAX_DEPTH} levels; it is not a file edgeformer wrote")
    return value


def loads_json(text: str, *, where: str, error: type[Exception]) -> Any:
    """``json.loads`` that raises ``error`` for invalid JSON and for nesting past MAX_DEPTH."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{where} nests deeper than {MAX_DEPTH} levels; it is not a file edgeformer wrote") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise error(f"{where} is not valid JSON ({exc})") from None
    return _check_depth(value, where, error)


def loads_toml(text: str, *, where: str, error: type[Exception]) -> dict[str, Any]:
    """``tomllib.loads`` that raises ``error`` for invalid TOML and for nesting past MAX_DEPTH."""
    try:
        value = tomllib.loads(text)
    except RecursionError:
        raise error(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise error(f"{where} is not valid TOML ({exc})") from None
    return _check_depth(value, where, error)


def read_json(path: str | Path, *, what: str, error: type[Exception], max_bytes: int = SMALL_FILE_BYTES) -> Any:
    """Read and parse a JSON file from a stranger (see the module docstring)."""
    text = read_text(path, what=what, error=error, max_bytes=max_bytes)
    return loads_json(text, where=f"{what} {path}", error=error)


def read_toml(
    path: str | Path, *, what: str, error: type[Exception], max_bytes: int = SMALL_FILE_BYTES
) -> dict[str, Any]:
    """Read and parse a TOML file from a stranger (see the module docstring)."""
    text = read_text(path, what=what, error=error, max_bytes=max_bytes)
    return loads_toml(text, where=f"{what} {path}", error=error)
