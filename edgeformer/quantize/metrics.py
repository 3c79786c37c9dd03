"""Task metrics of a graph against a reference graph, computed with onnxruntime and numpy.

Quantization is judged by what the model is for, not by element-wise tolerance: cosine of
embeddings and hidden states, top-1 agreement of logits, perplexity on real text, task accuracy.
Every function takes sessions (or anything with ``run(None, feeds)``) and lists of feeds, so the
same code measures fp32 against torch, int8 against fp32, and one node's sensitivity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]


def run_all(session: Any, feeds: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    return [
        dict(zip(names, session.run(names, {k: v for k, v in f.items() if k in wanted}), strict=True)) for f in feeds
    ]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).reshape(-1, a.shape[-1])
    b = b.astype(np.float64).reshape(-1, b.shape[-1])
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(denom > 0, (a * b).sum(1) / np.maximum(denom, 1e-30), 1.0)


def lm_windows(stream: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (inputs, next-token labels) windows of a token stream, as the torch recipe
    (edgeformer.demo.perplexity) cuts them."""
    n = (len(stream) - 1) // length
    return stream[: n * length].reshape(n, length), stream[1 : n * length + 1].reshape(n, length)


def perplexity(session: Any, inputs: np.ndarray, labels: np.ndarray, batch: int = 32) -> float:
    """exp(mean next-token cross-entropy) of a decoder graph, prefill with an empty cache."""
    total, count = 0.0, 0
    for i in range(0, len(inputs), batch):
        feeds = decoder_feeds(session, inputs[i : i + batch])
        logits = session.run(["logits"], feeds)[0].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        rows = labels[i : i + batch]
        total -= float(np.take_along_axis(logp, rows[..., None], -1).sum())
        count += rows.size
    return math.exp(total / count)


def decoder_feeds(session: Any, ids: np.ndarray) -> Feeds:
    """Prefill feeds for a decoder graph: ids, a full mask, positions, an empty cache."""
    b, t = ids.shape
    feeds: Feeds = {}
    for spec in session.get_inputs():
        if spec.name == "input_ids":
            feeds[spec.name] = ids.astype(np.int64)
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((b, t), dtype=np.int64)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.broadcast_to(np.arange(t, dtype=np.int64), (b, t)).copy()
        elif spec.name.startswith("past_key_values"):
            heads, dim = spec.shape[1], spec.shape[3]
            feeds[spec.name] = np.zeros((b, heads, 0, dim), dtype=np.float32)
    return feeds


def classification_accuracy(session: Any, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    preds = []
    for i in range(0, len(ids), 64):
        logits = session.run(["logits"], {"input_ids": ids[i : i + 64], "attention_mask": mask[i : i + 64]})[0]
        preds.append(logits.argmax(-1))
    pred = np.concatenate(preds)
    classes = [c for c in np.unique(labels)]
    recalls = [float((pred[labels == c] == c).mean()) for c in classes]
    return {
        "accuracy": round(float((pred == labels).mean()), 4),
        "balanced_accuracy": round(sum(recalls) / len(recalls), 4),
        "examples": int(len(labels)),
    }
