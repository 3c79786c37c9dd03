"""Reading a bundle on the device: manifest.json and its files, checked, with nothing but the stdlib.

The manifest's format is ``edgeformer.runtime.manifest`` (typed, one reader and one writer, the
format version and its migrations; docs/bundle-format.md): family, config, tokenizer, per graph
its file and the names, dtypes and symbolic shapes of its inputs and outputs, the sha256 of
every file. This module reads the bytes safely and checks the files on disk; edgeformer.export.manifest_write
writes them.

Beside it, ``manifest.sha256`` holds the sha256 of manifest.json's bytes exactly as they are on
disk, in the format of ``sha256sum`` (64 lowercase hex digits, two spaces, ``manifest.json``, a
newline), so an app in any language verifies it without a canonical JSON form, and
``sha256sum -c manifest.sha256`` does too. The manifest lists the sha256 of every other file, so
one digest covers the whole bundle: a receiver who got that digest from the sender by another
channel pins the bundle with ``expect_manifest_sha256`` (``edgeformer check --expect-sha256``).
Without a pin the digest detects corruption and careless edits, not a forger (who rewrites both
files). A bundle without manifest.sha256 (edgeformer < 0.2) is read with an
``UnverifiedManifestWarning``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edgeformer.io import sha256_file
from edgeformer.runtime.errors import BundleFormatError, BundleIntegrityError, UnverifiedManifestWarning
from edgeformer.runtime.manifest import GraphEntry, Manifest, TensorSpec, parse_manifest
from edgeformer.runtime.onnxfile import MalformedProtobuf, external_refs, external_refs_of
from edgeformer.safe_read import loads_json, os_reason, read_bytes, read_text

DIGEST_FILE = "manifest.sha256"
MANIFEST_MAX_BYTES = 16 << 20  # an edgeformer manifest is kilobytes
ORT_MEMORY_TAG = "*/_ORT_MEM_ADDR_/*"  # onnxruntime reads a raw memory address for this location
NOT_FROM_MEMORY = (  # onnxruntime 1.32 opens such files itself, by path, after edgeformer checked them
    "{graph} keeps the data of a node attribute, a function default, a subgraph or a sparse tensor in "
    "{name}; onnxruntime takes external data from verified memory for the main graph's initializers only, "
    "so edgeformer does not load it: save the graph with external data in initializers only "
    "(onnx.save_model(..., save_as_external_data=True, convert_attribute=False))"
)


Spec = TensorSpec  # one graph input or output as the manifest describes it


@dataclass(frozen=True)
class Graph:
    name: str
    path: Path
    inputs: tuple[Spec, ...]
    outputs: tuple[Spec, ...]
    ort_path: Path | None = None  # the same graph in onnxruntime's ORT format (mobile and web targets)
    external: tuple[tuple[str, str], ...] = ()  # (location as the graph writes it, file name in the bundle)

    def input(self, name: str) -> Spec | None:
        return next((s for s in self.inputs if s.name == name), None)

    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]


@dataclass(frozen=True)
class Bundle:
    """A checked bundle directory: its manifest and its graphs."""

    path: Path
    manifest: dict[str, Any]  # the JSON object of ``typed`` (migrated to the current format version)
    graphs: dict[str, Graph]
    manifest_sha256: str = ""  # of manifest.json's bytes as read
    manifest_stamped: bool = False  # manifest.sha256 was there and matched
    # with ``keep_bytes``: graph files and their external data, verified; the loader hands these
    # very bytes to onnxruntime, so a file swapped on disk after the check is never what runs
    blobs: dict[Path, bytes] = field(default_factory=dict, repr=False, compare=False)
    typed: Manifest = field(default_factory=Manifest, repr=False, compare=False)  # what the typed reader read

    @property
    def name(self) -> str:
        return self.typed.name or self.path.name

    @property
    def family(self) -> str:
        return self.typed.family

    @property
    def config(self) -> dict[str, Any]:
        return self.typed.config or {}

    @property
    def tokenizer(self) -> str:
        return self.typed.tokenizer or ""


def safe_member(bundle: Path, name: object) -> Path:
    """The path of a file the manifest names, refusing anything that could leave the bundle."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise BundleIntegrityError(f"{bundle}: manifest names a file {name!r} that is not a plain file name")
    for flavour in (PurePosixPath, PureWindowsPath):
        pure = flavour(name)
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            raise BundleIntegrityError(f"{bundle}: manifest file {name!r} points outside the bundle (refused)")
    path = bundle / name
    if os.path.lexists(path) and bundle.resolve() not in path.resolve().parents:
        raise BundleIntegrityError(f"{bundle}: manifest file {name!r} is a link that leads outside the bundle")
    return path


