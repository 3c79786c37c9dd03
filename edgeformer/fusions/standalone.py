"""The fusion stage on its own: any .onnx file (including ones exported by other tools) or a bundle."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from edgeformer.errors import BundleError, ExportError
from edgeformer.export.manifest_read import read_checked
from edgeformer.export.manifest_write import file_hashes, new_bundle_dir, save_graph, stamp, write_manifest
from edgeformer.fusions.pipeline import FusionReport, fuse_model
from edgeformer.io import atomic_path
from edgeformer.ownership import check_bundle_output, check_file_output, stamped_onnx
from edgeformer.paths import refuse_overlap
from edgeformer.runtime.bundle import check_external_data

_NP = {
    ir.DataType.FLOAT: np.float32,
    ir.DataType.INT64: np.int64,
    ir.DataType.INT32: np.int32,
    ir.DataType.BOOL: np.bool_,
}


def _size(name: str, axis: int) -> int:
    lowered = name.lower()
    if "past" in lowered:
        return 3
    if axis == 0 or "batch" in lowered:
        return 2
    if "total" in lowered:
        return 10  # past (3) + sequence (7)
    return 7


def check_sizes(model: ir.Model, dims: dict[str, int] | None = None) -> dict[str, int]:
    """The size the fusion check gives each named dimension of the graph's inputs: ``dims`` where
    it names one, else a small guess (batch 2, sequence 7, past 3)."""
    dims = dims or {}
    sizes: dict[str, int] = {}
    for value in model.graph.inputs:
        for axis, dim in enumerate(value.shape.dims if value.shape is not None else ()):
            if not isinstance(dim, int):
                sizes.setdefault(str(dim), dims.get(str(dim), _size(str(dim), axis)))
    return sizes


def refuse_unknown_dims(dims: dict[str, int] | None, models: list[ir.Model]) -> None:
    """A ``--dim`` naming no input dimension of any of ``models`` is a typo: say which names exist."""
    names = {name for model in models for name in check_sizes(model)}
    unknown = sorted(set(dims or {}) - names)
    if unknown:
        have = ", ".join(sorted(names)) or "none: every input dimension is fixed"
        raise ExportError(f"--dim {unknown[0]}: the graph's inputs have no dimension of that name (they have {have})")


def graph_feeds(model: ir.Model, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Plausible random inputs for any graph: named dimensions get the sizes of ``check_sizes``
    (``dims``, else small guesses), masks are ones, ids are small non-negative integers."""
    rng = np.random.default_rng(seed)
    sizes = check_sizes(model, dims)
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.inputs:
        name = value.name or ""  # (onnx_ir reads a nameless input as "")
        if value.shape is None or value.dtype not in _NP:
            raise ExportError(f"input {name!r} has no known shape or a dtype the fusion check cannot feed")
        shape = tuple(d if isinstance(d, int) else sizes[str(d)] for d in value.shape.dims)
        dtype = _NP[value.dtype]
        lowered = name.lower()
        if "mask" in lowered:
            feeds[name] = np.ones(shape, dtype=dtype)
        elif "position" in lowered and len(shape) == 2:
            feeds[name] = np.broadcast_to(np.arange(shape[1], dtype=dtype), shape).copy()
        elif np.issubdtype(dtype, np.integer):
            feeds[name] = rng.integers(0, 50, shape, dtype=dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def load_onnx(path: Path) -> ir.Model:
    try:
        return ir.load(path)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise ExportError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None


def _fuse_checked(
    model: ir.Model, form: str, dims: dict[str, int] | None, *, debug: bool, providers: tuple[str, ...], log: Any
) -> FusionReport:
    """fuse_model with per-pass parity on graph_feeds; where the source graph does not run on
    them, the report says which sizes the check used and how to give others."""
    report = fuse_model(model, form, feeds=[graph_feeds(model, dims=dims)], debug=debug, providers=providers, log=log)
    sizes = check_sizes(model, dims)
    if report.parity_not_checked and sizes:
        used = ", ".join(f"{name}={size}" for name, size in sizes.items())
        report.parity_not_checked += f"; the check fed {used}: give the sizes the graph takes with --dim NAME=SIZE"
    return report


def refuse_file_paths(src: Path, out: Path) -> None:
    """Before any work: ``out`` must be a file path that is not ``src`` (fuse FILE writes one file)."""
    refuse_overlap(src, out, ExportError)
    if os.path.isdir(out):
        raise ExportError(
            f"{out} is a directory; fusing a graph file writes one .onnx file: give -o a file path, "
            f"e.g. {out / (src.stem + '.fused.onnx')}"
        )


def fuse_file(
    src: Path,
    out: Path,
    form: str = "contrib",
    *,
    providers: tuple[str, ...] = ("cpu",),
    dims: dict[str, int] | None = None,
    force: bool = False,
    debug: bool = False,
    log: Any = print,
) -> FusionReport:
    """Fuse one .onnx file into ``out``. An existing ``out`` is replaced only with ``force`` and
    only when it is an ONNX file edgeformer wrote (``edgeformer.ownership``)."""
    refuse_file_paths(src, out)
    check_file_output(out, force, ExportError, stamped_onnx)  # before the work, not after it
    check_external_data(src.parent, src)  # external data outside the file's folder is refused unread
    model = load_onnx(src)
    refuse_unknown_dims(dims, [model])
    with refused_if_unwritable(src):
        report = _fuse_checked(model, form, dims, debug=debug, providers=providers, log=log)
    stamp(model)
    with atomic_path(out) as tmp:
        save_fused(model, tmp, src)
    return report


@contextlib.contextmanager
def refused_if_unwritable(src: Path) -> Iterator[None]:
    """A graph onnx-ir reads but cannot serialise (a damaged file: text fields that are not UTF-8, say)
    is refused by name, whether a pass (shape inference serialises the graph) or the final write
    meets it first; the output is left untouched."""
    try:
        yield
    except (ir.serde.SerdeError, UnicodeError) as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ExportError(
            f"{src}: the graph cannot be written back ({type(cause).__name__}: {str(cause)[:160]}); "
            "the file is damaged: export it again from its source"
        ) from None


def save_fused(model: ir.Model, path: Path, src: Path) -> None:
    """Write the fused graph (refused by name when it cannot be serialised)."""
    with refused_if_unwritable(src):
        try:
            ir.save(model, path)
        except ValueError as exc:
            raise ir.serde.SerdeError(str(exc)) from exc


def fuse_bundle(
    src: Path,
    out: Path,
    form: str = "contrib",
    *,
    providers: tuple[str, ...] | None = None,
    dims: dict[str, int] | None = None,
    force: bool = False,
    debug: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Fuse every graph of a bundle into a new bundle; the manifest records the reports.
    ``providers`` default to the bundle target's (cpu where it names none)."""
    refuse_overlap(src, out, BundleError)
    check_bundle_output(out, force, ExportError)  # before the work: refused now, not after it
    typed = read_checked(src).typed  # the typed manifest (edgeformer.runtime.manifest)
    if typed.fusions:
        raise BundleError(f"{src} is already fused ({', '.join(typed.fusions)})")
    if providers is None:
        providers = tuple((typed.target or {}).get("providers") or ("cpu",))
    if dims:
        refuse_unknown_dims(dims, [load_onnx(src / g.file) for g in typed.graphs.values()])
    with new_bundle_dir(out, force) as tmp:
        reports, files = {}, []
        for name, graph in typed.graphs.items():
            log(f"fusing {graph.file} ({form}) ...")
            model = load_onnx(src / graph.file)
            with refused_if_unwritable(src / graph.file):
                report = _fuse_checked(model, form, dims, debug=debug, providers=providers, log=log)
                files += save_graph(model, tmp / graph.file)
            reports[name] = report.to_dict()
        for name in typed.files:
            if name not in files and not (tmp / name).exists():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # a listed file in a subfolder
                shutil.copy2(src / name, tmp / name)
                files.append(name)
        target = {**(typed.target or {}), "fusions": form, "providers": list(providers)}
        # parity was measured on the unfused graphs; `check` measures it again
        fused = dataclasses.replace(typed, fusions=reports, files=file_hashes(tmp, files), target=target, parity=None)
        manifest = fused.to_dict()
        write_manifest(tmp, manifest)
    return manifest


def print_report(report: dict[str, Any], echo: Any) -> None:
    cov = ", ".join(f"{k} {v['fused']}/{v['blocks']}" for k, v in report["coverage"].items() if v["blocks"])
    echo(f"  fused: {json.dumps(report['counts'])}")
    nodes = f"nodes {report['nodes_before']} -> {report['nodes_after']}"
    echo(f"  coverage: {cov or 'no attention, layer-norm or GELU blocks'}; {nodes}")
    for miss in report["not_fused"]:
        echo(f"  NOT FUSED {miss['kind']} at {miss['node']}: {miss['reason']}")
    for name, why in report.get("rolled_back", {}).items():
        echo(f"  UNDONE pass {name}: {why}")
    checked = [p["max_rel_error"] for p in report.get("passes", []) if p.get("max_rel_error") is not None]
    if report.get("parity_not_checked"):
        echo(f"  per-pass parity NOT checked: {report['parity_not_checked']}")
    elif report.get("check") == "once" and report.get("max_rel_error") is not None:
        error = report["max_rel_error"]
        echo(f"  parity: the fused graph checked against the unfused one, {error:.2g} of output scale")
    elif checked:
        echo(f"  per-pass parity: {len(checked)} passes checked, worst {max(checked):.2g} of output scale")
