"""The manifest of a bundle, typed: dataclasses, one reader, one writer, the format version and
its migrations. Stdlib only: the runtime reads it on devices.

- Reader: ``parse_manifest(raw, where)`` takes the JSON object of a manifest.json whose bytes were
  read and verified (``runtime.bundle``: bounded size, manifest.sha256, safe JSON), migrates it to
  ``FORMAT_VERSION`` and returns a ``Manifest``, or raises BundleFormatError naming the field
  (``graphs.model.inputs[0]``, ``source.seed``).
- Writer: ``manifest_text(manifest)``: standard JSON (non-finite numbers as null), keys in the
  order of the dataclass fields, unknown keys after them in the order read; ``None`` fields are
  left out (but ``config``, null for a user's module, as every earlier version wrote it).
  ``parse_manifest(json.loads(manifest_text(m))) == m``.
- Unknown keys are kept (``extra``) and written back, so a manifest written by a newer edgeformer
  of the same format version keeps what it said through a ``fuse`` or ``quantize`` by this one.
- Versions: ``MIGRATIONS[n]`` turns a format-n manifest into format n + 1. Format 1 is the only
  format edgeformer has written (since its first release); the fields added since (graph
  ``weights_read_bytes``, ``ort_file`` and ``sliding_window``, ``mobile``, ``quantization``, ``accepted_budget_miss``)
  are optional, so every earlier manifest reads as it is and the table is empty.

The JSON Schema of the same format is ``manifest.schema.json`` beside this file; docs/bundle-format.md
describes every field for app authors. A test checks that the dataclasses and the schema agree.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, get_args, get_origin, get_type_hints

from edgeformer.io import json_text
from edgeformer.runtime.errors import BundleFormatError

FORMAT_VERSION = 1  # the manifest format this edgeformer writes and reads
FAMILIES = ("encoder", "decoder", "encoder-decoder", "custom")
PRECISIONS = ("fp32", "int8", "fp16", "int4")  # edgeformer.targets.PRECISIONS (a test keeps them equal)
DTYPES = (  # numpy names of the ONNX tensor element types a manifest may use
    "float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
)  # fmt: skip
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}  # format n -> its manifest in format n + 1
WRITE_CHECKS: list[Callable[[str], None]] = []  # called with every text the writer makes (the tests validate it)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype, shape (ints are fixed sizes, strings are named dimensions)."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]


@dataclass(frozen=True)
class GraphEntry:
    """One graph of the bundle: its ONNX file, inputs and outputs."""

    file: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    ort_file: str | None = None  # the same graph in onnxruntime's ORT format (mobile and web targets)
    weights_read_bytes: int | None = None  # bytes of weights one run reads (what bandwidth figures divide by)
    # decoders with local attention: {"window": w, "global_tokens": g, "layers": [i, ...]}, the self-attention
    # caches an app may trim to the last w - 1 positions (plus each row's first g real tokens); see runtime/window.py
    sliding_window: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """How the torch source of a bundle is rebuilt (``edgeformer check``); data, never code to run."""

    kind: str | None = None  # "card", "factory" or "huggingface"
    card: str | None = None  # the model card as TOML
    seed: int | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    factory: str | None = None  # module:function, imported only when the user names it again
    io: dict[str, Any] | None = None
    directory: str | None = None
    architecture: str | None = None
    weights_sha256: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """manifest.json. The field order is the key order the writer uses."""

    format_version: int = FORMAT_VERSION
    name: str | None = None
    family: str = "custom"
    # the model config (edgeformer.config.ModelConfig as a dict); written as null for a user's module
    config: dict[str, Any] | None = field(default=None, metadata={"null": True})
    tokenizer: str | None = None  # "bytes", "tokenizer.json" (a file of the bundle), or empty
    precision: str | None = None  # fp32 when absent
    target: dict[str, Any] | None = None  # the deployment target (edgeformer.targets.Target as a dict)
    opset: int | None = None
    providers_tried: tuple[str, ...] | None = None
    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # every file of the bundle -> its sha256
    producer: dict[str, str] | None = None  # package -> version that wrote the bundle
    source: Recipe | None = None
    created: str | None = None  # UTC, ISO 8601
    fusions: dict[str, Any] | None = None  # reports: per graph, what was fused
    quantization: dict[str, Any] | None = None
    accepted_budget_miss: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    mobile: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this manifest (a deep copy: editing it leaves this one as it is)."""
        return _plain(self)


# ----- the writer -----------------------------------------------------------------------------------


