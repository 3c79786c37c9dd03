"""Self-attention of int8 encoders as one QAttention: the packed Q/K/V product and attention in one kernel.

onnxruntime's quantizer turns the packed projection of a self-attention block into an int8 product
(``DynamicQuantizeMatMul``), then the graph splits its output and runs MultiHeadAttention: three
kernels per layer. onnxruntime's ``QAttention`` takes the quantized input, the int8 packed weight
(per output column) and the mask, and does both in one. On the demo encoder's shapes (4 layers,
d=128) the attention blocks run in 0.69x the time at S=16 and 0.87x at S=128 (``bench/int8.py``
measures the whole model).

``plan`` finds the blocks: a MultiHeadAttention without cache whose Q, K and V are the three equal
parts of one ``Split`` of ``MatMul(x, W)`` (+ a constant bias), and whose mask is a key-padding mask
of the graph's ``attention_mask``. QAttention takes no additive bias, so an ``attention_bias`` is
accepted only when it is exactly that padding mask: it is computed on sample masks (right, left
and inner padding) and must be 0 on real keys and <= -1e4 on padded ones for every query. A
causal, local-window or sparse pattern fails the check and its block stays MultiHeadAttention.
``apply`` rewrites the planned blocks whose MatMul is not kept in float (mixed precision).

The weights are quantized as onnxruntime's quantizer does them (symmetric int8 per output column,
7 bits where the CPU lacks VNNI), the input by ``DynamicQuantizeLinear`` (uint8, per tensor),
as in ``DynamicQuantizeMatMul``: the numbers are those of the three-kernel form.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from edgeformer.graph_edits import add_initializer, remove_nodes, replace_value

Feeds = dict[str, np.ndarray]
MASK_INPUT = "attention_mask"
ATTRIBUTES = ("num_heads", "scale", "mask_filter_value", "unidirectional")  # MultiHeadAttention's, QAttention's too
PADDED = -1e4  # at or below this an additive bias removes a key (QAttention's mask_filter_value is -10000)


DESCRIPTION = (
    "self-attention without a KV cache and with a padding mask (or none) runs as one QAttention "
    "(int8 packed Q/K/V product and attention in one kernel)"
)


def count(path: str | Path) -> int:
    """How many QAttention nodes the graph at ``path`` has."""
    return sum(n.op_type == "QAttention" for n in onnx.load(str(path), load_external_data=False).graph.node)


@dataclass(frozen=True)
class Block:
    attention: str  # the MultiHeadAttention node
    matmul: str  # the packed Q/K/V MatMul
    mask: str  # "none", "key_padding_mask" (MHA input 4) or "attention_bias" (checked to be padding)


def _default(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or not value.is_initializer() or value.const_value is None:
        return None
    return value.const_value.numpy()


def _projection(mha: ir.Node) -> tuple[ir.Node, ir.Node, ir.Node | None] | None:
    """(Split, MatMul, bias Add or None) that make this attention's Q, K and V, if it is that shape."""
    q, k, v = (_input(mha, i) for i in range(3))
    if q is None or k is None or v is None:
        return None
    split = q.producer()
    if split is None or split.op_type != "Split" or not _default(split) or len(split.outputs) != 3:
        return None
    if set(split.outputs) != {q, k, v} or any(len(o.uses()) != 1 or o.is_graph_output() for o in split.outputs):
        return None  # (the packing pass may order the parts K, V, Q: ``_qkv_order`` puts them back)
    axis = split.attributes["axis"].as_int() if "axis" in split.attributes else 0
    sizes = _const(_input(split, 1))
    if sizes is None and _input(split, 1) is not None:
        return None  # split sizes computed at run time: the parts might not be equal
    source = _input(split, 0)
    if source is None or source.producer() is None:
        return None
    add, matmul = None, source.producer()
    if matmul is not None and matmul.op_type == "Add" and _default(matmul):
        add = matmul
        operand = [x for x in add.inputs if x is not None and _const(x) is None]
        if len(operand) != 1 or operand[0].producer() is None or len(operand[0].uses()) != 1:
            return None
        matmul = operand[0].producer()
    if matmul is None or matmul.op_type != "MatMul" or not _default(matmul) or len(source.uses()) != 1:
        return None
    w = _const(_input(matmul, 1))
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return None
    if axis not in (-1, 2) or w.shape[1] % 3 or (sizes is not None and len(set(sizes.tolist())) != 1):
        return None
    if add is not None:
        b = _add_bias(add)
        if b is None or b.shape != (w.shape[1],):
            return None
    return split, matmul, add


