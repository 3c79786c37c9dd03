"""Mobile and web packaging: static shapes, the ORT format, the reduced-operator config, and
onnxruntime's usability report for NNAPI and CoreML.

A target with ``static_shapes`` fixes the named dimensions before fusion (NNAPI, CoreML and QNN
compile a graph for one shape; fixed sizes also let the cleanup fold the shape subgraphs away).
A target with ``ort_format`` gets, beside every ``<graph>.onnx``, ``<graph>.ort`` converted by
onnxruntime itself at the target's optimization level (``basic`` for NNAPI, CoreML and QNN, so the
saved graph holds no CPU-only fused ops), ``required_operators.config`` for a custom minimal
onnxruntime build (``--include_ops_by_config``), and the manifest's ``mobile``: the .ort files and
their parity against torch on the CPU provider, and how the graph partitions on NNAPI and CoreML
according to onnxruntime's checker (``onnxruntime.tools.check_onnx_model_mobile_usability``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx_ir as ir
import onnxruntime as ort

from edgeformer.errors import ExportError
from edgeformer.export.manifest_write import file_hashes
from edgeformer.fixed_shapes import dims_text
from edgeformer.runtime.manifest import Manifest
from edgeformer.targets import Target

Log = Callable[[str], None]
REDUCED_CONFIG = "required_operators.config"
LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# the checker's lists, shipped in onnxruntime/tools/mobile_helpers/
CHECKED = {
    "nnapi": None,
    "coreml_mlprogram": "coreml_supported_mlprogram_ops.md",
    "coreml_neuralnetwork": "coreml_supported_neuralnetwork_ops.md",
}


def fix_shapes(model: ir.Model, fixed: dict[str, int]) -> ir.Model:
    """The traced graph with the named dimensions fixed everywhere (onnxruntime's own
    ``make_dim_param_fixed``); intermediate shapes are inferred again by the fusion cleanup."""
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    proto = ir.to_proto(model)
    for name, size in fixed.items():
        make_dim_param_fixed(proto.graph, name, size)
    return ir.from_proto(proto)


def runnable_providers(providers: tuple[str, ...]) -> tuple[str, ...]:
    """The target's providers this onnxruntime has (parity runs there); the CPU provider when it has
    none of them (NNAPI, CoreML, QNN and XNNPACK are not in the desktop CPU package)."""
    from edgeformer.runtime.providers import PROVIDERS, installed

    have = installed()
    usable = tuple(p for p in providers if PROVIDERS.get(p.lower()) in have)
    return usable or ("cpu",)


def convert_to_ort(onnx_path: Path, ort_path: Path, level: str) -> None:
    """onnxruntime's own conversion (as ``python -m onnxruntime.tools.convert_onnx_models_to_ort``):
    a CPU session that saves its optimized graph in the ORT format."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    opts.optimized_model_filepath = str(ort_path)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    opts.log_severity_level = 3
    # like the converter: NCHWc layouts are x86-only and would not run on ARM devices
    disabled = ["NchwcTransformer"] if level == "all" else None
    try:
        ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
        raise ExportError(f"onnxruntime could not convert {onnx_path.name} to the ORT format: {exc}") from None


