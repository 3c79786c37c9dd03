"""A tied language-model head quantized as one int8 table that the token embedding shares.

Decoders tie the LM projection to the token embedding: the exported graph reads one table E (V, C)
with ``Gather(E, ids)`` (tokens in) and with ``MatMul(x, Transpose(E))`` (logits out).
onnxruntime's quantizer only quantizes a MatMul whose weight is an initializer, so the head stays
fp32 behind the Transpose: on GPT-2 small that is 154 MB of the 239 MB an int8 token reads, and the
slowest MatMul of every generated token. Quantizing a transposed copy would add a second table.

``untie`` stores the table once, transposed (C, V), where the MatMul wants it, and makes the
embedding read its columns: ``Transpose(Gather(E.T, ids, axis=1))``, exactly the fp32 values. The
head is then an ordinary quantizable MatMul. The quantizer is told to leave those Gathers alone.
After it, ``share_quantized`` stores the head's table as rows again, int8 if the head was
quantized: the embedding is ``Gather`` of int8 rows, ``Cast``, times the row's per-channel scale,
and the head reads ``Transpose(rows)``, a constant that onnxruntime folds at load. The bundle keeps
one int8 table; a head kept in float (mixed precision) shares the float rows the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from edgeformer.graph_edits import add_initializer


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
    for table, value in list(graph.initializers.items()):
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
        known = [r for r in ranks if r is not None]
        if len(known) != len(ranks):
            continue  # token ids of unknown rank: the columns could not be turned back into rows
        moved_name = f"{table}.T"
        moved = add_initializer(graph, moved_name, np.ascontiguousarray(value.const_value.numpy().T))  # (C, V)
        ir.convenience.replace_all_uses_with(head_t, moved)
        graph.remove(transposes[0], safe=True)
        names = []
        for gather, rank in zip(gathers, known, strict=True):
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
        graph.initializers.pop(table)
        found.append(TiedHead(moved_name, tuple(n for n in names if n)))
    return (ir.serde.serialize_model(graph_ir), found) if found else (model, [])


def share_quantized(path: Path, heads: list[TiedHead]) -> int:
    """Store each of ``heads``' tables as rows (V, C) that the embedding gathers and the head reads
    through a ``Transpose`` of a constant, which onnxruntime folds when the session loads (the
    quantized product then finds its weight constant, as before). A head the quantizer made int8
    (per output channel, symmetric: scales (V,), zero points all 0) shares its int8 rows: the
    embedding is ``Gather`` of int8 rows, ``Cast``, times the row's scale. A head kept in float
    shares the float rows. Gathering rows rather than columns matters for prompts: onnxruntime
    gathers along the last axis element by element. Rewrites ``path``; returns how many Gathers
    now read int8."""
    model = ir.load(path)
    graph = model.graph
    nodes = {n.name: n for n in graph}
    int8_gathers = 0
    changed = False
    for head in heads:
        found = _head_table(graph, head)
        pairs = _embedding_pairs(nodes, head)
        if found is None or not pairs:
            continue
        table, values, scale = found
        rows = add_initializer(graph, f"{table.name}_rows", np.ascontiguousarray(values.T))
        columns_again = ir.node("Transpose", [rows], attributes={"perm": [1, 0]}, name=f"{table.name}_columns")
        head_users = [(u, i) for u, i in table.uses() if u not in {c for c, _ in pairs}]
        graph.insert_before(next(iter(graph)), [columns_again])
        for user, index in head_users:  # the head's product: a constant, folded at load
            user.replace_input_with(index, columns_again.outputs[0])
        for columns, back in pairs:
            _gather_rows(graph, rows, columns, back, scale)
        int8_gathers += len(pairs) if scale is not None else 0
        for value in (table, graph.initializers.get(head.table)):
            if value is not None and not value.uses() and value.name is not None and value.name in graph.initializers:
                graph.initializers.pop(value.name)
        changed = True
    if changed:
        ir.save(model, path)
    return int8_gathers


def _head_table(graph: ir.Graph, head: TiedHead) -> tuple[ir.Value, np.ndarray, ir.Value | None] | None:
    """The head's table, its values and, when the quantizer made it int8 (symmetric, per output
    channel), its scales; None for a head to leave as written (asymmetric int8, no constant table)."""
    inits = graph.initializers
    q, scale, zero = (inits.get(f"{head.table}_{s}") for s in ("quantized", "scale", "zero_point"))
    quantized = q is not None and scale is not None and scale.shape is not None and len(scale.shape) == 1
    if quantized and zero is not None and zero.const_value is not None and np.any(zero.const_value.numpy()):
        return None  # asymmetric: leave this head as the quantizer wrote it
    table = q if quantized else inits.get(head.table)
    if table is None or table.const_value is None:
        return None
    return table, table.const_value.numpy(), scale if quantized else None


def _embedding_pairs(nodes: dict[str | None, ir.Node], head: TiedHead) -> list[tuple[ir.Node, ir.Node]]:
    """(Gather of columns, Transpose back to rows) of each embedding reading the head's table."""
    pairs = []
    for name in head.gathers:
        columns = nodes.get(name)
        if columns is None or len(columns.outputs[0].uses()) != 1:
            continue
        back = next(iter(columns.outputs[0].uses())).node
        if back.op_type == "Transpose":
            pairs.append((columns, back))
    return pairs


def _gather_rows(graph: ir.Graph, rows: ir.Value, columns: ir.Node, back: ir.Node, scale: ir.Value | None) -> None:
    """Replace one embedding's Gather of columns + Transpose by a Gather of ``rows`` (int8 rows:
    Cast, times the row's ``scale``)."""
    ids = columns.inputs[1]
    gather = ir.node("Gather", [rows, ids], attributes={"axis": 0}, name=f"{columns.name}_rows")  # (*ids, C)
    added = [gather]
    out = gather.outputs[0]
    if scale is not None:
        as_float = ir.node("Cast", [out], attributes={"to": ir.DataType.FLOAT}, name=f"{columns.name}_cast")
        scales = ir.node("Gather", [scale, ids], attributes={"axis": 0}, name=f"{columns.name}_scales")
        axes = add_initializer(graph, f"{columns.name}_axes", np.array([-1], dtype=np.int64))
        column = ir.node("Unsqueeze", [scales.outputs[0], axes], name=f"{columns.name}_scale_column")
        scaled = ir.node("Mul", [as_float.outputs[0], column.outputs[0]], name=f"{columns.name}_scaled")
        added += [as_float, scales, column, scaled]
        out = scaled.outputs[0]
    graph.insert_before(columns, added)
    for user, index in list(back.outputs[0].uses()):
        user.replace_input_with(index, out)
    graph.remove([back, columns], safe=True)
