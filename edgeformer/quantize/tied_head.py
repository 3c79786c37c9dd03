"""A tied language-model head quantized as one int8 table that the token embedding shares.

Decoders tie the LM projection to the token embedding: the exported graph reads one table E (V, C)
with ``Gather(E, ids)`` (tokens in) and with ``MatMul(x, Transpose(E))`` (logits out).
onnxruntime's quantizer only quantizes a MatMul whose weight is an initializer, so the head stays
fp32 behind the Transpose: on GPT-2 small that is 154 MB of the 239 MB an int8 token reads, and the
slowest MatMul of every generated token. Quantizing a transposed copy would add a second table.

``untie`` stores the table once, transposed (C, V), where the MatMul wants it, and makes the
embedding read its columns: ``Transpose(Gather(E.T, ids, axis=1))``, exactly the fp32 values. The
head is then an ordinary quantizable MatMul. The quantizer is told to leave those Gathers alone and
``share_quantized`` points them at the head's int8 table: ``Gather`` of int8 columns, ``Cast``,
the same ``Transpose``, times the head's per-channel scales gathered by token. The bundle keeps one
int8 table; a head kept in float (mixed precision) leaves the Gathers on the fp32 table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir


@dataclass(frozen=True)
class TiedHead:
    table: str  # the transposed table (C, V): the head's weight, the embedding's columns
    gathers: tuple[str, ...]  # names of the Gather nodes that read it (leave them to share_quantized)


def _perm(node: ir.Node) -> list[int] | None:
    attr = node.attributes.get("perm")
    return None if attr is None else list(attr.as_ints())


def _is_default(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def untie(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[TiedHead]]:
    """The graph with every tied table stored once as E.T (exactly equal outputs), and what moved."""
    graph_ir = ir.serde.deserialize_model(model)
    graph = graph_ir.graph
    found: list[TiedHead] = []
    for value in list(graph.initializers.values()):
        if value.const_value is None or value.shape is None or len(value.shape) != 2:
            continue
        users = [node for node, _ in value.uses()]
        transposes = [n for n in users if n.op_type == "Transpose" and _is_default(n) and _perm(n) in (None, [1, 0])]
        gathers = [
            n
            for n in users
            if n.op_type == "Gather"
            and _is_default(n)
            and n.inputs[0] is value
            and (n.attributes["axis"].as_int() if "axis" in n.attributes else 0) == 0
        ]
        if len(transposes) != 1 or not gathers or len(transposes) + len(gathers) != len(users):
            continue
        if any(g.outputs[0].is_graph_output() for g in gathers):
            continue  # an embedding that is itself an output keeps its table
        head_t = transposes[0].outputs[0]
        if not head_t.uses() or any(u.op_type != "MatMul" or i != 1 for u, i in head_t.uses()):
            continue  # the transposed table must only be a MatMul weight
        ranks = [
            g.inputs[1].shape.rank() if g.inputs[1] is not None and g.inputs[1].shape is not None else None
            for g in gathers
        ]
        if None in ranks:
            continue  # token ids of unknown rank: the columns could not be turned back into rows
        table = np.ascontiguousarray(value.const_value.numpy().T)  # (C, V)
        moved = ir.Value(name=f"{value.name}.T", shape=ir.Shape(table.shape), type=value.type)
        moved.const_value = ir.tensor(table, name=moved.name)
        graph.register_initializer(moved)
        ir.convenience.replace_all_uses_with(head_t, moved)
        graph.remove(transposes[0], safe=True)
        names = []
        for gather, rank in zip(gathers, ranks, strict=True):
            ids = gather.inputs[1]
            columns = ir.node(
                "Gather", [moved, ids], attributes={"axis": 1}, name=f"{gather.name}_columns", num_outputs=1
            )  # (C, *ids)
            back = ir.node(
                "Transpose", columns.outputs, attributes={"perm": [*range(1, rank + 1), 0]}, name=f"{gather.name}_rows"
            )  # (*ids, C)
            graph.insert_before(gather, [columns, back])
            ir.convenience.replace_all_uses_with(gather.outputs[0], back.outputs[0])
            graph.remove(gather, safe=True)
            names.append(columns.name)
        graph.initializers.pop(value.name)
        found.append(TiedHead(moved.name, tuple(n for n in names if n)))
    return (ir.serde.serialize_model(graph_ir), found) if found else (model, [])


def share_quantized(path: Path, heads: list[TiedHead]) -> int:
    """Point the Gathers of ``heads`` at their head's int8 table, if the quantizer made one (per
    output channel, symmetric: scales (V,), zero points all 0). Rewrites ``path``; returns how many
    Gathers now read int8."""
    model = ir.load(path)
    graph = model.graph
    inits = graph.initializers
    changed = 0
    nodes = {n.name: n for n in graph}
    for head in heads:
        q, scale, zero = (inits.get(f"{head.table}_{s}") for s in ("quantized", "scale", "zero_point"))
        if q is None or scale is None or scale.shape is None or len(scale.shape) != 1:
            continue  # the head stayed in float (or was quantized per tensor): the Gathers stay on fp32
        if zero is not None and zero.const_value is not None and np.any(zero.const_value.numpy()):
            continue
        for name in head.gathers:
            columns = nodes.get(name)
            if columns is None:
                continue
            back = columns.outputs[0].uses()[0][0]  # the Transpose to (*ids, C)
            ids = columns.inputs[1]
            int_columns = ir.node("Gather", [q, ids], attributes={"axis": 1}, name=f"{name}_int8")
            as_float = ir.node("Cast", int_columns.outputs, attributes={"to": ir.DataType.FLOAT}, name=f"{name}_cast")
            scales = ir.node("Gather", [scale, ids], attributes={"axis": 0}, name=f"{name}_scales")  # (*ids,)
            axes = ir.Value(name=f"{name}_axes", shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64))
            axes.const_value = ir.tensor(np.array([-1], dtype=np.int64), name=axes.name)
            graph.register_initializer(axes)
            column = ir.node("Unsqueeze", [scales.outputs[0], axes], name=f"{name}_scale_column")  # (*ids, 1)
            graph.insert_before(columns, [int_columns, as_float, scales, column])
            back.replace_input_with(0, as_float.outputs[0])
            rows = back.outputs[0]
            uses = list(rows.uses())
            scaled = ir.node("Mul", [rows, column.outputs[0]], name=f"{name}_scaled")
            graph.insert_after(back, [scaled])
            for user, index in uses:
                user.replace_input_with(index, scaled.outputs[0])
            graph.remove(columns, safe=True)
            changed += 1
        fp32 = inits.get(head.table)
        if fp32 is not None and not fp32.uses():
            inits.pop(head.table)
    if changed:
        ir.save(model, path)
    return changed
