"""Add(bias, MatMul(x, W)) -> Add(MatMul(x, W), bias): the bias after the product.

torch.onnx's TorchScript exporter writes a Linear on a 3-D input as ``Add(bias, MatMul(x, W))``;
the attention-bias and packed-attention rules (onnxscript's mha_bias, attention) look for the
bias as the second operand. Addition commutes, so the numbers are the same.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeformer.fusions.miss_reasons import Skipped, producer_name, skip


def bias_after_matmul(model: ir.Model, skipped: Skipped | None = None) -> int:
    """Swap every Add(constant, MatMul(...)); each other Add with a constant first operand is a
    candidate left as it was, recorded in ``skipped`` with the reason."""
    swapped = 0
    for node in model.graph.all_nodes():
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            continue
        bias, product = node.inputs
        if bias is None or product is None or bias.const_value is None:
            continue  # no constant first: the bias (if any) is already second
        if product.const_value is not None:
            skip(skipped, node, "both operands are constants: nothing to order (constant folding's to fold)")
            continue
        producer = product.producer()
        if producer is None or producer.op_type != "MatMul" or producer.domain not in ("", "ai.onnx"):
            skip(skipped, node, f"its other operand comes from {producer_name(product)}, not a MatMul")
            continue
        node.replace_input_with(0, product)
        node.replace_input_with(1, bias)
        swapped += 1
    return swapped
