"""Writing a bundle: its graphs (stamped as edgeformer's), the file hashes, and manifest.json.

manifest.json: format version; the card and config; per graph its file, inputs and outputs (name,
dtype, symbolic shape); precision, target, opset, providers; producer versions; sha256 of every
file; how to rebuild the torch source; the reports (parity, fusions, quantization, timings).
"""

from __future__ import annotations

import contextlib
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from edgeformer import __version__
from edgeformer.errors import ExportError
from edgeformer.export.weight_reads import graph_weights_read
from edgeformer.io import atomic_dir, sha256_file
from edgeformer.ownership import STAMP_KEY, check_bundle_output
from edgeformer.runtime.bundle import stamp_manifest
from edgeformer.runtime.manifest import (
    FORMAT_VERSION,
    GraphEntry,
    Manifest,
    TensorSpec,
    manifest_text,
    parse_manifest,
    parse_recipe,
)
from edgeformer.targets import Target

if TYPE_CHECKING:  # the type only: writing a manifest needs no torch
    from edgeformer.export.source import Source

EXTERNAL_DATA_BYTES = 1 << 30  # weights beyond 1 GiB go to <graph>.onnx.data (protobuf stops at 2 GiB)


def versions() -> dict[str, str]:
    import onnx  # the producer's versions, read when a bundle is written: not on every import
    import onnxruntime
    import onnxscript
    import torch

    return {
        "edgeformer": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "onnx_ir": ir.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def stamp(model: ir.Model) -> None:
    """Mark a graph as edgeformer's (``ownership.STAMP_KEY`` in its metadata), so that ``--force``
    may later replace the file and nothing else."""
    model.metadata_props[STAMP_KEY] = __version__


def save_graph(model: ir.Model, path: Path) -> list[str]:
    """Write one graph; weights over EXTERNAL_DATA_BYTES go to <file>.data. Returns the files written."""
    stamp(model)
    if weight_bytes(model) > EXTERNAL_DATA_BYTES:
        ir.save(model, path, external_data=f"{path.name}.data")
        return [path.name, f"{path.name}.data"]
    ir.save(model, path)
    return [path.name]


def file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in names}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """Write ``manifest`` into the bundle ``directory``, with each graph's ``weights_read_bytes``
    (export/weight_reads.py: what the benchmark divides weight-reading bandwidth by) measured from
    the graph file as it is now, and manifest.sha256 beside it (the sha256 of manifest.json's
    bytes, in ``sha256sum`` format; see ``edgeformer.runtime.bundle``). Every writer of a bundle
    (export, fuse, quantize, the mobile targets through export) comes here. Returns the digest:
    give it to the bundle's receivers by another channel, and they pin the bundle with
    ``edgeformer check --expect-sha256`` / ``runtime.load(..., expect_manifest_sha256=...)``."""
    for graph in manifest.get("graphs", {}).values():
        path = directory / graph["file"]
        if path.suffix == ".onnx" and path.is_file():
            graph["weights_read_bytes"] = graph_weights_read(path)
    text = manifest_text(parse_manifest(manifest, f"{directory}/manifest.json"))  # the typed reader and writer
    (directory / "manifest.json").write_text(text, encoding="utf-8")
    return stamp_manifest(directory)


def build_manifest(source: Source, target: Target, files: list[str], directory: Path) -> dict[str, Any]:
    """The typed manifest of a bundle just traced, as its JSON object (the stages add their reports)."""
    graphs = {
        plan.name: GraphEntry(
            plan.file,
            tuple(TensorSpec(s.name, s.dtype, tuple(s.shape)) for s in plan.inputs),
            tuple(TensorSpec(s.name, s.dtype, tuple(s.shape)) for s in plan.outputs),
            sliding_window=plan.sliding_window,
        )
        for plan in source.plans
    }
    return Manifest(
        format_version=FORMAT_VERSION,
        name=source.name,
        family=source.config.family if source.config else "custom",
        config=source.config.to_dict() if source.config else None,
        tokenizer=source.tokenizer,
        precision=target.precision,
        target=target.to_dict(),
        opset=target.opset,
        providers_tried=tuple(target.providers),
        graphs=graphs,
        files=file_hashes(directory, files),
        producer=versions(),
        source=parse_recipe(source.recipe, "the export's source"),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    ).to_dict()


def new_bundle_dir(out: Path, force: bool) -> contextlib.AbstractContextManager[Path]:
    """The temporary directory a bundle is written to, renamed to ``out`` when complete. What is
    at ``out`` is replaced only with ``force`` and only when it is a bundle edgeformer wrote
    (``edgeformer.ownership``); anything else is refused before a byte is written."""
    check_bundle_output(out, force, ExportError)
    return atomic_dir(out)
