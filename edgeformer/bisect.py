"""Locate where an ONNX graph first departs from its torch source.

Every torch submodule's output is recorded with forward hooks; every ONNX node carries the torch
module scope it was traced from (the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata).
For each module, in the order torch finished them (children before parents), the last node of its
scope whose value has the module output's shape is compared with it; the first module beyond
tolerance is the divergence.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgeformer.export.graphs import GraphPlan

SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def _scopes(node: onnx.NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            try:
                return [s for s in ast.literal_eval(prop.value) if isinstance(s, str)]
            except (ValueError, SyntaxError):
                return []
    return []


@torch.no_grad()
def _torch_outputs(plan: GraphPlan, inputs: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    recorded: list[tuple[str, np.ndarray]] = []
    names = {id(m): n for n, m in plan.module.named_modules() if n}

    def hook(module: torch.nn.Module, _args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and id(module) in names and out.is_floating_point():
            recorded.append((names[id(module)], out.detach().numpy().copy()))

    handles = [m.register_forward_hook(hook) for n, m in plan.module.named_modules() if n]
    try:
        plan.module(*[torch.from_numpy(inputs[s.name]) for s in plan.inputs])
    finally:
        for h in handles:
            h.remove()
    return recorded


def bisect(
    plan: GraphPlan, onnx_path: str | Path, inputs: dict[str, np.ndarray], tolerance: float
) -> dict[str, Any] | None:
    """The first torch module whose ONNX counterpart differs beyond tolerance, or None."""
    model = onnx.load(str(onnx_path))
    by_scope: dict[str, list[tuple[int, onnx.NodeProto]]] = {}
    for index, node in enumerate(model.graph.node):
        for scope in _scopes(node):
            by_scope.setdefault(scope, []).append((index, node))
    existing = {o.name for o in model.graph.output}
    wanted = [n.output[0] for nodes in by_scope.values() for _, n in nodes if n.output and n.output[0] not in existing]
    for name in dict.fromkeys(wanted):
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, inputs), strict=True))
    for module_name, reference in _torch_outputs(plan, inputs):
        nodes = by_scope.get(module_name, [])
        candidates = [n for _, n in nodes if n.output and values.get(n.output[0]) is not None]
        match = next((n for n in reversed(candidates) if values[n.output[0]].shape == reference.shape), None)
        if match is None:
            continue
        err = float(np.abs(values[match.output[0]].astype(np.float64) - reference).max())
        scale = max(1.0, float(np.abs(reference).max()))
        if not np.isfinite(err) or err / scale > tolerance:
            return {
                "module": module_name.removeprefix("model."),
                "node": match.name,
                "op_type": match.op_type,
                "output": match.output[0],
                "max_abs": err,
            }
    return None