def check_external_data(
    root: Path, graph_file: Path, listed: set[str] | None = None, data: bytes | None = None
) -> list[str]:
    """Refuse a graph whose tensors keep their data outside ``root`` (``../``, absolute paths,
    symbolic links that lead out, onnxruntime's in-memory address tag) or, when ``listed`` is
    given, in a file the manifest does not list (it would escape the sha256 check). Runs before
    onnxruntime or onnx opens the graph, on ``data`` (the graph's bytes) when given; returns the
    external files (relative to ``root``). ``.ort`` files hold no external data."""
    return [name for _, name, _ in external_members(root, graph_file, listed, data)]


def external_members(
    root: Path, graph_file: Path, listed: set[str] | None = None, data: bytes | None = None
) -> list[tuple[str, str, bool]]:
    """``check_external_data``, as (location written in the graph, file name under ``root``,
    whether the tensor is a dense initializer of the main graph)."""
    if graph_file.suffix == ".ort":
        return []
    try:
        refs = external_refs_of(data) if data is not None else external_refs(graph_file)
    except MalformedProtobuf as exc:
        raise BundleFormatError(f"{graph_file} is not a valid ONNX file (truncated or corrupted: {exc})") from None
    except OSError as exc:
        raise BundleFormatError(f"{graph_file} cannot be read ({exc.strerror or exc})") from None
    real_root = root.resolve()
    found: list[tuple[str, str, bool]] = []
    for ref in refs:
        where = f"{graph_file.name}: tensor {ref.tensor!r} keeps its data in {ref.location!r}"
        if not ref.location:
            raise BundleIntegrityError(f"{where}, which names no file")
        if ref.location.startswith("*/") or ORT_MEMORY_TAG in ref.location:
            raise BundleIntegrityError(f"{where}, onnxruntime's tag for a raw memory address (refused)")
        try:
            member = safe_member(graph_file.parent, ref.location)
        except BundleIntegrityError:
            raise BundleIntegrityError(f"{where}, outside {root} (refused)") from None
        real = member.resolve()
        if real != real_root and real_root not in real.parents:
            raise BundleIntegrityError(f"{where}, a link that leads outside {root} (refused)")
        if not real.is_file():
            raise BundleIntegrityError(f"{where}, which is missing")
        name = real.relative_to(real_root).as_posix()
        if listed is not None and name not in listed:
            raise BundleIntegrityError(f"{where}, a file manifest.json does not list (so no sha256 checks it)")
        found.append((ref.location, name, ref.initializer))
    return found


def digest_line(manifest_bytes: bytes) -> str:
    """The content of manifest.sha256 for these manifest.json bytes."""
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  manifest.json\n"


def stamp_manifest(bundle: str | Path) -> str:
    """Write manifest.sha256 for the manifest.json now in ``bundle``; returns the digest. (Every
    edgeformer writer of a bundle calls this through ``export.manifest_write.write_manifest``.)"""
    bundle = Path(bundle)
    line = digest_line((bundle / "manifest.json").read_bytes())
    (bundle / DIGEST_FILE).write_text(line, encoding="ascii")
    return line.split()[0]


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_digest(bundle: Path, digest: str, expect: str | None) -> bool:
    """Compare manifest.json's digest with manifest.sha256 (when there) and with ``expect``;
    whether manifest.sha256 was there."""
    if expect is not None:
        if not isinstance(expect, str) or not _HEX64.fullmatch(expect.strip().lower()):
            raise BundleIntegrityError(f"the expected manifest sha256 {expect!r:.80} is not 64 hex digits")
        if expect.strip().lower() != digest:
            raise BundleIntegrityError(
                f"{bundle}/manifest.json has sha256 {digest}, not the expected {expect.strip().lower()}: "
                "this is not the bundle whose digest you were given (changed or replaced); do not use it"
            )
    path = bundle / DIGEST_FILE
    if not os.path.lexists(path):
        warnings.warn(
            f"{bundle}/manifest.json carries no digest ({DIGEST_FILE}; written by edgeformer < 0.2): "
            "its files are verified, but edits of the manifest itself cannot be detected",
            UnverifiedManifestWarning,
            stacklevel=3,
        )
        return False
    text = read_text(path, what="manifest digest", error=BundleIntegrityError, max_bytes=4096)
    recorded = text.split()[0].lower() if text.split() else ""
    if not _HEX64.fullmatch(recorded):
        raise BundleIntegrityError(f"{path} does not hold a sha256 (64 hex digits); re-export the bundle")
    if recorded != digest:
        raise BundleIntegrityError(
            f"{bundle}/manifest.json does not match its sha256 in {DIGEST_FILE} (edited or corrupted); "
            "re-export the bundle, or ask its sender for an intact copy"
        )
    return True


