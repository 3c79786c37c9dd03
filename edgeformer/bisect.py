"""Locate where an ONNX graph first departs from its torch source.

Stage 1, the export: a fresh, unfused trace of the same torch module is compared module by module
with torch. Every torch submodule's output is recorded with forward hooks; every ONNX node carries
the torch module scope it was traced from (the dynamo exporter's ``pkg.torch.onnx.name_scopes``).
For each module, in the order torch finished them (children before parents), the last node of its
scope whose value has the module output's shape is compared with it.

Stage 2, later rewrites: when the unfused trace agrees with torch but the bundle's graph does not,
the two graphs are compared value by value. Fusions keep the names of the values they do not
absorb, so the first common value (in the unfused graph's order) that differs names the node of
the bundle's graph, and the unfused node that made it names the torch module.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edgeformer.export.graphs import GraphPlan
from edgeformer.probe import probe_session

SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def _scopes(node: onnx.NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            try:
                return [s for s in ast.literal_eval(prop.value) if isinstance(s, str)]
            except (ValueError, SyntaxError):
                return []
    return []


def _innermost(node: onnx.NodeProto) -> str:
    modules = [s for s in _scopes(node) if s.startswith("model")]
    return modules[-1].removeprefix("model.") if modules else ""


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


def _all_values(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node output of the graph (made graph outputs), run without graph optimizations."""
    session = probe_session(model, (name for node in model.graph.node for name in node.output))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def _too_far(got: np.ndarray, want: np.ndarray, tolerance: float) -> float | None:
    if got.shape != want.shape:
        return None
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    return err if not np.isfinite(err) or err / scale > tolerance else None


def against_torch(
    plan: GraphPlan, model: onnx.ModelProto, inputs: dict[str, np.ndarray], tolerance: float
) -> dict[str, Any] | None:
    """Stage 1: the first torch module whose ONNX counterpart differs beyond tolerance."""
    by_scope: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for scope in _scopes(node):
            by_scope.setdefault(scope, []).append(node)
    values = _all_values(model, inputs)
    for module_name, reference in _torch_outputs(plan, inputs):
        candidates = [n for n in by_scope.get(module_name, []) if n.output and n.output[0] in values]
        match = next((n for n in reversed(candidates) if values[n.output[0]].shape == reference.shape), None)
        if match is None:
            continue
        err = _too_far(values[match.output[0]], reference, tolerance)
        if err is not None:
            return {
                "stage": "export",
                "module": module_name.removeprefix("model."),
                "node": match.name,
                "op_type": match.op_type,
                "output": match.output[0],
                "max_abs": err,
            }
    return None


def against_unfused(
    unfused: onnx.ModelProto, graph: onnx.ModelProto, inputs: dict[str, np.ndarray], tolerance: float
) -> dict[str, Any] | None:
    """Stage 2: the first value the rewritten graph shares with the unfused one that differs."""
    want, got = _all_values(unfused, inputs), _all_values(graph, inputs)
    producers = {out: node for node in graph.graph.node for out in node.output}
    for node in unfused.graph.node:
        for name in node.output:
            if name in got and name in want and name in producers:
                err = _too_far(got[name], want[name], tolerance)
                if err is not None:
                    fused = producers[name]
                    return {
                        "stage": "after export (fusion or a later edit)",
                        "module": _innermost(node) or "(no torch module)",
                        "node": fused.name,
                        "op_type": fused.op_type,
                        "output": name,
                        "max_abs": err,
                    }
    return None


def bisect(
    plan: GraphPlan,
    onnx_path: str | Path,
    inputs: dict[str, np.ndarray],
    tolerance: float,
    opset: int = 18,
    example_dims: dict[str, int] | None = None,
) -> dict[str, Any] | None:
    """Where the graph at ``onnx_path`` first departs from torch, or None if nowhere is found."""
    import onnx_ir as ir

    from edgeformer.export.trace import trace

    graph = onnx.load(str(onnx_path))
    unfused = ir.to_proto(trace(plan, opset, example_dims))
    found = against_torch(plan, unfused, inputs, tolerance)
    if found is not None:
        return found
    found = against_unfused(unfused, graph, inputs, tolerance)
    if found is None and not any(n.domain == "com.microsoft" for n in graph.graph.node):
        found = against_torch(plan, graph, inputs, tolerance)  # an unfused bundle edited by hand
    return found
