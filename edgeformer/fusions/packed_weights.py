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
        parts = list(node.inputs)
        if not parts or any(p is None or not p.is_initializer() or p.const_value is None for p in parts):
            continue
        if any(len(p.uses()) != 1 for p in parts):  # a part still used elsewhere would be duplicated
            continue
        axis = node.attributes["axis"].as_int()
        packed = np.concatenate([p.const_value.numpy() for p in parts], axis=axis)  # type: ignore[union-attr]
        out = node.outputs[0]
        value = add_initializer(graph, f"{out.name}_packed", packed)
        ir.convenience.replace_all_uses_with(out, value)
        remove_nodes(graph, [node])
        folded += 1
    return folded
