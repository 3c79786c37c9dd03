"""Reading a bundle on the device: manifest.json and its files, checked, with nothing but the stdlib.

The manifest is written by ``edgeformer.export.manifest_write`` (format version 1): family, config,
tokenizer, per graph its file and the names, dtypes and symbolic shapes of its inputs and outputs,
and the sha256 of every file.

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
from edgeformer.runtime.onnxfile import MalformedProtobuf, external_refs, external_refs_of
from edgeformer.safe_read import loads_json, os_reason, read_bytes, read_text

FORMAT_VERSION = 1  # the manifest format this runtime reads (edgeformer.export.manifest_write.FORMAT_VERSION)
FAMILIES = ("encoder", "decoder", "encoder-decoder", "custom")
DIGEST_FILE = "manifest.sha256"
MANIFEST_MAX_BYTES = 16 << 20  # an edgeformer manifest is kilobytes
ORT_MEMORY_TAG = "*/_ORT_MEM_ADDR_/*"  # onnxruntime reads a raw memory address for this location
NOT_FROM_MEMORY = (  # onnxruntime 1.32 opens such files itself, by path, after edgeformer checked them
    "{graph} keeps the data of a node attribute, a function default, a subgraph or a sparse tensor in "
    "{name}; onnxruntime takes external data from verified memory for the main graph's initializers only, "
    "so edgeformer does not load it: save the graph with external data in initializers only "
    "(onnx.save_model(..., save_as_external_data=True, convert_attribute=False))"
)


@dataclass(frozen=True)
class Spec:
    """One graph input or output as the manifest describes it."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[str | int, ...]  # symbolic dimensions are names, fixed ones are ints


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
    manifest: dict[str, Any]
    graphs: dict[str, Graph]
    manifest_sha256: str = ""  # of manifest.json's bytes as read
    manifest_stamped: bool = False  # manifest.sha256 was there and matched
    # with ``keep_bytes``: graph files and their external data, verified; the loader hands these
    # very bytes to onnxruntime, so a file swapped on disk after the check is never what runs
    blobs: dict[Path, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def family(self) -> str:
        return str(self.manifest.get("family", "custom"))

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config") or {}

    @property
    def tokenizer(self) -> str:
        return str(self.manifest.get("tokenizer") or "")


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


DTYPES = (  # numpy names of the ONNX tensor element types a manifest may use
    "float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
)  # fmt: skip


def _spec(raw: object, where: str) -> Spec:
    if not isinstance(raw, dict) or not {"name", "dtype", "shape"} <= set(raw):
        raise BundleFormatError(f"{where}: a tensor spec must give name, dtype and shape, got {raw!r:.80}")
    name, dtype, shape = raw["name"], raw["dtype"], raw["shape"]
    if not isinstance(name, str) or not name:
        raise BundleFormatError(f"{where}: a tensor name must be a non-empty string, got {name!r:.40}")
    if dtype not in DTYPES:
        raise BundleFormatError(f"{where}: {name} has dtype {dtype!r:.40}, not one of {', '.join(DTYPES)}")
    dims_ok = isinstance(shape, list) and all(
        (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or (isinstance(d, str) and d) for d in shape
    )
    if not dims_ok:
        raise BundleFormatError(f"{where}: {name} has shape {shape!r:.60}, not a list of sizes and dimension names")
    return Spec(name, dtype, tuple(shape))


def _specs(raw: object, where: str) -> tuple[Spec, ...]:
    if not isinstance(raw, list):
        raise BundleFormatError(f"{where} is not a list of tensor specs")
    specs = tuple(_spec(s, where) for s in raw)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BundleFormatError(f"{where}: a tensor name is listed twice")
    return specs


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


def _check_fields(manifest: object, manifest_path: Path) -> dict[str, Any]:
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise BundleFormatError(
            f"{manifest_path}: format_version {version!r:.40} is not {FORMAT_VERSION}; "
            "this runtime reads bundles of format 1 (re-export with a matching edgeformer)"
        )
    assert isinstance(manifest, dict)
    for key, kind, what in (("name", str, "a string"), ("tokenizer", str, "a string"), ("config", dict, "an object")):
        value = manifest.get(key)
        if value is not None and not isinstance(value, kind):
            raise BundleFormatError(f"{manifest_path}: {key!r} must be {what}, got {value!r:.60}")
    family = manifest.get("family", "custom")
    if family not in FAMILIES:
        raise BundleFormatError(f"{manifest_path}: family {family!r:.40} is not one of {', '.join(FAMILIES)}")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        raise BundleFormatError(f"{manifest_path}: 'files' must map file names to sha256 digests")
    return files


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


def _graph(bundle: Path, gname: str, entry: object, files: dict[str, str], verify: bool) -> Graph:
    where = f"{bundle / 'manifest.json'}: graph {gname!r}"
    if not isinstance(entry, dict) or "file" not in entry:
        raise BundleFormatError(f"{where} has no file")
    file = safe_member(bundle, entry["file"])
    if not file.is_file():
        raise BundleIntegrityError(f"{bundle}: {entry['file']} (graph {gname!r}) is missing")
    if verify and entry["file"] not in files:
        raise BundleIntegrityError(f"{where}: {entry['file']} has no sha256 in the manifest's files")
    ort_file = None
    if entry.get("ort_file") is not None:
        ort_file = safe_member(bundle, entry["ort_file"])
        if not ort_file.is_file() or (verify and entry["ort_file"] not in files):
            raise BundleIntegrityError(
                f"{where}: its ORT-format file {entry['ort_file']!r} is missing or has no sha256 in the manifest"
            )
    inputs = _specs(entry.get("inputs"), f"{where} inputs")
    return Graph(gname, file, inputs, _specs(entry.get("outputs"), f"{where} outputs"), ort_file)


def read_bundle(
    path: str | Path, *, verify: bool = True, expect_manifest_sha256: str | None = None, keep_bytes: bool = False
) -> Bundle:
    """Read ``path/manifest.json`` (checked against manifest.sha256, and against
    ``expect_manifest_sha256`` when given); with ``verify``, check every listed file against its
    sha256. With ``keep_bytes`` (and ``verify``), the graph files and their external data are read
    once, verified, and kept in ``Bundle.blobs`` for onnxruntime."""
    bundle = Path(path)
    if not bundle.is_dir():
        raise BundleFormatError(f"{bundle} is not a bundle directory")
    manifest, digest, stamped = _read_manifest(bundle, expect_manifest_sha256)
    files = _check_fields(manifest, bundle / "manifest.json")
    for name in files:
        if not safe_member(bundle, name).is_file():
            raise BundleIntegrityError(f"{bundle}: {name} is missing (listed in manifest.json)")
    raw_graphs = manifest.get("graphs")
    if not isinstance(raw_graphs, dict) or not raw_graphs:
        raise BundleFormatError(f"{bundle / 'manifest.json'}: no graphs listed")
    graphs = {gname: _graph(bundle, gname, entry, files, verify) for gname, entry in raw_graphs.items()}
    keep = keep_bytes and verify
    blobs: dict[Path, bytes] = {}
    if verify and not keep:  # a changed file is named as such before its contents are parsed
        _verify_files(bundle, files, blobs)
    for gname, graph in graphs.items():
        names = [raw_graphs[gname]["file"], *([raw_graphs[gname]["ort_file"]] if graph.ort_path else [])]
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
    return Bundle(bundle, manifest, graphs, digest, stamped, blobs)


def _verify_files(bundle: Path, files: dict[str, str], done: dict[Path, bytes]) -> None:
    """Check every listed file not already read and verified (in ``done``) against its sha256."""
    for name, want in files.items():
        if bundle / name not in done and sha256_file(bundle / name) != want:
            raise BundleIntegrityError(
                f"{bundle}: {name} does not match its sha256 in the manifest (changed or corrupted); re-export it"
            )
