"""Greedy decoding over bundle graphs with the KV cache, in numpy. No torch.

Works from the graphs' own input specs (names and shapes), so it needs nothing but the sessions.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def _empty_cache(session: ort.InferenceSession, batch: int, prefix: str) -> dict[str, np.ndarray]:
    """Zero-length past keys/values for every cache input whose name starts with ``prefix``."""
    feeds = {}
    for inp in session.get_inputs():
        if inp.name.startswith(prefix):
            _, heads, _, head_dim = inp.shape
            feeds[inp.name] = np.zeros((batch, heads, 0, head_dim), dtype=np.float32)
    return feeds


def greedy_decoder(session: ort.InferenceSession, prompt: np.ndarray, steps: int, eos: int | None = None) -> np.ndarray:
    """Greedy continuation of (B, T) prompts (no padding) by a decoder-only graph; returns (B, steps)."""
    batch, t = prompt.shape
    out_names = [o.name for o in session.get_outputs()]
    feeds = {
        "input_ids": prompt.astype(np.int64),
        "attention_mask": np.ones((batch, t), dtype=np.int64),
        "position_ids": np.broadcast_to(np.arange(t, dtype=np.int64), (batch, t)).copy(),
        **_empty_cache(session, batch, "past_key_values."),
    }
    tokens = []
    for _ in range(steps):
        outs = dict(zip(out_names, session.run(out_names, feeds), strict=True))
        nxt = outs["logits"][:, -1].argmax(-1).astype(np.int64)  # (B,)
        tokens.append(nxt)
        if eos is not None and (nxt == eos).all():
            break
        total = feeds["attention_mask"].shape[1] + 1
        feeds = {
            "input_ids": nxt[:, None],
            "attention_mask": np.ones((batch, total), dtype=np.int64),
            "position_ids": np.full((batch, 1), total - 1, dtype=np.int64),
            **{n.replace("present.", "past_key_values.", 1): v for n, v in outs.items() if n.startswith("present.")},
        }
    return np.stack(tokens, axis=1)


def greedy_seq2seq(
    encoder: ort.InferenceSession,
    decoder: ort.InferenceSession,
    source: np.ndarray,
    start: int,
    steps: int,
    source_mask: np.ndarray | None = None,
    eos: int | None = None,
) -> np.ndarray:
    """Greedy decoding of an encoder-decoder: the encoder (and cross keys/values) runs once."""
    batch = source.shape[0]
    mask = np.ones_like(source, dtype=np.int64) if source_mask is None else source_mask.astype(np.int64)
    enc_names = [o.name for o in encoder.get_outputs()]
    enc = dict(
        zip(
            enc_names,
            encoder.run(enc_names, {"input_ids": source.astype(np.int64), "attention_mask": mask}),
            strict=True,
        )
    )
    cross = {n.replace("present.", "past_key_values.", 1): v for n, v in enc.items() if n.startswith("present.")}
    dec_names = [o.name for o in decoder.get_outputs()]
    feeds = {
        "input_ids": np.full((batch, 1), start, dtype=np.int64),
        "encoder_attention_mask": mask,
        **cross,
        **_empty_cache(decoder, batch, "past_key_values."),
    }
    feeds.update(cross)  # the cross cache has its real length, not zero
    tokens = []
    for _ in range(steps):
        outs = dict(zip(dec_names, decoder.run(dec_names, feeds), strict=True))
        nxt = outs["logits"][:, -1].argmax(-1).astype(np.int64)
        tokens.append(nxt)
        if eos is not None and (nxt == eos).all():
            break
        feeds["input_ids"] = nxt[:, None]
        for n, v in outs.items():
            if n.startswith("present."):
                feeds[n.replace("present.", "past_key_values.", 1)] = v
    return np.stack(tokens, axis=1)