def _read_manifest(bundle: Path, expect: str | None) -> tuple[dict[str, Any], str, bool]:
    manifest_path = bundle / "manifest.json"
    if not os.path.lexists(manifest_path):
        raise BundleFormatError(f"{bundle} has no manifest.json; is it a bundle from `edgeformer export`?")
    raw = read_bytes(manifest_path, what="manifest", error=BundleFormatError, max_bytes=MANIFEST_MAX_BYTES)
    digest = hashlib.sha256(raw).hexdigest()
    stamped = _check_digest(bundle, digest, expect)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleFormatError(f"{manifest_path} is not valid JSON (not UTF-8 at byte {exc.start})") from None
    manifest = loads_json(text, where=str(manifest_path), error=BundleFormatError)
    return manifest, digest, stamped


def read_verified(file: Path, name: str, digest: str | None, bundle: Path) -> bytes:
    """The bytes of a bundle file, read once, checked against ``digest`` (when given)."""
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BundleIntegrityError(f"{bundle}: {name} cannot be opened ({os_reason(exc)})") from None
    with open(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleIntegrityError(f"{bundle}: {name} is not a regular file")
        try:
            data = f.read()
        except OSError as exc:
            raise BundleIntegrityError(f"{bundle}: {name} cannot be read ({os_reason(exc)})") from None
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise BundleIntegrityError(
            f"{bundle}: {name} does not match its sha256 in the manifest (changed or corrupted); re-export it"
        )
    return data


def _graph(bundle: Path, gname: str, entry: GraphEntry, files: dict[str, str], verify: bool) -> Graph:
    where = f"{bundle / 'manifest.json'}: graph {gname!r}"
    file = safe_member(bundle, entry.file)
    if not file.is_file():
        raise BundleIntegrityError(f"{bundle}: {entry.file} (graph {gname!r}) is missing")
    if verify and entry.file not in files:
        raise BundleIntegrityError(f"{where}: {entry.file} has no sha256 in the manifest's files")
    ort_file = None
    if entry.ort_file is not None:
        ort_file = safe_member(bundle, entry.ort_file)
        if not ort_file.is_file() or (verify and entry.ort_file not in files):
            raise BundleIntegrityError(
                f"{where}: its ORT-format file {entry.ort_file!r} is missing or has no sha256 in the manifest"
            )
    return Graph(gname, file, entry.inputs, entry.outputs, ort_file)


def read_bundle(
    path: str | Path, *, verify: bool = True, expect_manifest_sha256: str | None = None, keep_bytes: bool = False
) -> Bundle:
    """Read ``path/manifest.json`` (checked against manifest.sha256, and against
    ``expect_manifest_sha256`` when given) with the typed reader (``runtime.manifest``); with
    ``verify``, check every listed file against its sha256. With ``keep_bytes`` (and ``verify``),
    the graph files and their external data are read once, verified, and kept in ``Bundle.blobs``
    for onnxruntime."""
    bundle = Path(path)
    if not bundle.is_dir():
        raise BundleFormatError(f"{bundle} is not a bundle directory")
    raw, digest, stamped = _read_manifest(bundle, expect_manifest_sha256)
    typed = parse_manifest(raw, str(bundle / "manifest.json"))
    files = typed.files
    for name in files:
        if not safe_member(bundle, name).is_file():
            raise BundleIntegrityError(f"{bundle}: {name} is missing (listed in manifest.json)")
    graphs = {gname: _graph(bundle, gname, entry, files, verify) for gname, entry in typed.graphs.items()}
    keep = keep_bytes and verify
    blobs: dict[Path, bytes] = {}
    if verify and not keep:  # a changed file is named as such before its contents are parsed
        _verify_files(bundle, files, blobs)
    for gname, graph in graphs.items():
        entry = typed.graphs[gname]
        names = [entry.file, *([entry.ort_file] if entry.ort_file is not None else [])]
        for name in names if keep else ():
            blobs.setdefault(bundle / name, read_verified(bundle / name, name, files[name], bundle))
        data = blobs.get(bundle / names[0])
        external = external_members(bundle, graph.path, set(files) if verify else None, data)
        for _, name, initializer in external if keep else ():
            if not initializer:
                raise BundleFormatError(NOT_FROM_MEMORY.format(graph=graph.path.name, name=name))
            blobs.setdefault(bundle / name, read_verified(bundle / name, name, files[name], bundle))
        pairs = tuple((location, name) for location, name, _ in external)
        graphs[gname] = Graph(graph.name, graph.path, graph.inputs, graph.outputs, graph.ort_path, pairs)
    if keep:
        _verify_files(bundle, files, blobs)
    return Bundle(bundle, typed.to_dict(), graphs, digest, stamped, blobs, typed)


def _verify_files(bundle: Path, files: dict[str, str], done: dict[Path, bytes]) -> None:
    """Check every listed file not already read and verified (in ``done``) against its sha256."""
    for name, want in files.items():
        if bundle / name not in done and sha256_file(bundle / name) != want:
            raise BundleIntegrityError(
                f"{bundle}: {name} does not match its sha256 in the manifest (changed or corrupted); re-export it"
            )