def _add_bias(add: ir.Node) -> np.ndarray | None:
    """The constant operand of a bias Add."""
    return next((c for c in (_const(x) for x in add.inputs) if c is not None), None)


def _qkv_order(mha: ir.Node, split: ir.Node, columns: np.ndarray) -> np.ndarray:
    """``columns`` (..., 3 parts) reordered from the Split's order to QAttention's Q, K, V."""
    parts = np.split(columns, 3, axis=-1)
    outputs: list[ir.Value | None] = list(split.outputs)
    where = [outputs.index(mha.inputs[i]) for i in range(3)]
    return np.concatenate([parts[i] for i in where], axis=-1)


def _attention_blocks(graph: ir.Graph) -> list[tuple[ir.Node, ir.Node, ir.Node, ir.Node | None]]:
    """(MultiHeadAttention, Split, MatMul, bias Add or None) of each block ``apply`` could rewrite."""
    found = []
    for node in graph:
        if node.op_type != "MultiHeadAttention" or node.domain != "com.microsoft":
            continue
        if set(node.attributes) - set(ATTRIBUTES):
            continue  # an attribute QAttention does not share
        if any(_input(node, i) is not None for i in range(6, len(node.inputs))):
            continue  # a KV cache (past key/value) or other extras: QAttention's past has another layout
        if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            continue
        bias = _input(node, 3)
        if bias is not None and _const(bias) is None:
            continue
        found_projection = _projection(node)
        if found_projection is not None:
            found.append((node, *found_projection))
    return found


