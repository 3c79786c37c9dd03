"""``load``: a bundle directory -> the model object of its family, sessions opened and checked."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeformer.runtime.bundle import Bundle, Graph, read_bundle
from edgeformer.runtime.cuda import BoundSession
from edgeformer.runtime.errors import BundleFormatError, OptionError
from edgeformer.runtime.models import DecoderModel, EncoderModel, RuntimeModel, Seq2SeqModel
from edgeformer.runtime.onnxfile import STAMP_KEY, MalformedProtobuf, model_metadata
from edgeformer.runtime.session import open_session

CLASSES: dict[str, type[RuntimeModel]] = {
    "encoder": EncoderModel,
    "decoder": DecoderModel,
    "encoder-decoder": Seq2SeqModel,
    "custom": RuntimeModel,
}
NEEDS: dict[str, dict[str, tuple[str, ...]]] = {  # graph -> inputs the family's class feeds by name
    "encoder": {"model": ("input_ids", "attention_mask")},
    "decoder": {"model": ("input_ids", "attention_mask", "position_ids")},
    "encoder-decoder": {"encoder": ("input_ids", "attention_mask"), "decoder": ("input_ids", "encoder_attention_mask")},
}
SAVED_SUFFIXES = (".onnx", ".ort")


def optimized_path(where: str | Path | None, graph: str, n_graphs: int) -> Path | None:
    """Where to save a graph after onnxruntime's optimizations: ``where`` itself when it names a
    .onnx/.ort file (with the graph name added before the suffix when the bundle has several
    graphs), else ``where/<graph>.optimized.onnx``."""
    if where is None:
        return None
    where = Path(where)
    if where.suffix in SAVED_SUFFIXES:
        return where if n_graphs == 1 else where.with_name(f"{where.stem}.{graph}{where.suffix}")
    return where / f"{graph}.optimized.onnx"


def _check_graphs(bundle: Bundle) -> None:
    for graph, inputs in NEEDS.get(bundle.family, {}).items():
        if graph not in bundle.graphs:
            raise BundleFormatError(f"{bundle.path}: a {bundle.family} bundle needs graph {graph!r}")
        missing = [n for n in inputs if bundle.graphs[graph].input(n) is None]
        if missing:
            raise BundleFormatError(f"{bundle.path}: graph {graph!r} lacks inputs {', '.join(missing)}")
        if "logits" not in bundle.graphs[graph].output_names() and graph != "encoder" and bundle.family != "encoder":
            raise BundleFormatError(f"{bundle.path}: graph {graph!r} has no logits output to generate from")
    if bundle.family != "custom" and not bundle.config:
        raise BundleFormatError(f"{bundle.path}: a {bundle.family} bundle's manifest needs its config")


FORMATS = ("auto", "onnx", "ort")


def bundle_path(value: object) -> Path:
    """``load``'s first argument as a Path: a str, bytes or os.PathLike naming a directory. None,
    other types, an empty string (which would mean the working directory) and NUL are refused."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, str | os.PathLike):
        raise OptionError(
            f"load() takes the path of a bundle directory (str or pathlib.Path), got {type(value).__name__}"
        )
    text = os.fspath(value)
    text = os.fsdecode(text) if isinstance(text, bytes) else text
    if not text:
        raise OptionError('load() was given an empty path; give the path of a bundle directory ("." for this one)')
    if "\0" in text:
        raise OptionError(f"load() was given a path with a NUL byte ({text!r:.80}); no directory has that name")
    try:
        os.stat(text)
    except OSError as exc:  # a missing directory is read_bundle's to report; a name no system takes is ours
        if exc.errno == errno.ENAMETOOLONG:
            raise BundleFormatError(f"{text[:60]!r}... ({len(text)} characters): the path is too long") from None
    return Path(text)


