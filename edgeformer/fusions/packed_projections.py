"""Projections of one input become one MatMul: attention's Q, K and V, the cross-attention keys
and values of every layer.

A decoder's attention keeps its Q, K and V projections as three MatMuls (each with its bias Add)
because the keys and values go to the KV cache on their own; an int8 graph keeps them apart so the
quantizer sees them. Three small products of the same input cost three kernel launches, three bias
additions and, in int8, three quantized products where one would do. This pass concatenates the
weights (and biases) of every MatMul that reads the same input, runs one MatMul and splits its
output. Each output column is the same dot product as before, so the numbers do not move.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir

from edgeformer.graph_edits import add_initializer, remove_nodes, replace_value


def _weight(node: ir.Node) -> np.ndarray | None:
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    w = node.inputs[1]
    if w is None or not w.is_initializer() or w.const_value is None or len(w.uses()) != 1:
        return None
    array = w.const_value.numpy()
    return array if array.ndim == 2 and array.dtype == np.float32 else None


def _bias(node: ir.Node) -> tuple[ir.Node, np.ndarray] | None:
    """The Add that adds a 1-D constant bias to the MatMul's output, if that is its only use."""
    uses = list(node.outputs[0].uses())
    if len(uses) != 1 or node.outputs[0].is_graph_output():
        return None
    add, index = uses[0]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    other = add.inputs[1 - index]
    if other is None or not other.is_initializer() or other.const_value is None:
        return None  # a bias shared with other nodes (deduplicated zeros, say) is copied into the packed one
    b = other.const_value.numpy()
    return (add, b) if b.ndim == 1 and b.dtype == np.float32 else None


def pack_projections(model: ir.Model) -> int:
    graph = model.graph
    order = {node: i for i, node in enumerate(graph)}
    groups: dict[ir.Value, list[tuple[ir.Node, np.ndarray]]] = defaultdict(list)  # input -> (MatMul, weight)
    for node in graph:
        w = _weight(node)
        if w is not None and node.inputs[0] is not None:
            groups[node.inputs[0]].append((node, w))
    packed = 0
    for x, group in groups.items():
        group.sort(key=lambda pair: order[pair[0]])
        nodes, weights = [n for n, _ in group], [w for _, w in group]
        if len(nodes) < 2 or len({w.shape[0] for w in weights}) != 1:
            continue
        biases = [_bias(n) for n in nodes]
        bias_arrays = [b[1] for b in biases if b is not None]
        with_bias = len(bias_arrays) == len(nodes)
        first = nodes[0]
        sizes = [w.shape[1] for w in weights]
        stem = f"{first.name or 'proj'}_packed"
        w_all = add_initializer(graph, f"{stem}.weight", np.concatenate(weights, axis=1))
        new = [ir.node("MatMul", [x, w_all], name=stem)]
        if with_bias:
            b_all = add_initializer(graph, f"{stem}.bias", np.concatenate(bias_arrays))
            new.append(ir.node("Add", [new[-1].outputs[0], b_all], name=f"{stem}_bias"))
        split_sizes = add_initializer(graph, f"{stem}.split", np.asarray(sizes, dtype=np.int64))
        split = ir.node(
            "Split",
            [new[-1].outputs[0], split_sizes],
            attributes={"axis": -1},
            num_outputs=len(nodes),
            name=f"{stem}_split",
        )
        new.append(split)
        graph.insert_before(first, new)
        for node, bias, part in zip(nodes, biases, split.outputs, strict=True):
            last = bias[0] if with_bias and bias is not None else node
            replace_value(last.outputs[0], part)
            remove_nodes(graph, [last, node] if last is not node else [node])
        packed += 1
    return packed
