"""Reading a bundle on the device: manifest.json and its files, checked, with nothing but the stdlib.

The manifest is written by ``edgeformer.export.bundle`` (format version 1): family, config,
tokenizer, per graph its file and the names, dtypes and symbolic shapes of its inputs and outputs,
and the sha256 of every file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edgeformer.io import sha256_file
from edgeformer.runtime.errors import BundleFormatError, BundleIntegrityError
from edgeformer.runtime.onnxfile import MalformedProtobuf, external_refs

FORMAT_VERSION = 1  # the manifest format this runtime reads (edgeformer.export.bundle.FORMAT_VERSION)
FAMILIES = ("encoder", "decoder", "encoder-decoder", "custom")


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


def check_external_data(root: Path, graph_file: Path, listed: set[str] | None = None) -> list[str]:
    """Refuse a graph whose tensors keep their data outside ``root`` (``../``, absolute paths,
    symbolic links that lead out) or, when ``listed`` is given, in a file the manifest does not
    list (it would escape the sha256 check). Runs before onnxruntime or onnx opens the graph;
    returns the external files (relative to ``root``). ``.ort`` files hold no external data."""
    if graph_file.suffix == ".ort":
        return []
    try:
        refs = external_refs(graph_file)
    except MalformedProtobuf as exc:
        raise BundleFormatError(f"{graph_file} is not a valid ONNX file (truncated or corrupted: {exc})") from None
    except OSError as exc:
        raise BundleFormatError(f"{graph_file} cannot be read ({exc.strerror or exc})") from None
    real_root = root.resolve()
    found: list[str] = []
    for ref in refs:
        where = f"{graph_file.name}: tensor {ref.tensor!r} keeps its data in {ref.location!r}"
        if not ref.location:
            raise BundleIntegrityError(f"{where}, which names no file")
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
        found.append(name)
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


def read_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read ``path/manifest.json``; with ``verify``, check every listed file against its sha256."""
    bundle = Path(path)
    if not bundle.is_dir():
        raise BundleFormatError(f"{bundle} is not a bundle directory")
    manifest_path = bundle / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleFormatError(f"{bundle} has no manifest.json; is it a bundle from `edgeformer export`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"{manifest_path} is not valid JSON ({exc})") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise BundleFormatError(
            f"{manifest_path}: format_version {version!r} is not {FORMAT_VERSION}; "
            "this runtime reads bundles of format 1 (re-export with a matching edgeformer)"
        )
    for key, kind, what in (("name", str, "a string"), ("tokenizer", str, "a string"), ("config", dict, "an object")):
        value = manifest.get(key)
        if value is not None and not isinstance(value, kind):
            raise BundleFormatError(f"{manifest_path}: {key!r} must be {what}, got {value!r:.60}")
    family = manifest.get("family", "custom")
    if family not in FAMILIES:
        raise BundleFormatError(f"{manifest_path}: family {family!r} is not one of {', '.join(FAMILIES)}")
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise BundleFormatError(f"{manifest_path}: 'files' must map file names to sha256 digests")
    for name, digest in files.items():
        file = safe_member(bundle, name)
        if not file.is_file():
            raise BundleIntegrityError(f"{bundle}: {name} is missing (listed in manifest.json)")
        if verify and sha256_file(file) != digest:
            raise BundleIntegrityError(
                f"{bundle}: {name} does not match its sha256 in the manifest (changed or corrupted); re-export it"
            )
    graphs = {}
    raw_graphs = manifest.get("graphs")
    if not isinstance(raw_graphs, dict) or not raw_graphs:
        raise BundleFormatError(f"{manifest_path}: no graphs listed")
    for gname, entry in raw_graphs.items():
        where = f"{manifest_path}: graph {gname!r}"
        if not isinstance(entry, dict) or "file" not in entry:
            raise BundleFormatError(f"{where} has no file")
        file = safe_member(bundle, entry["file"])
        if not file.is_file():
            raise BundleIntegrityError(f"{bundle}: {entry['file']} (graph {gname!r}) is missing")
        if verify and entry["file"] not in files:
            raise BundleIntegrityError(f"{where}: {entry['file']} has no sha256 in the manifest's files")
        check_external_data(bundle, file, set(files) if verify else None)
        ort_file = None
        if entry.get("ort_file") is not None:
            ort_file = safe_member(bundle, entry["ort_file"])
            if not ort_file.is_file() or (verify and entry["ort_file"] not in files):
                raise BundleIntegrityError(
                    f"{where}: its ORT-format file {entry['ort_file']!r} is missing or has no sha256 in the manifest"
                )
        inputs = _specs(entry.get("inputs"), f"{where} inputs")
        graphs[gname] = Graph(gname, file, inputs, _specs(entry.get("outputs"), f"{where} outputs"), ort_file)
    return Bundle(bundle, manifest, graphs)
