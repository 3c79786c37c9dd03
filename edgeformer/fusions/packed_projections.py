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

from edgeformer.fusions.miss_reasons import Skipped, producer_name, skip
from edgeformer.graph_edits import add_initializer, remove_nodes, replace_value


def _weight(node: ir.Node) -> tuple[np.ndarray | None, str]:
    """The MatMul's weight when it can be packed, else None and why not."""
    w = node.inputs[1]
    if w is None or not w.is_initializer() or w.const_value is None:
        return None, f"its weight comes from {producer_name(w)}, not an initializer"
    if len(w.uses()) != 1:
        return None, f"its weight {w.name} is also read by {len(w.uses()) - 1} other node(s)"
    array = w.const_value.numpy()
    if array.ndim != 2 or array.dtype != np.float32:
        return None, f"its weight {w.name} is {array.dtype} of rank {array.ndim}, not 2-D float32"
    return array, ""


def _groups(graph: ir.Graph, skipped: Skipped | None) -> dict[ir.Value, list[tuple[ir.Node, np.ndarray]]]:
    """Input -> the MatMuls (with their weights, in graph order) that read it and can be packed; a
    MatMul that shares its input with another but cannot be packed is recorded in ``skipped``."""
    readers: dict[ir.Value, list[ir.Node]] = defaultdict(list)
    for node in graph:
        if (
            node.op_type == "MatMul"
            and node.domain in ("", "ai.onnx")
            and len(node.inputs) == 2
            and node.inputs[0] is not None
        ):
            readers[node.inputs[0]].append(node)
    groups = {}
    for x, nodes in readers.items():
        if len(nodes) < 2:
            continue  # a product alone on its input: nothing to pack it with
        packable = []
        for node in nodes:
            w, why = _weight(node)
            if w is None:
                skip(skipped, node, why)
            else:
                packable.append((node, w))
        why = ""
        if len(packable) < 2:
            why = f"no other MatMul of {x.name} has a weight that can be packed"
        elif len({w.shape[0] for _, w in packable}) != 1:
            why = f"the MatMuls of {x.name} have weights of different input sizes"
        if why:
            for node, _ in packable:
                skip(skipped, node, why)
        else:
            groups[x] = packable
    return groups


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


def pack_projections(model: ir.Model, skipped: Skipped | None = None) -> int:
    """Pack the MatMuls of every input read by several; returns how many groups were packed. The
    MatMuls left apart are recorded in ``skipped`` with the reason."""
    graph = model.graph
    packed = 0
    for x, group in _groups(graph, skipped).items():
        nodes, weights = [n for n, _ in group], [w for _, w in group]
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
