"""Naive references written from the definitions, loop by loop, to test the vectorised code against."""

from __future__ import annotations

import math

import torch


def allowed(
    i: int, j: int, *, attention: str, causal: bool, window: int = 0, stride: int = 0, n_global: int = 0
) -> bool:
    """May query position i attend to key position j?"""
    if causal and j > i:
        return False
    if attention == "global":
        return True
    if i < n_global or j < n_global:
        return True
    if attention == "local":
        return abs(i - j) < window
    if attention == "sparse":
        return abs(i - j) < stride or (i - j) % stride == 0
    raise ValueError(attention)


def attention_loop(q, k, v, allow, key_padding=None, q_offset: int = 0):  # noqa: ANN001
    """softmax(q.k / sqrt(d)) v one query at a time; allow(i, j) on absolute positions.

    q: (B, H, Tq, D), k and v: (B, H, Tk, D); query t sits at absolute position q_offset + t.
    """
    b_, h_, tq, d = q.shape
    tk = k.shape[2]
    out = torch.zeros_like(q, dtype=torch.float64)
    for b in range(b_):
        for h in range(h_):
            for t in range(tq):
                i = q_offset + t
                keys = [j for j in range(tk) if allow(i, j) and (key_padding is None or key_padding[b, j])]
                if not keys:
                    continue
                scores = [float(q[b, h, t] @ k[b, h, j]) / math.sqrt(d) for j in keys]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                for w, j in zip(weights, keys, strict=True):
                    out[b, h, t] += (w / total) * v[b, h, j].double()
    return out