def _tied_heads(model: Any) -> list[Any]:
    """Transpose nodes of a weight that other nodes also read (a tied LM head: MatMul(x, W^T) beside
    Gather(W, ids)) feeding only MatMul's B input. onnxruntime's constant folding would store W^T as a
    second table in the .ort file."""
    inits = {i.name for i in model.graph.initializer}
    readers: dict[str, list[tuple[Any, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, k))
    found = []
    for node in model.graph.node:
        perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
        if node.op_type != "Transpose" or perm not in ([[1, 0]], []) or node.input[0] not in inits:
            continue
        users = readers.get(node.output[0], [])
        if len(readers[node.input[0]]) > 1 and users and all(n.op_type == "MatMul" and k == 1 for n, k in users):
            found.append(node)
    return found


def store_tied_heads_once(model: Any) -> int:
    """Rewrite every MatMul(x, Transpose(W)) of a tied head as Gemm(x as 2-D, W, transB=1), reshaped
    back: the .ort file then holds W once, as the .onnx does. Returns how many were rewritten."""
    from onnx import helper

    if not any(o.domain in ("", "ai.onnx") and o.version >= 15 for o in model.opset_import):
        return 0  # Shape(start, end) needs opset 15
    weights = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    tied = _tied_heads(model)
    for transpose in tied:
        width, rows = weights[transpose.input[0]].dims[1], weights[transpose.input[0]].dims[0]
        tag = transpose.input[0].replace(".", "_") + "_once"
        model.graph.initializer.extend(
            [
                helper.make_tensor(f"{tag}_flat", 7, [2], [-1, width]),
                helper.make_tensor(f"{tag}_rows", 7, [1], [rows]),
            ]
        )
        for matmul in [n for n in nodes if n.op_type == "MatMul" and n.input[1] == transpose.output[0]]:
            x, y = matmul.input[0], matmul.output[0]
            new = [
                helper.make_node("Reshape", [x, f"{tag}_flat"], [f"{y}_{tag}_2d"]),
                helper.make_node("Gemm", [f"{y}_{tag}_2d", transpose.input[0]], [f"{y}_{tag}_gemm"], transB=1),
                helper.make_node("Shape", [x], [f"{y}_{tag}_lead"], start=0, end=-1),
                helper.make_node("Concat", [f"{y}_{tag}_lead", f"{tag}_rows"], [f"{y}_{tag}_shape"], axis=0),
                helper.make_node("Reshape", [f"{y}_{tag}_gemm", f"{y}_{tag}_shape"], [y]),
            ]
            at = nodes.index(matmul)
            nodes[at : at + 1] = new
        nodes.remove(transpose)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(tied)


def convert_tied_once(onnx_path: Path, ort_path: Path, level: str) -> None:
    """``convert_to_ort``, a tied LM head stored once (see ``store_tied_heads_once``)."""
    import onnx

    model = onnx.load(str(onnx_path))
    if not store_tied_heads_once(model):
        convert_to_ort(onnx_path, ort_path, level)
        return
    with tempfile.TemporaryDirectory(dir=ort_path.parent) as tmp:
        once = Path(tmp) / onnx_path.name
        onnx.save(model, str(once), save_as_external_data=True, location=f"{onnx_path.name}.data")
        convert_to_ort(once, ort_path, level)


def write_reduced_config(ort_files: list[Path], out: Path) -> dict[str, list[str]]:
    """``required_operators.config`` from the .ort files (onnxruntime's ``create_config_from_models``),
    naming the files without this machine's paths; returns domain;opset -> operators."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    utils_log = logging.getLogger("ort_format_model.utils")  # onnxruntime logs the temporary path at INFO
    level = utils_log.level
    utils_log.setLevel(logging.WARNING)
    try:
        create_config_from_models(ort_files, out, enable_type_reduction=False)
    finally:
        utils_log.setLevel(level)
    lines = out.read_text(encoding="utf-8").splitlines()
    lines = [f"# - {Path(line[4:]).name}" if line.startswith("# - ") else line for line in lines]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ops = {}
    for line in lines:
        if line and not line.startswith("#"):
            domain, opset, names = line.split(";", 2)
            ops[f"{domain};{opset}"] = names.split(",")
    return ops


def _partitions(info: Any) -> dict[str, Any]:
    return {
        "partitions": info.num_partitions,
        "nodes": info.num_nodes,
        "supported_nodes": info.num_supported_nodes,
        "partition_sizes": [len(g) for g in info.supported_groups],
        "unsupported_ops": sorted(info.unsupported_ops),
        "unsupported_by_op": info.nodes_unsupported_due_to_op,
        "unsupported_by_dynamic_shape": info.nodes_unsupported_due_to_dynamic_input,
        "suitability": info.suitability().name,  # onnxruntime's verdict: YES, MAYBE or NO
        "caveats": info.supported_ops_checker.get_caveats(),
    }


def _coreml_partitions(checker: Any, model: Any, md: Any, fixed_only: bool) -> Any:
    """onnxruntime's CoreML usability check, with ``fixed_only`` last as functools.partial needs."""
    return checker.check_coreml_partitions(model, fixed_only, md)


def usability(onnx_path: Path) -> dict[str, Any]:
    """How the graph, optimized at onnxruntime's basic level as the checker does, partitions on NNAPI
    and CoreML (MLProgram and NeuralNetwork): partitions, nodes supported, unsupported op types,
    and whether dynamic shapes block it (then also the figures if the shapes were fixed)."""
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / onnx_path.name
        optimize_model(onnx_path, optimized)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
    quiet = logging.getLogger("edgeformer.mobile.usability")
    quiet.setLevel(logging.ERROR)
    dynamic_inputs, dynamic_values = checker.check_shapes(model.graph, quiet)
    report: dict[str, Any] = {
        "dynamic_inputs": [i.name for i in dynamic_inputs],
        "dynamic_values": dynamic_values,
    }
    for name, md in CHECKED.items():
        check: Callable[[bool], Any] = (
            functools.partial(checker.check_nnapi_partitions, model)
            if md is None
            else functools.partial(_coreml_partitions, checker, model, md)
        )
        entry = _partitions(check(True))
        if entry["unsupported_by_dynamic_shape"]:
            entry["if_shapes_fixed"] = {k: v for k, v in _partitions(check(False)).items() if k != "caveats"}
        report[name] = entry
    return report


def package(directory: Path, manifest: Manifest, target: Target, log: Log) -> tuple[Manifest, list[Path]]:
    """Add the .ort graphs, the reduced-operator config and the usability report to a bundle being
    written in ``directory`` (before its manifest is written). Returns the manifest with ``mobile``,
    the graphs' ``ort_file`` and the new files' sha256 (the typed manifest: edgeformer.runtime.manifest),
    and the .ort graphs by graph name order; the driver checks them against the torch source as it
    checked the .onnx graphs."""
    mobile: dict[str, Any] = {
        "static_shapes": dict(target.static_shapes),
        "ort_optimization": target.ort_optimization,
        "graphs": {},
        "reduced_operator_config": REDUCED_CONFIG,
    }
    ort_files, graphs = [], {}
    for name, graph in manifest.graphs.items():
        onnx_path = directory / graph.file
        ort_path = onnx_path.with_suffix(".ort")
        log(f"converting {graph.file} to {ort_path.name} (onnxruntime, {target.ort_optimization} optimizations) ...")
        convert_tied_once(onnx_path, ort_path, target.ort_optimization)
        graphs[name] = dataclasses.replace(graph, ort_file=ort_path.name)
        ort_files.append(ort_path)
        mobile["graphs"][name] = {
            "ort_file": ort_path.name,
            "onnx_bytes": onnx_path.stat().st_size,
            "ort_bytes": ort_path.stat().st_size,
            "usability": usability(onnx_path),
        }
    mobile["operators"] = write_reduced_config(ort_files, directory / REDUCED_CONFIG)
    files = manifest.files | file_hashes(directory, [p.name for p in ort_files] + [REDUCED_CONFIG])
    return dataclasses.replace(manifest, graphs=graphs, files=files, mobile=mobile), ort_files


def _line(label: str, entry: dict[str, Any]) -> str:
    unsupported = ", ".join(entry["unsupported_ops"]) or "none"
    text = (
        f"    {label}: {entry['partitions']} partition(s), {entry['supported_nodes']}/{entry['nodes']} nodes "
        f"supported ({entry['suitability']}); unsupported ops: {unsupported}"
    )
    if entry["unsupported_by_dynamic_shape"]:
        fixed = entry.get("if_shapes_fixed", {})
        text += (
            f"; {entry['unsupported_by_dynamic_shape']} node(s) blocked by dynamic shapes "
            f"(fixed: {fixed.get('partitions', '?')} partition(s), {fixed.get('supported_nodes', '?')} nodes)"
        )
    return text


def format_report(mobile: dict[str, Any]) -> list[str]:
    """The mobile section of a manifest, as lines for the screen."""
    shapes = dims_text(mobile.get("static_shapes") or {}) or "dynamic"
    lines = [f"mobile: shapes {shapes}; .ort at {mobile.get('ort_optimization')} optimizations"]
    for graph in (mobile.get("graphs") or {}).values():
        lines.append(
            f"  {graph['ort_file']}: {graph['ort_bytes'] / 1e6:.2f} MB (the .onnx: {graph['onnx_bytes'] / 1e6:.2f} MB)"
        )
        use = graph["usability"]
        if use.get("dynamic_inputs"):
            lines.append(f"    dynamic inputs: {', '.join(use['dynamic_inputs'])}")
        for label in CHECKED:
            lines.append(_line(label, use[label]))
    ops = mobile.get("operators") or {}
    count = sum(len(v) for v in ops.values())
    lines.append(f"  {mobile.get('reduced_operator_config')}: {count} operators for a minimal onnxruntime build")
    parity = mobile.get("ort_parity")
    if parity:
        outputs = [o for case in parity.get("cases", []) for o in case["outputs"]]
        if parity.get("budget"):  # a reduced precision is judged by its budget (cosine), not by error
            worst = f", worst cosine {min(o['cosine'] for o in outputs):.5f}" if outputs else ""
        else:
            worst = f", worst error {max(o['max_abs'] for o in outputs):.2e} (max abs)" if outputs else ""
        lines.append(f"  .ort parity on the CPU provider: {'ok' if parity['ok'] else 'FAILED'}{worst}")
    return lines