def graph_file(bundle: Bundle, graph: Graph, format: str) -> Path:
    """The file of ``graph`` to open in the given format (see ``load``)."""
    if format == "ort" and graph.path.suffix != ".ort":
        if graph.ort_path is None:
            raise BundleFormatError(
                f"{bundle.path}: graph {graph.name!r} has no .ort file; export with a mobile or web target "
                "(mobile-cpu, android-nnapi, ios-coreml, qnn-int8, web-wasm) or load with format='onnx'"
            )
        return graph.ort_path
    if format == "onnx" and graph.path.suffix != ".onnx":
        raise BundleFormatError(f"{bundle.path}: graph {graph.name!r} is only in the ORT format ({graph.path.name})")
    return graph.path


def _source(bundle: Bundle, graph: Graph, path: Path) -> tuple[Path | bytes, dict[str, bytes] | None]:
    """What onnxruntime opens for ``path``: the verified bytes kept by ``read_bundle`` (and the
    external data by the location the graph names), or the path itself when nothing was kept."""
    data = bundle.blobs.get(path)
    if data is None:
        return path, None
    external = {} if path.suffix == ".ort" else {loc: bundle.blobs[bundle.path / name] for loc, name in graph.external}
    return data, external


ORT_TYPES = {"float": "float32", "double": "float64"}  # onnxruntime's "tensor(x)" -> numpy name


def _check_session(graph: Graph, session: Any) -> None:  # an ort.InferenceSession (untyped)
    """The graph file must take and give what the manifest says: names, element types, ranks and
    fixed sizes (the runtime builds its feeds from the manifest)."""
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    want_in = [s.name for s in graph.inputs]
    if sorted(got_in) != sorted(want_in) or sorted(got_out) != sorted(graph.output_names()):
        raise BundleFormatError(
            f"{graph.path.name} does not match manifest.json: the graph takes {got_in} and gives {got_out}, "
            f"the manifest says {want_in} and {graph.output_names()}"
        )
    specs = {s.name: s for s in (*graph.inputs, *graph.outputs)}
    for arg in [*session.get_inputs(), *session.get_outputs()]:
        spec = specs[arg.name]
        kind = arg.type.removeprefix("tensor(").removesuffix(")")
        dtype = ORT_TYPES.get(kind, kind)
        shape = list(arg.shape or [])
        pairs = zip(shape, spec.shape, strict=False)
        fixed_differ = any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in pairs)
        if dtype != spec.dtype or (shape and len(shape) != len(spec.shape)) or fixed_differ:
            raise BundleFormatError(
                f"{graph.path.name} does not match manifest.json: {arg.name} is {dtype} {shape} in the graph, "
                f"{spec.dtype} {list(spec.shape)} in the manifest"
            )


def _previous_output(path: Path) -> bool:
    """Whether ``path`` is a graph onnxruntime saved for an earlier load: an ORT-format file, or an
    ONNX file carrying edgeformer's stamp (onnxruntime keeps the model's metadata)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        return head[4:8] == b"ORTM" or STAMP_KEY in model_metadata(path)
    except (OSError, MalformedProtobuf):
        return False


def check_optimized_paths(bundle: Path, paths: list[Path]) -> None:
    """Refuse (OptionError) an ``optimized_model_path`` inside the bundle (onnxruntime would write
    over the bundle's own files) or naming an existing file that is not an earlier optimized graph."""
    root = bundle.resolve()
    for path in paths:
        where = path.resolve()
        if where == root or root in where.parents:
            raise OptionError(
                f"optimized_model_path {path} is inside the bundle {bundle}; the bundle's files are not "
                "written over. Give a path outside it"
            )
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file() or not _previous_output(path)):
            raise OptionError(
                f"optimized_model_path {path} exists and is not a graph onnxruntime saved for edgeformer; "
                "it is not written over. Move it or give another path"
            )


