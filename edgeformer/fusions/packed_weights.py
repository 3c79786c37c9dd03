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

from edgeformer.graph_edits import add_initializer, remove_nodes


def fold_packed_weights(model: ir.Model) -> int:
    graph = model.graph
    folded = 0
    for node in list(graph):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
            continue
        parts = [p for p in node.inputs if p is not None and p.is_initializer()]
        if not parts or len(parts) != len(node.inputs):
            continue
        if any(len(p.uses()) != 1 for p in parts):  # a part still used elsewhere would be duplicated
            continue
        arrays = [p.const_value.numpy() for p in parts if p.const_value is not None]
        if len(arrays) != len(parts):
            continue
        axis = node.attributes["axis"].as_int()
        packed = np.concatenate(arrays, axis=axis)
        out = node.outputs[0]
        value = add_initializer(graph, f"{out.name}_packed", packed)
        ir.convenience.replace_all_uses_with(out, value)
        remove_nodes(graph, [node])
        folded += 1
    return folded
