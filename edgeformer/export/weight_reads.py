"""How many bytes of weights one call of a graph reads from memory.

A decoder step is bound by reading its weights, so the benchmark reports tokens/s as a fraction of
the weight-reading bandwidth over this figure. The size of the file is the wrong divisor in both
directions: an embedding table that only a Gather reads costs a few rows per token, not the table
(a graph holding the embedding and a transposed copy for its head reads one of them in full), and a
weight stored as float16 behind a ``Cast`` to float (quantize/half_storage.py) is widened when the
session loads and read at 4 bytes per element.

So: every initializer counts once, at its element width, unless every reader is a ``Gather`` taking
it as the table (counted as 0: rows); an initializer read only through ``Cast`` nodes counts at the
widest type it is cast to, and by what reads the casts' outputs. Written into each graph's manifest
entry as ``weights_read_bytes`` when a bundle is written (export/manifest_write.py ``write_manifest``).
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir


def _row_reads_only(uses: list[tuple[ir.Node, int]]) -> bool:
    return all(node.op_type == "Gather" and node.domain in ("", "ai.onnx") and index == 0 for node, index in uses)


def weights_read_bytes(model: ir.Model) -> int:
    """Bytes of initializers one call of ``model`` reads (see the module docstring)."""
    total = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None:
            continue
        bits = tensor.dtype.bitwidth
        uses = [(use.node, use.idx) for use in value.uses()]
        casts = [node for node, _ in uses if node.op_type == "Cast" and node.domain in ("", "ai.onnx")]
        if uses and len(casts) == len(uses):  # stored narrow, widened once when the session loads
            bits = max(bits, *(ir.DataType(node.attributes["to"].as_int()).bitwidth for node in casts))
            uses = [(use.node, use.idx) for node in casts for use in node.outputs[0].uses()]
        if not value.is_graph_output() and (not uses or _row_reads_only(uses)):
            continue  # unread, or read a few rows at a time; a graph output is read once in full
        total += (tensor.size * bits + 7) // 8
    return total


def graph_weights_read(path: str | Path) -> int:
    """``weights_read_bytes`` of the graph file at ``path`` (external data is not read: only shapes)."""
    return weights_read_bytes(ir.load(path))
