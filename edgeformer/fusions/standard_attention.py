"""Fused attention in standard ONNX: the opset-23 ``Attention`` op, for runtimes other than onnxruntime.

The matcher shared with the contrib form (onnxscript's ``fuse_sdpa``) first turns every
softmax(Q K^T * scale + bias) V chain into a temporary ``SDPA`` node. This rule lowers that node
to ``Attention`` (ai.onnx, opset 23) with Q, K and V in (B, H, S, Dh) layout, the additive mask as
``attn_mask`` and the scale as an attribute, so the graph holds standard ops only.
"""

from __future__ import annotations

from onnxscript.rewriter import pattern

FUSION_DOMAIN = "ai.onnxruntime._fusion"
OPSET = 23  # the first opset with Attention


class SdpaToAttention(pattern.RewriteRuleClassBase):
    """SDPA(q, k, v[, bias]) -> Attention(q, k', v[, bias]) with k' in (B, H, S, Dh)."""

    def pattern(self, op, query, key, value):
        return op.SDPA(query, key, value, _allow_other_inputs=True, _domain=FUSION_DOMAIN, _outputs=["out"])

    def check(self, context, query, key, value, out, **_):
        result = pattern.MatchResult()
        node = out.producer()
        key_format = node.attributes.get("key_format")
        if key_format is None or key_format.as_string() not in ("BHSd", "BSHd"):
            return result.fail("the fused attention has no known key layout", key)
        return result

    def rewrite(self, op, query, key, value, out, **_):
        node = out.producer()
        if node.attributes["key_format"].as_string() == "BSHd":
            key = op.Transpose(key, perm=[0, 2, 1, 3])  # (B, S, H, Dh) -> (B, H, S, Dh)
        inputs = [query, key, value]
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            inputs.append(_rows_for_each_query(op, node.inputs[3], query))
        scale = node.attributes.get("scale")
        extra = {"scale": scale.as_float()} if scale is not None else {}
        return op.Attention(*inputs, **extra)


def _rows_for_each_query(op, mask, query):
    """onnxruntime's Attention kernel wants one mask row per query position (the ONNX spec allows
    broadcasting): a (B, 1, 1, T) padding mask, as cross-attention has, is expanded to (B, 1, S, T)."""
    if mask.shape is not None and query.shape is not None and mask.shape.rank() >= 2:
        rows, wanted = mask.shape[-2], query.shape[2]
        known = isinstance(rows, int) or getattr(rows, "value", None) is not None
        if known and rows == wanted:
            return mask
    one = op.Constant(value_ints=[1])
    rows = op.Shape(query, start=2, end=3)
    return op.Expand(mask, op.Concat(one, one, rows, one, axis=0))


rules = pattern.RewriteRuleSet([SdpaToAttention.rule()])