def _padding_masks(batch: int, length: int) -> list[np.ndarray]:
    full = np.ones((batch, length), dtype=np.int64)
    right, left, holes = full.copy(), full.copy(), full.copy()
    right[:, length // 2 :] = 0
    left[:, : length // 3] = 0
    holes[:, 1::3] = 0
    return [full, right, left, holes]


def _is_padding_bias(bias: np.ndarray, mask: np.ndarray) -> bool:
    """An additive bias (B or 1, 1 or heads, S or 1, S) equal to a key-padding mask of ``mask`` (B, S)."""
    if bias.ndim != 4 or bias.shape[-1] != mask.shape[1]:
        return False
    shape = np.broadcast_shapes(bias.shape, (mask.shape[0], 1, 1, 1))
    keys = np.broadcast_to(mask[:, None, None, :].astype(bool), shape)
    bias = np.broadcast_to(bias, keys.shape)
    return bool(np.all(bias[keys] == 0.0) and np.all(bias[~keys] <= PADDED))


def plan(model: onnx.ModelProto, feeds: Sequence[Feeds]) -> list[Block]:
    """The self-attention blocks ``apply`` can turn into QAttention, with their mask checked."""
    graph = ir.serde.deserialize_model(model).graph
    blocks = _attention_blocks(graph)
    inputs = {v.name for v in graph.inputs}
    if not blocks:
        return []
    checked: dict[str, bool] = {}
    biases = sorted({v.name for b, *_ in blocks if (v := _input(b, 5)) is not None and v.name is not None})
    if biases and feeds and MASK_INPUT in inputs:
        checked = _check_biases(model, feeds[0], biases)
    plans = []
    for mha, _split, matmul, _add in blocks:
        padding, bias = _input(mha, 4), _input(mha, 5)
        if padding is not None and bias is not None:
            continue
        if padding is not None:
            two_d = padding.shape is not None and padding.shape.rank() == 2
            kind = "key_padding_mask" if padding.dtype == ir.DataType.INT32 and two_d else ""
        elif bias is not None:
            kind = "attention_bias" if checked.get(bias.name or "", False) else ""
        else:
            kind = "none"
        if kind:
            plans.append(Block(mha.name or "", matmul.name or "", kind))
    return plans


def _check_biases(model: onnx.ModelProto, feed: Feeds, names: Sequence[str]) -> dict[str, bool]:
    """Which of the attention biases ``names`` equal the key-padding mask of ``attention_mask``."""
    from edgeformer.probe import probe_session

    try:
        session = probe_session(model, names, threads=2)
    except Exception:  # noqa: BLE001 - a graph that cannot be probed keeps its attention as it is
        return {}
    wanted = {i.name for i in session.get_inputs()}
    base = {k: v for k, v in feed.items() if k in wanted}
    batch, length = base[MASK_INPUT].shape
    ok = dict.fromkeys(names, True)
    for mask in _padding_masks(batch, length):
        try:
            values = session.run(list(names), base | {MASK_INPUT: mask.astype(base[MASK_INPUT].dtype)})
        except Exception:  # noqa: BLE001 - as above: unproven masks keep their attention
            return {}
        for name, value in zip(names, values, strict=True):
            ok[name] = ok[name] and _is_padding_bias(np.asarray(value), mask)
    return ok


def _quantize_columns(w: np.ndarray, reduce_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column, as onnxruntime's quantizer: [-127, 127], or [-64, 64]."""
    qmax = 64 if reduce_range else 127
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale


def apply(
    model: onnx.ModelProto, blocks: Sequence[Block], *, exclude: Collection[str] = (), reduce_range: bool = False
) -> tuple[onnx.ModelProto, int]:
    """The graph with the planned blocks (their MatMul not in ``exclude``) as QAttention."""
    todo = {b.attention: b for b in blocks if b.matmul not in exclude}
    if not todo:
        return model, 0
    model_ir = ir.serde.deserialize_model(model)
    graph = model_ir.graph
    mask_input = next((v for v in graph.inputs if v.name == MASK_INPUT), None)
    masks: dict[str, ir.Value] = {}  # the int32 attention mask, made once for the blocks that read it
    done = 0
    for mha, split, matmul, add in _attention_blocks(graph):
        block = todo.get(mha.name or "")
        if block is None or (block.mask == "attention_bias" and mask_input is None):
            continue
        name = mha.name or f"attention_{done}"
        quantize = ir.node("DynamicQuantizeLinear", [matmul.inputs[0]], num_outputs=3, name=f"{name}_quantize_input")
        weight, packed_bias, scales, zeros = _int8_weights(graph, name, mha, split, matmul, add, reduce_range)
        mask = _mask(graph, block, mha, mask_input, masks)
        attrs = {name: mha.attributes[name].value for name in ATTRIBUTES if name in mha.attributes}
        yq, ys, yz = quantize.outputs
        fused = ir.node(
            "QAttention",
            [yq, weight, packed_bias, ys, scales, mask, yz, zeros],
            attributes=attrs,
            domain="com.microsoft",
            name=f"{name}_int8",
        )
        graph.insert_before(mha, [quantize, fused])
        replace_value(mha.outputs[0], fused.outputs[0])
        # with the float weight, bias and split sizes they alone read
        remove_nodes(graph, [mha, split, *([add] if add is not None else []), matmul])
        done += 1
    if done:  # the attention bias the blocks read is now computed for nothing
        from onnx_ir.passes.common import RemoveUnusedNodesPass

        RemoveUnusedNodesPass()(model_ir)
    model_ir.opset_imports.setdefault("com.microsoft", 1)
    return ir.serde.serialize_model(model_ir), done


def _int8_weights(
    graph: ir.Graph, name: str, mha: ir.Node, split: ir.Node, matmul: ir.Node, add: ir.Node | None, reduce_range: bool
) -> tuple[ir.Value, ir.Value, ir.Value, ir.Value]:
    """The block's packed QKV weight in int8 (per column), its float bias (the Add's and
    MultiHeadAttention's own, in Q, K, V order), the scales and zero points, as initializers."""
    w = _const(_input(matmul, 1))
    add_bias = _add_bias(add) if add is not None else None
    own_bias = _const(_input(mha, 3))
    assert w is not None  # _projection checked it: a constant (C, 3 parts) float32
    bias = np.zeros(w.shape[1], dtype=np.float32)
    if add_bias is not None:
        bias = bias + add_bias
    w, bias = _qkv_order(mha, split, w), _qkv_order(mha, split, bias)  # the Add's bias: the Split's order
    if own_bias is not None:
        bias = bias + own_bias  # MultiHeadAttention's own: Q, K, V
    q, scale = _quantize_columns(w, reduce_range)
    weight = add_initializer(graph, f"{name}_qkv_int8", q)
    scales = add_initializer(graph, f"{name}_qkv_scale", scale)
    zeros = add_initializer(graph, f"{name}_qkv_zero_point", np.zeros(q.shape[1], dtype=np.int8))
    return weight, add_initializer(graph, f"{name}_qkv_bias", bias.astype(np.float32)), scales, zeros


def _mask(
    graph: ir.Graph, block: Block, mha: ir.Node, mask_input: ir.Value | None, made: dict[str, ir.Value]
) -> ir.Value | None:
    """The mask QAttention reads: MultiHeadAttention's key padding mask, or the graph's attention
    mask as int32 (one Cast, made on first use and kept in ``made``)."""
    if block.mask == "key_padding_mask":
        return mha.inputs[4]
    if block.mask != "attention_bias":
        return None
    if "int32" not in made:
        cast = ir.node("Cast", [mask_input], attributes={"to": ir.DataType.INT32}, name="attention_mask_int32")
        graph.insert_before(next(iter(graph)), [cast])
        made["int32"] = cast.outputs[0]
    return made["int32"]