def _plain(obj: object) -> Any:
    if isinstance(obj, TensorSpec):
        return {"name": obj.name, "dtype": obj.dtype, "shape": list(obj.shape)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name != "extra" and (value is not None or f.metadata.get("null")):
                out[f.name] = _plain(value)
        out.update((k, copy.deepcopy(v)) for k, v in obj.extra.items() if k not in out)  # type: ignore[attr-defined]  # every dataclass here has extra
        return out
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def manifest_text(manifest: Manifest) -> str:
    """manifest.json's text for ``manifest``: the one writer of the format."""
    text = json_text(manifest.to_dict()) + "\n"
    for check in WRITE_CHECKS:
        check(text)
    return text


# ----- the reader -----------------------------------------------------------------------------------

_WHAT = {str: "a string", int: "an integer", dict: "an object", tuple: "a list"}


def _fail(where: str, message: str) -> NoReturn:
    raise BundleFormatError(f"{where}: {message}")


def _kind(hint: object) -> type:
    """The JSON kind a field annotation holds: str, int, dict or tuple."""
    options = [a for a in get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    base = options[0]
    return get_origin(base) or base  # type: ignore[return-value]  # a class for every annotation used here


def kinds(cls: type) -> dict[str, type]:
    """Field name -> JSON kind, from the dataclass annotations (the one type table)."""
    hints = get_type_hints(cls)
    return {f.name: _kind(hints[f.name]) for f in dataclasses.fields(cls) if f.name != "extra"}


def _is(value: object, kind: type) -> bool:
    if kind is tuple:
        return isinstance(value, list | tuple)
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def _plain_fields(cls: type, raw: dict[str, Any], where: str, prefix: str, skip: tuple[str, ...]) -> dict[str, Any]:
    """The fields of ``cls`` that hold a plain JSON value, type-checked (null reads as absent)."""
    values: dict[str, Any] = {}
    for key, kind in kinds(cls).items():
        value = raw.get(key)
        if key in skip or value is None:
            continue
        if not _is(value, kind):
            label = f"{prefix}.{key}" if prefix else repr(key)
            _fail(where, f"{label} must be {_WHAT[kind]}, got {value!r:.60}")
        values[key] = tuple(value) if kind is tuple else value
    known = {f.name for f in dataclasses.fields(cls)}
    values["extra"] = {k: v for k, v in raw.items() if k not in known}
    return values


def _spec(raw: object, where: str) -> TensorSpec:
    if not isinstance(raw, dict) or not {"name", "dtype", "shape"} <= set(raw):
        _fail(where, f"a tensor spec must give name, dtype and shape, got {raw!r:.80}")
    name, dtype, shape = raw["name"], raw["dtype"], raw["shape"]
    if not isinstance(name, str) or not name:
        _fail(where, f"a tensor name must be a non-empty string, got {name!r:.40}")
    if dtype not in DTYPES:
        _fail(where, f"{name} has dtype {dtype!r:.40}, not one of {', '.join(DTYPES)}")
    dims_ok = isinstance(shape, list | tuple) and all(
        (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or (isinstance(d, str) and d) for d in shape
    )
    if not dims_ok:
        _fail(where, f"{name} has shape {shape!r:.60}, not a list of sizes and dimension names")
    return TensorSpec(name, dtype, tuple(shape))


def _specs(raw: object, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list | tuple):
        _fail(where, "not a list of tensor specs")
    specs = tuple(_spec(s, f"{where}[{i}]") for i, s in enumerate(raw))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        _fail(where, "a tensor name is listed twice")
    return specs


def _whole(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_window(raw: dict[str, Any], at: str, where: str) -> None:
    """A graph's sliding_window: window >= 1, global_tokens >= 0, layers a list of layer indices."""
    if not _whole(raw.get("window"), 1):
        _fail(where, f"{at}.window must be an integer >= 1, got {raw.get('window')!r:.40}")
    if not _whole(raw.get("global_tokens", 0), 0):
        _fail(where, f"{at}.global_tokens must be an integer >= 0, got {raw.get('global_tokens')!r:.40}")
    layers = raw.get("layers")
    if not isinstance(layers, list | tuple) or not all(_whole(i, 0) for i in layers):
        _fail(where, f"{at}.layers must be a list of layer indices, got {layers!r:.60}")


def _graph(name: str, raw: object, where: str) -> GraphEntry:
    at = f"{where}: graphs.{name}"
    if not isinstance(raw, dict) or not isinstance(raw.get("file"), str) or not raw["file"]:
        raise BundleFormatError(f"{where}: graph {name!r} has no file")
    values = _plain_fields(GraphEntry, raw, where, f"graphs.{name}", skip=("inputs", "outputs"))
    wrb = values.get("weights_read_bytes")
    if wrb is not None and wrb < 0:
        _fail(where, f"graphs.{name}.weights_read_bytes must be >= 0, got {wrb}")
    if values.get("sliding_window") is not None:
        _check_window(values["sliding_window"], f"graphs.{name}.sliding_window", where)
    return GraphEntry(
        **values, inputs=_specs(raw.get("inputs"), f"{at}.inputs"), outputs=_specs(raw.get("outputs"), f"{at}.outputs")
    )


def _string_map(raw: object, where: str, key: str, meaning: str) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        _fail(where, f"{key!r} must map {meaning}")
    return dict(raw)


def parse_recipe(raw: dict[str, Any], where: str) -> Recipe:
    """The typed ``source`` of a manifest (its fields checked as the reader checks them)."""
    return Recipe(**_plain_fields(Recipe, raw, where, "source", ()))


def migrate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` in the current format: each migration from its version on, in turn."""
    version = raw.get("format_version")
    while isinstance(version, int) and not isinstance(version, bool) and version in MIGRATIONS:
        raw = MIGRATIONS[version](raw)
        version = raw.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        _fail(
            where,
            f"format_version {version!r:.40} is not {FORMAT_VERSION}; this runtime reads bundles of format "
            f"{', '.join(map(str, [*MIGRATIONS, FORMAT_VERSION]))} (re-export with a matching edgeformer)",
        )
    return raw


_TARGET_KINDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "description": (str,),
    "precision": (str,),
    "opset": (int,),
    "providers": (list, tuple),
    "fusions": (str,),
    "quantization": (str,),
    "static_shapes": (dict,),
    "ort_format": (bool,),
    "ort_optimization": (str,),
}  # the JSON Schema's Target: a key that is present holds a value of its kind (null is not one); the
#   budget is judged by the tools' own table check (budget.budget_table_problem), which names the metric


def _check_target(target: object, where: str) -> None:
    """The recorded target keeps its keys' kinds (the tools read them; the runtime does not)."""
    if target is None:
        return
    if not isinstance(target, dict):
        _fail(where, f"'target' must be an object, got {target!r:.60}")
    for key, kinds_ in _TARGET_KINDS.items():
        value = target.get(key, ...)
        wrong_bool = isinstance(value, bool) and bool not in kinds_
        if value is not ... and (not isinstance(value, kinds_) or wrong_bool):
            _fail(where, f"target.{key} must be {kinds_[0].__name__}, got {value!r:.60}")
    if "providers" in target and not all(isinstance(p, str) for p in target["providers"]):
        _fail(where, f"target.providers must be a list of provider names, got {target['providers']!r:.60}")


def parse_manifest(raw: object, where: str = "manifest.json") -> Manifest:
    """The typed manifest of a manifest.json's JSON object; BundleFormatError names the first wrong field."""
    if not isinstance(raw, dict):
        _fail(where, f"not a JSON object (got {type(raw).__name__})")
    raw = migrate(raw, where)
    skip = ("graphs", "files", "producer", "source", "providers_tried")
    values = _plain_fields(Manifest, raw, where, "", skip)
    if values.get("family", "custom") not in FAMILIES:
        _fail(where, f"family {values['family']!r:.40} is not one of {', '.join(FAMILIES)}")
    if values.get("precision", "fp32") not in PRECISIONS:
        _fail(where, f"precision {values['precision']!r:.40} is not one of {', '.join(PRECISIONS)}")
    providers = raw.get("providers_tried")
    if providers is not None and (
        not isinstance(providers, list | tuple) or not all(isinstance(p, str) for p in providers)
    ):
        _fail(where, f"'providers_tried' must be a list of provider names, got {providers!r:.60}")
    graphs = raw.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        _fail(where, "no graphs listed")
    source = raw.get("source")
    if source is not None and not isinstance(source, dict):
        _fail(where, f"'source' must be an object, got {source!r:.60}")
    _check_target(raw.get("target"), where)
    return Manifest(
        **values,
        graphs={str(name): _graph(str(name), entry, where) for name, entry in graphs.items()},
        files=_string_map(raw.get("files", {}), where, "files", "file names to sha256 digests") or {},
        producer=_string_map(raw.get("producer"), where, "producer", "package names to versions"),
        source=None if source is None else parse_recipe(source, where),
        providers_tried=None if providers is None else tuple(providers),
    )
