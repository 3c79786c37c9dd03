"""The token embedding of an int4 decoder read from its tied LM head's MatMulNBits table.

``tied_head.untie`` stores a tied table once, transposed, as the head's MatMul weight (C, V), and
makes the embedding gather its columns. After the int4 quantizer, the head is a MatMulNBits whose
weight ``B`` is the table as rows, quantized in blocks along C: (V, C / block, block * bits / 8)
uint8, symmetric (zero point 2^(bits-1), no zero-point input), scales (V, C / block). That is the
layout onnxruntime's ``GatherBlockQuantized`` (com.microsoft) reads with ``gather_axis`` 0 and
``quantize_axis`` 2: the embedding gathers the head's own 4-bit (or 8-bit, for a head the search
keeps out of int4) rows and dequantizes them, and the float table leaves the bundle. On GPT-2 small
that is the 154 MB fp32 table an int4 bundle used to carry beside the head's 4-bit copy.

``share`` rewrites a written graph: each embedding's Gather of columns + Transpose becomes
``GatherBlockQuantized(B, ids, scales as (V, C / block, 1)) -> Reshape(*ids, C)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeformer.quantize.tied_head import TiedHead

MS_DOMAIN = "com.microsoft"
DESCRIPTION = (
    "a token embedding tied to the LM head (where there is one) reads the head's MatMulNBits table "
    "(GatherBlockQuantized, com.microsoft): one quantized table, no float copy"
)


def _attrs(node: onnx.NodeProto) -> dict[str, int]:
    return {a.name: int(a.i) for a in node.attribute if a.type == onnx.AttributeProto.INT}


def _head_nbits(graph: onnx.GraphProto, head: TiedHead) -> onnx.NodeProto | None:
    """The MatMulNBits that reads ``head``'s quantized table, when its blocks tile C exactly."""
    weights = {f"{head.table}_Q4", f"{head.table}_Q8"}
    for node in graph.node:
        if node.op_type == "MatMulNBits" and node.domain == MS_DOMAIN and node.input[1] in weights:
            attrs = _attrs(node)
            if len(node.input) == 3 and attrs["K"] % attrs["block_size"] == 0:  # no zero points, no padding
                return node
    return None


def _pairs(graph: onnx.GraphProto, head: TiedHead) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """(Gather of the table's columns, the Transpose back to rows) of each embedding reading ``head``."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    pairs = []
    for node in graph.node:
        if node.name not in head.gathers or node.op_type != "Gather" or node.input[0] != head.table:
            continue
        after = users.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Transpose" and node.output[0] not in outputs:
            pairs.append((node, after[0]))
    return pairs


def _rows(nbits: onnx.NodeProto, columns: onnx.NodeProto, back: onnx.NodeProto, scales: str) -> list[onnx.NodeProto]:
    """The nodes that gather ``columns``' ids as dequantized rows of ``nbits``' table, into ``back``'s output."""
    attrs = _attrs(nbits)
    rank = len(next(a.ints for a in back.attribute if a.name == "perm")) - 1  # of the token ids
    gathered = f"{columns.name}/blocks"
    shape = f"{columns.name}/row_shape"
    return [
        helper.make_node(
            "GatherBlockQuantized",
            [nbits.input[1], columns.input[1], scales],
            [gathered],
            name=f"{columns.name}_Q{attrs['bits']}",
            domain=MS_DOMAIN,
            gather_axis=0,
            quantize_axis=2,
            block_size=attrs["block_size"],
            bits=attrs["bits"],
        ),  # (*ids, C / block, block)
        helper.make_node(
            "Constant",
            [],
            [shape],
            name=shape,
            value=numpy_helper.from_array(np.array([0] * rank + [attrs["K"]], np.int64)),
        ),  # fmt: skip
        helper.make_node("Reshape", [gathered, shape], [back.output[0]], name=f"{columns.name}/rows"),
    ]


def share(path: Path, heads: list[TiedHead]) -> int:
    """Make every embedding of ``heads`` in the graph at ``path`` read its head's MatMulNBits table;
    drop the float tables no node reads any more. Rewrites ``path``; returns how many embeddings moved."""
    model = onnx.load(str(path))
    graph = model.graph
    moved = 0
    for head in heads:
        nbits, pairs = _head_nbits(graph, head), _pairs(graph, head)
        if nbits is None or not pairs:
            continue
        attrs = _attrs(nbits)
        scales = f"{head.table}/block_scales"
        blocks = attrs["K"] // attrs["block_size"]
        shape = numpy_helper.from_array(np.array([attrs["N"], blocks, 1], np.int64), f"{scales}/shape")
        graph.initializer.append(shape)
        nodes: list[onnx.NodeProto] = [helper.make_node("Reshape", [nbits.input[2], shape.name], [scales], name=scales)]
        by_columns = {columns.name: (columns, back) for columns, back in pairs}
        replaced = {back.name for _, back in pairs} | set(by_columns)
        for node in graph.node:
            if node.name in by_columns:
                nodes += _rows(nbits, *by_columns[node.name], scales)
            elif node.name not in replaced:
                nodes.append(node)
        graph.ClearField("node")
        graph.node.extend(nodes)
        moved += len(pairs)
    if moved:
        read = {name for node in graph.node for name in node.input}
        kept = [i for i in graph.initializer if i.name in read]
        graph.ClearField("initializer")
        graph.initializer.extend(kept)
        onnx.save(model, str(path))
    return moved
