"""Attention over a KV cache reads the cache as it is, (B, heads, L, head_dim).

A decoder's cache is ``present.{i}.key`` (B, N, L, H), the concatenation of the past and the new
keys. The multi-head-attention fusion leaves it as torch wrote it for a (B, L, N*H) key:
``Reshape(Transpose(cache, perm=[0, 2, 1, 3]), [0, 0, -1])``, and MultiHeadAttention transposes
it back to (B, N, L, H) inside. Both copies run over the whole cache at every generated token.
MultiHeadAttention takes 4-D keys and values in (B, N, L, H) directly (without a packed bias),
so this rule feeds it the cache and drops the round trip.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern


def _flattens_heads(shape: ir.Value) -> bool:
    """The Reshape target merges the last two axes of (B, L, N, H): [0, 0, -1] or [0, 0, N*H]."""
    const = ir.convenience.get_const_tensor(shape)
    if const is None:
        return False
    dims = const.numpy().tolist()
    return len(dims) == 3 and dims[:2] == [0, 0]


class MhaBnshCache(pattern.RewriteRuleClassBase):
    def pattern(self, op, query, key4, value4, key_shape, value_shape, mask):
        key = op.Reshape(op.Transpose(key4, perm=[0, 2, 1, 3]), key_shape)
        value = op.Reshape(op.Transpose(value4, perm=[0, 2, 1, 3]), value_shape)
        return op.MultiHeadAttention(
            query,
            key,
            value,
            None,
            None,
            mask,
            _domain="com.microsoft",
            _allow_other_inputs=True,
            _outputs=["attention"],
        )

    def check(self, context, key4, value4, key_shape, value_shape, attention, **_):
        result = pattern.MatchResult()
        node = attention.producer()
        heads = node.attributes.get("num_heads")
        if len(node.outputs) != 1:
            return result.fail("the attention also returns a present cache", attention)
        if any(v is not None for v in node.inputs[6:]):
            return result.fail("the attention takes a past cache of its own", attention)
        for cache, shape in ((key4, key_shape), (value4, value_shape)):
            if cache.shape is None or cache.shape.rank() != 4:
                return result.fail("the cache's rank is not known to be 4", cache)
            if heads is None or cache.shape[1] != heads.as_int():
                return result.fail("axis 1 of the cache is not the attention's heads", cache)
            if not _flattens_heads(shape):
                return result.fail("the Reshape does not merge heads and head_dim", shape)
        return result

    def rewrite(self, op, query, key4, value4, mask, attention, **_):
        attributes = {name: attr.value for name, attr in attention.producer().attributes.items()}
        return op.MultiHeadAttention(query, key4, value4, None, None, mask, _domain="com.microsoft", **attributes)


rules = pattern.RewriteRuleSet([MhaBnshCache.rule()])
