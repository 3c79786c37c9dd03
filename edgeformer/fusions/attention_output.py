"""Attention whose output is flattened straight to 2-D still fuses.

Hugging Face GPT-2 reshapes the attention output (B, H, S, Dh) -> transpose -> (B*S, D) in one
Reshape before its Conv1D/Gemm projection. The multi-head-attention fusion expects the (B, S, D)
form and, matching that Reshape anyway, would hand a 3-D tensor to a 2-D Gemm. Splitting the
Reshape in two — to (B, S, D), then to whatever the graph asked for — lets attention fuse and keeps
the graph valid.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

FUSION_DOMAIN = "ai.onnxruntime._fusion"


class SplitFlattenedAttentionOutput(pattern.RewriteRuleClassBase):
    def pattern(self, op, sdpa_out, shape):
        return op.Reshape(op.Transpose(sdpa_out, perm=[0, 2, 1, 3]), shape, _outputs=["flat"])

    def check(self, context, sdpa_out, shape, flat, **_):
        result = pattern.MatchResult()
        producer = sdpa_out.producer()
        if producer is None or producer.op_type != "SDPA" or producer.domain != FUSION_DOMAIN:
            return result.fail("not the output of a fused scaled dot-product attention", sdpa_out)
        if flat.shape is None or flat.shape.rank() != 2:
            return result.fail("the attention output is not flattened to 2-D", flat)
        return result

    def rewrite(self, op, sdpa_out, shape, **_):
        bsd = op.Constant(value=ir.tensor(np.array([0, 0, -1], dtype=np.int64)))
        merged = op.Reshape(op.Transpose(sdpa_out, perm=[0, 2, 1, 3]), bsd)  # (B, S, D)
        return op.Reshape(merged, shape)


rules = pattern.RewriteRuleSet([SplitFlattenedAttentionOutput.rule()])
