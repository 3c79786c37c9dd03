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
    between the two renames that replace a directory, put the earlier directory back first; finish
    or undo the group swaps (``atomic_group``) killed processes left in its directory.
    Returns what was removed or restored."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    done = repair_groups(path.parent)
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


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (``os.umask`` can only
    be read by setting it, a race with threads creating files meanwhile)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_modes(path: Path) -> None:
    """Give ``path`` (and, for a directory, everything in it) the mode a file or directory the
    user creates gets: 0o666 / 0o777 less the umask (mkstemp and mkdtemp make them private)."""
    mask = umask()
    files, dirs = 0o666 & ~mask, 0o777 & ~mask
    if path.is_symlink() or not path.is_dir():
        os.chmod(path, files)
        return
    for root, subdirs, names in os.walk(path):
        for name in names:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), files)
        for name in subdirs:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), dirs)
    os.chmod(path, dirs)


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
        user_modes(tmp_path)
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


def _temporary_dir(path: Path) -> Path:
    """A new temporary sibling directory of ``path`` (``.<name>.<pid>.<random>.tmp``), after
    removing what killed processes left beside ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    return Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it takes the place of ``path``.

    An earlier directory at ``path`` is kept until the new one is complete, and survives any
    failure or kill: ``path`` holds either the complete earlier directory or the complete new one.
    Whether replacing it is allowed is the caller's decision.
    """
    path = Path(path)
    tmp = _temporary_dir(path)
    try:
        yield tmp
        user_modes(tmp)
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


@contextlib.contextmanager
def scratch_dir(beside: str | Path) -> Iterator[Path]:
    """A working directory beside the output ``beside``, named like its temporaries
    (``.<name>.<pid>.<random>.tmp``): removed on exit, and by the next write to ``beside``
    (``clean_stale``) when a kill left it."""
    beside = Path(beside)
    tmp = _temporary_dir(beside)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----- several files replaced as one unit ---------------------------------------------------------
# A journal ``.<first name>.<pid>.<random>.journal`` lists, for each file of the group, its name,
# the temporary holding the new content and the ``.old`` sibling the earlier file is moved to. The
# earlier files are moved aside, the new ones moved in, then the journal is renamed ``.done`` (the
# commit) and the ``.old`` files removed. A kill before the commit is undone by the next writer or
# card reader (``repair_groups``: every earlier file put back, every new one removed); a kill after
# it is finished (the ``.old`` files removed).

_JOURNAL, _DONE = ".journal", ".done"


def _journal_owner(name: str) -> int | None:
    parts = name.split(".")
    if not name.startswith(".") or len(parts) < 5 or "." + parts[-1] not in (_JOURNAL, _DONE):
        return None
    return int(parts[-3]) if parts[-3].isdigit() else None


def _valid_entries(entries: object, pid: int) -> bool:
    """A journal names only siblings: each file a plain name, its new and old files temporaries of
    that name owned by the journal's process (a planted journal cannot reach other files)."""
    if not isinstance(entries, list) or not entries:
        return False
    for e in entries:
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("path", "new", "sha256")):
            return False
        name, old = e["path"], e.get("old")
        if name in (".", "..") or any(c in name for c in "/\\\0"):
            return False
        if _owner(e["new"], name) != pid or not e["new"].endswith(".tmp"):
            return False
        if old is not None and (not isinstance(old, str) or _owner(old, name) != pid or not old.endswith(".old")):
            return False
    return True


def _is_new(path: Path, sha256: str) -> bool:
    """Whether ``path`` is the file the group moved in (by its digest), not someone else's."""
    return path.is_file() and not path.is_symlink() and sha256_file(path) == sha256


def _undo(directory: Path, entries: list[dict[str, str | None]]) -> None:
    for entry in reversed(entries):
        path, new, old = (directory / str(entry["path"])), directory / str(entry["new"]), entry.get("old")
        moved_in = not os.path.lexists(new) and _is_new(path, str(entry["sha256"]))
        if old is not None and os.path.lexists(directory / old) and (moved_in or not os.path.lexists(path)):
            os.replace(directory / old, path)  # the earlier file back (over the new one moved in)
        elif old is None and moved_in:
            path.unlink()  # there was no earlier file; the new one had been moved in
        with contextlib.suppress(FileNotFoundError):
            new.unlink()


def _finish(directory: Path, entries: list[dict[str, str | None]]) -> None:
    for entry in entries:
        for name in (entry.get("old"), entry["new"]):
            if name is not None:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()


def repair_groups(directory: str | Path) -> list[Path]:
    """Undo the uncommitted group swaps of killed processes in ``directory`` (every file of the
    group back as it was) and finish their committed ones. Returns the journals handled."""
    directory = Path(directory)
    done = []
    with contextlib.suppress(OSError, ValueError):  # unreadable, or a NUL in the name: nothing to repair
        names = [n for n in os.listdir(directory) if n.endswith((_JOURNAL, _DONE))]
        for name in sorted(names):
            pid = _journal_owner(name)
            if pid is None or _alive(pid):
                continue
            journal = directory / name
            try:
                if journal.is_symlink() or journal.stat().st_size > 1 << 16:
                    continue
                entries = json.loads(journal.read_text(encoding="utf-8"))["entries"]
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                continue  # not a journal this module wrote: leave it
            if not _valid_entries(entries, pid):
                continue
            (_finish if name.endswith(_DONE) else _undo)(directory, entries)
            (directory / name).unlink(missing_ok=True)
            done.append(directory / name)
    return done


def _group_commit(directory: Path, journal: Path, entries: list[dict[str, str | None]]) -> None:
    for entry in entries:
        if entry["old"] is not None:
            os.replace(directory / str(entry["path"]), directory / str(entry["old"]))
            pause_point("atomic_group:moved-old", str(entry["path"]))
    for entry in entries:
        os.replace(directory / str(entry["new"]), directory / str(entry["path"]))
        pause_point("atomic_group:moved-new", str(entry["path"]))
    committed = journal.with_name(journal.name[: -len(_JOURNAL)] + _DONE)
    os.replace(journal, committed)
    pause_point("atomic_group:committed")
    _finish(directory, entries)
    committed.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_group(paths: list[Path]) -> Iterator[list[Path]]:
    """Yield a temporary sibling for each of several files in one directory; on success they all
    take their places as one unit: after a kill at any moment, the next writer or card reader
    (``repair_groups``) leaves either every earlier file or every new one."""
    paths = [Path(p) for p in paths]
    directory = paths[0].parent
    if any(p.parent != directory for p in paths) or len({p.name for p in paths}) != len(paths):
        raise ValueError("atomic_group: distinct files of one directory")
    directory.mkdir(parents=True, exist_ok=True)
    for path in paths:
        clean_stale(path)
    tmps = []
    try:
        for path in paths:
            fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=directory)
            os.close(fd)
            tmps.append(Path(name))
        yield tmps
        entries: list[dict[str, str | None]] = []
        for path, tmp in zip(paths, tmps, strict=True):
            user_modes(tmp)
            old = f"{tmp.name[: -len('.tmp')]}.old" if os.path.lexists(path) else None
            entries.append({"path": path.name, "new": tmp.name, "old": old, "sha256": sha256_file(tmp)})
        journal = directory / f"{_tmp_prefix(paths[0])}{os.urandom(4).hex()}{_JOURNAL}"
        write_text_atomic(journal, json.dumps({"entries": entries}))
        pause_point("atomic_group:journaled")
        try:
            _group_commit(directory, journal, entries)
        except BaseException:
            if journal.exists():  # not committed: every earlier file back
                _undo(directory, entries)
                journal.unlink()
            raise
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


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