def load(
    bundle_dir: str | Path,
    providers: Sequence[str] | str = ("cpu",),
    strict: bool = False,
    threads: int | None = None,
    spinning: bool = True,
    optimization: str = "all",
    optimized_model_path: str | Path | None = None,
    *,
    memory_arena: bool = True,
    verify: bool = True,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    io_binding: bool = False,
    format: str = "auto",
    expect_manifest_sha256: str | None = None,
) -> RuntimeModel:
    """Open a bundle: read manifest.json, check every file's sha256 (``verify``), open one
    session per graph, and return the model of its family (EncoderModel, DecoderModel,
    Seq2SeqModel; RuntimeModel for a user's own module).

    providers: short names in order of preference (cpu, cuda, tensorrt, xnnpack, nnapi, coreml,
    qnn, webgpu, directml). Without ``strict`` a provider that is missing or fails is skipped and
    the CPU provider is the last resort; with ``strict`` that is a ProviderError naming the
    installed providers and where the missing one comes from. threads, spinning, optimization
    (disable, basic, extended, all), memory_arena and optimized_model_path are onnxruntime's
    session options, spelled plainly (see ``session.session_options``).

    provider_options: per provider (short name -> {option: value}), over edgeformer's defaults
    (CUDA: device 0, no TF32 so that fp32 bundles keep their parity; see ``cuda.provider_options``).
    io_binding: run through onnxruntime's IO binding, the KV cache staying on the provider's device
    between generation steps (``cuda.BoundSession``); it works on every provider, CPU included.
    format: which file of each graph to open: "onnx" (the manifest's ``file``), "ort" (its
    ``ort_file``, written by the mobile and web targets: onnxruntime's ORT format, what a minimal
    mobile build runs), or "auto" (the ``file``, whichever format it is).
    expect_manifest_sha256: the sha256 of manifest.json you were given by another channel
    (``edgeformer check`` prints it); the manifest lists every file's sha256, so this pins the
    whole bundle. A different manifest is a BundleIntegrityError.

    With ``verify``, each graph file (and its external data) is read once, checked against its
    sha256, and those bytes are what onnxruntime gets: a file replaced on disk after the check is
    never the one that runs. Without ``verify``, onnxruntime opens the files itself.
    """
    bundle_dir = bundle_path(bundle_dir)
    if format not in FORMATS:
        raise OptionError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if expect_manifest_sha256 is not None and not verify:
        raise OptionError("expect_manifest_sha256 pins the files through their sha256; it needs verify=True")
    bundle = read_bundle(bundle_dir, verify=verify, expect_manifest_sha256=expect_manifest_sha256, keep_bytes=verify)
    _check_graphs(bundle)
    if optimized_model_path is not None:
        saved = [optimized_path(optimized_model_path, name, len(bundle.graphs)) for name in bundle.graphs]
        check_optimized_paths(Path(bundle_dir), [p for p in saved if p is not None])
    session_options = dict(
        strict=strict, threads=threads, spinning=spinning, optimization=optimization, memory_arena=memory_arena,
        provider_options=provider_options,
    )  # fmt: skip
    sessions, outcomes = _open_sessions(bundle, providers, format, optimized_model_path, io_binding, session_options)
    return CLASSES[bundle.family](bundle, sessions, outcomes)


def _open_sessions(
    bundle: Bundle,
    providers: Sequence[str] | str,
    format: str,
    optimized_model_path: str | Path | None,
    io_binding: bool,
    options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    """One checked session per graph (``options``: ``open_session``'s), and what became of each
    provider: the first graph's outcome, unless a later graph's failed."""
    sessions: dict[str, Any] = {}
    outcomes: dict[str, str] = {}
    for name, graph in bundle.graphs.items():
        file = graph_file(bundle, graph, format)
        model, external = _source(bundle, graph, file)
        session, graph_outcomes = open_session(
            model,
            providers,
            label=file.name,
            external_data=external,
            optimized_model_path=optimized_path(optimized_model_path, name, len(bundle.graphs)),
            precision=bundle.typed.precision or "fp32",
            **options,
        )
        _check_session(graph, session)
        sessions[name] = BoundSession(session) if io_binding else session
        for provider, outcome in graph_outcomes.items():
            if outcomes.get(provider) in (None, "used", "not tried"):
                outcomes[provider] = outcome
    return sessions, outcomes
