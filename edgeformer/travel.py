"""Files that travel into a bundle or beside a card: only regular files inside the directory that
names them.

A card's ``tokenizer = "x.json"`` and a Hugging Face directory's ``tokenizer.json`` are copied into
what edgeformer writes, and a bundle is handed to other people. So a name that is absolute, climbs
out with ``..``, or is a symbolic link (to ``~/.ssh/id_rsa`` or to a file beside the card alike) is
refused, as is anything but a regular file (a FIFO, a device, a directory): nothing outside the
directory a user handed to edgeformer can end up inside a bundle.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgeformer.safe_read import os_reason, read_bytes

TRAVEL_BYTES = 1 << 30  # a tokenizer is megabytes; more is not a tokenizer


def travelling_file(base: Path, name: str | Path, *, what: str, error: type[Exception]) -> Path:
    """``base / name`` when it is a regular file (not a symbolic link) inside ``base``; otherwise
    ``error`` with a message naming ``what`` and why it may not travel."""
    rel = Path(name)
    where = f"{what} {str(name)!r}"
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise error(
            f"{where} is not a file inside {base}; only files in the same directory travel into a bundle "
            "(copy it there and name it by its file name)"
        )
    path = base / rel
    try:
        info = os.lstat(path)
        outside = not path.resolve().is_relative_to(base.resolve())
    except FileNotFoundError:
        raise error(f"{where} does not exist in {base}") from None
    except (OSError, ValueError, RuntimeError) as exc:  # a name too long, a NUL, a symlink loop
        reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
        raise error(f"{where} in {base} cannot be used ({reason})") from None
    if stat.S_ISLNK(info.st_mode):
        raise error(
            f"{where} in {base} is a symbolic link; only real files travel into a bundle (copy the file itself there)"
        )
    if not stat.S_ISREG(info.st_mode) or outside:
        raise error(f"{where} in {base} is not a regular file inside that directory; it does not travel")
    return path


def copy_travelling(path: Path, dest: Path, *, what: str, error: type[Exception]) -> int:
    """Copy the travelling file ``path`` (checked again: not a link, a regular file) to ``dest``;
    the bytes copied. The bytes are read once, from the file that was checked."""
    travelling_file(path.parent, path.name, what=what, error=error)
    data = read_bytes(path, what=what, error=error, max_bytes=TRAVEL_BYTES)
    dest.write_bytes(data)
    return len(data)
