"""Weights packed at run time become one initializer.

The attention fusion packs the Q, K and V projection weights with a ``Concat`` of three
initializers. onnxruntime would fold that at session start, but the graph on disk keeps the
Concat, so int8 quantization (which wants the packed weight as an initializer to make a
QAttention) and any runtime without constant folding see three weights and a copy per run.
This pass folds a Concat whose inputs are all initializers used by nothing else; the graph
gets no bigger, since the parts disappear.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeformer.fusions.miss_reasons import Skipped, producer_name, skip
from edgeformer.graph_edits import add_initializer, remove_nodes


def _why_not(node: ir.Node) -> str | None:
    """Why a Concat with an initializer among its inputs cannot be folded; None when it can."""
    for part in node.inputs:
        if part is None or not part.is_initializer():
            return f"input {part.name if part is not None else '(missing)'} comes from {producer_name(part)}"
        if len(part.uses()) != 1:  # a part still used elsewhere would be duplicated
            return f"initializer {part.name} is also read by {len(part.uses()) - 1} other node(s)"
        if part.const_value is None:
            return f"initializer {part.name} has no data"
    return None


def fold_packed_weights(model: ir.Model, skipped: Skipped | None = None) -> int:
    """Fold every Concat of initializers only; a Concat with some initializer input that cannot be
    folded is recorded in ``skipped`` with the reason."""
    graph = model.graph
    folded = 0
    for node in list(graph):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
            continue
        if not any(p is not None and p.is_initializer() for p in node.inputs):
            continue  # nothing constant to pack: not a candidate
        reason = _why_not(node)
        if reason is not None:
            skip(skipped, node, reason)
            continue
        arrays = [p.const_value.numpy() for p in node.inputs if p is not None and p.const_value is not None]
        axis = node.attributes["axis"].as_int()
        packed = np.concatenate(arrays, axis=axis)
        out = node.outputs[0]
        value = add_initializer(graph, f"{out.name}_packed", packed)
        ir.convenience.replace_all_uses_with(out, value)
        remove_nodes(graph, [node])
        folded += 1
    return folded
