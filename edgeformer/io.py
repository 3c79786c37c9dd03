"""Atomic writes (a file or directory appears complete under its final name, or not at all), file
digests and standard JSON. Standard library only: the device runtime uses it too.

Temporary siblings are named ``.<name>.<pid>.<random>.tmp`` (and ``.old`` while a directory is
being replaced), so the next write to the same path can tell the leftovers of a killed process
(its pid is gone) from the work of a live one, and remove them. A directory replaces an earlier
one in a single ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere in two renames, and a kill
between them is repaired by the next write (the earlier directory is put back).

``pause_point`` is a fault-injection hook for tests: with ``EDGEFORMER_PAUSE_AT=<point>`` in the
environment, the process stops at that point (and says so in the file ``EDGEFORMER_PAUSE_SIGNAL``
names) so a test can look at the outputs and kill it exactly there (tests/killharness.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PAUSE_AT = "EDGEFORMER_PAUSE_AT"
PAUSE_SIGNAL = "EDGEFORMER_PAUSE_SIGNAL"


def pause_point(name: str, detail: str = "") -> None:
    """Stop here when ``EDGEFORMER_PAUSE_AT`` (comma-separated) names this point, ``name`` or
    ``name:detail`` (the file being written): write "<pid> <point>" to the file
    ``EDGEFORMER_PAUSE_SIGNAL`` names and wait until that file is removed (a test looks at the
    outputs meanwhile, then lets the process go on, or kills it)."""
    wanted = os.environ.get(PAUSE_AT, "").split(",")
    point = name if name in wanted else f"{name}:{detail}"
    if point not in wanted:
        return
    deadline = time.monotonic() + float(os.environ.get("EDGEFORMER_PAUSE_SECONDS", "600"))
    signal_file = os.environ.get(PAUSE_SIGNAL)
    if signal_file:
        Path(signal_file).write_text(f"{os.getpid()} {point}\n", encoding="utf-8")
    while time.monotonic() < deadline and (not signal_file or os.path.exists(signal_file)):
        time.sleep(0.01)


def _owner(sibling: str, name: str) -> int | None:
    """The pid in a temporary sibling's name ``.<name>.<pid>.<random>.tmp|.old``, else None."""
    prefix = f".{name}."
    if not sibling.startswith(prefix):
        return None
    parts = sibling[len(prefix) :].split(".")
    if len(parts) != 3 or not parts[0].isdigit() or parts[2] not in ("tmp", "old"):
        return None
    return int(parts[0])


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe liveness probe (os.kill would terminate it on Windows): keep its files
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` that killed processes left; if one was killed
    between the two renames that replace a directory, put the earlier directory back first.
    Returns what was removed or restored."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    done = []
    for sibling in sorted(path.parent.iterdir()):
        pid = _owner(sibling.name, path.name)
        if pid is None or _alive(pid):
            continue
        kept = sibling / "bundle"
        if sibling.name.endswith(".old") and kept.is_dir() and not os.path.lexists(path):
            os.replace(kept, path)
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        done.append(sibling)
    return done


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2`` with RENAME_EXCHANGE).
    False where the platform, the C library or the file system does not offer it."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        pause_point("atomic_path:complete", path.name)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it takes the place of ``path``.

    An earlier directory at ``path`` is kept until the new one is complete, and survives any
    failure or kill: ``path`` holds either the complete earlier directory or the complete new one.
    Whether replacing it is allowed is the caller's decision.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        pause_point("atomic_dir:complete", path.name)
        if not os.path.lexists(path):
            os.replace(tmp, path)
        elif exchange(tmp, path):  # path is now the new directory, tmp the earlier one
            pause_point("atomic_dir:exchanged", path.name)
        else:
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old / "bundle")
            pause_point("atomic_dir:between-renames", path.name)  # a kill here is repaired by clean_stale
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_text(value: object, indent: int | None = 2) -> str:
    """Standard JSON, which every parser reads (JavaScript's ``JSON.parse`` refuses Python's
    ``Infinity`` and ``NaN``): a non-finite float is written as null ("no such number")."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)
