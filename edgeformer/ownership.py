"""What edgeformer may replace: only what it wrote. ``--force`` replaces an earlier output, never
the user's own files.

- A bundle directory is ours when it holds a manifest.json edgeformer wrote (a JSON object with
  ``format_version`` and ``producer.edgeformer``) and nothing but the files that manifest lists
  (plus manifest.json and its digest ``manifest.sha256``). An empty directory is ours too.
- A training output directory (``edgeformer train``) is ours on the same terms, its list being
  ``edgeformer-train.json`` (``TRAIN_MARKER``).
- An ONNX file is ours when its ``metadata_props`` carry ``edgeformer.producer`` (``stamp``).
- Anything else at an output path is refused, even with ``--force``, naming what is there.

Standard library only (plus edgeformer.safe_read and the runtime's protobuf reader).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from edgeformer.runtime.onnxfile import STAMP_KEY, MalformedProtobuf, model_metadata
from edgeformer.safe_read import read_json

__all__ = ["STAMP_KEY", "TRAIN_MARKER", "check_bundle_output", "check_file_output", "foreign_entries", "stamped_onnx"]
MANIFEST = "manifest.json"
TRAIN_MARKER = "edgeformer-train.json"
SHOWN = 3  # foreign entries named in a message
WALK_LIMIT = 100_000  # entries looked at before a directory is judged not ours


class _Unreadable(Exception):
    pass


def _listed(directory: Path, marker: str) -> set[str] | None:
    """The files the manifest ``marker`` in ``directory`` lists, or None when it is not one we wrote."""
    try:
        manifest = read_json(directory / marker, what="manifest", error=_Unreadable)
    except _Unreadable:
        return None
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        return None
    producer, files = manifest.get("producer"), manifest.get("files")
    if not isinstance(producer, dict) or "edgeformer" not in producer or not isinstance(files, dict):
        return None
    return {str(name) for name in files} | {marker, marker.replace(".json", ".sha256")}


def _entries(directory: Path) -> list[str]:
    """Every file, link and directory under ``directory`` as relative paths (directories end in
    '/'), not following links; stops after WALK_LIMIT."""
    found: list[str] = []
    for root, dirs, names in os.walk(directory):
        rel = os.path.relpath(root, directory)
        prefix = "" if rel == "." else rel + "/"
        for name in dirs:
            found.append(prefix + name + ("" if os.path.islink(os.path.join(root, name)) else "/"))
        found += [prefix + name for name in names]
        if len(found) > WALK_LIMIT:
            break
    return found


def foreign_entries(directory: Path, marker: str = MANIFEST) -> list[str]:
    """What in ``directory`` edgeformer did not write (empty: the directory is ours to replace)."""
    entries = _entries(directory)
    if not entries:
        return []
    listed = _listed(directory, marker)
    if listed is None:
        return sorted(e for e in entries if e != marker) or [f"{marker} (not one edgeformer wrote)"]
    parents = {p.rsplit("/", i)[0] + "/" for p in listed for i in range(1, p.count("/") + 1)}
    foreign = []
    for entry in entries:
        if entry.endswith("/") and entry in parents:
            continue
        path = directory / entry
        if entry in listed and path.is_file() and not path.is_symlink():
            continue
        foreign.append(entry)
    return sorted(foreign)


def _named(entries: list[str]) -> str:
    more = f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else ""
    return ", ".join(entries[:SHOWN]) + more


def check_bundle_output(out: Path, force: bool, error: type[Exception], marker: str = MANIFEST) -> None:
    """Refuse (``error``) to write a bundle at ``out`` unless nothing is there, or ``force`` and
    what is there is a bundle edgeformer wrote (or an empty directory). ``marker``: the file that
    lists an output directory's files (manifest.json; TRAIN_MARKER for a training output)."""
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        kind = "a symbolic link" if out.is_symlink() else "a file"
        raise error(f"{out} is {kind}, not a bundle directory; choose another -o (nothing was written)")
    if not force:
        raise error(f"{out} already exists; pass --force to replace it")
    foreign = foreign_entries(out, marker)
    if foreign:
        raise error(
            f"{out} holds files edgeformer did not write ({_named(foreign)}); --force replaces only a bundle "
            "edgeformer wrote. Move them or choose another -o"
        )


def stamped_onnx(path: Path) -> bool:
    """Whether ``path`` is an ONNX file edgeformer wrote (its metadata carries STAMP_KEY)."""
    try:
        return STAMP_KEY in model_metadata(path)
    except (OSError, MalformedProtobuf):
        return False


def check_file_output(out: Path, force: bool, error: type[Exception], ours: Callable[[Path], bool]) -> None:
    """Refuse (``error``) to write the file ``out`` over a directory or a special file, over any
    file without ``force``, and with ``force`` over a file ``ours`` does not recognise."""
    if not os.path.lexists(out):
        return
    mode = os.lstat(out).st_mode
    if stat.S_ISDIR(mode):
        raise error(f"{out} is a directory; give the file to write with -o (e.g. {out / 'model.onnx'})")
    if not stat.S_ISREG(mode):
        raise error(f"{out} exists and is not a regular file; choose another -o (nothing was written)")
    if not force:
        raise error(f"{out} already exists; pass --force to replace it")
    if not ours(out):
        raise error(
            f"{out} is not a file edgeformer wrote; --force replaces only edgeformer's own outputs. "
            "Move it or choose another -o"
        )
