"""The two generation loops the runner times against each other, and the inputs of every case.

``runtime_generate`` is the runtime's own ``generate()``; ``bare_decoder`` / ``bare_seq2seq`` are the
minimal greedy KV-cache loops over the same sessions (what an app's hand-written loop costs). Inputs
are random token ids from a generator seeded per case, so every variant and process gets the same.
onnxruntime and numpy only.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeformer.runtime.bundle import Graph
from edgeformer.runtime.models import DecoderModel, RuntimeModel, Seq2SeqModel

# ----- the two generation loops --------------------------------------------------------------------


def _empty_past(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Zero-length self-attention caches for every past input whose length is symbolic
    (``past_sequence``), as (batch, heads, 0, head_dim) float32."""
    feeds = {}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values.") and not inp.name.endswith((".encoder.key", ".encoder.value")):
            _, heads, _, head_dim = inp.shape
            feeds[inp.name] = np.zeros((batch, heads, 0, head_dim), dtype=np.float32)
    return feeds


def bare_decoder(session: ort.InferenceSession, ids: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list[float]]:
    """The minimal greedy KV-cache loop over a decoder-only graph: (B, new_tokens) tokens and each
    token's time (seconds since the call). Prompts are (B, T) without padding."""
    start = time.perf_counter_ns()
    batch, t = ids.shape
    names = [o.name for o in session.get_outputs()]
    logits_at = names.index("logits")
    past = [(i, "past_key_values." + n[len("present.") :]) for i, n in enumerate(names) if n.startswith("present.")]
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones((batch, t), dtype=np.int64),
        "position_ids": np.tile(np.arange(t, dtype=np.int64), (batch, 1)),
        **_empty_past(session, batch),
    }
    tokens = np.empty((batch, new_tokens), dtype=np.int64)
    times = []
    for step in range(new_tokens):
        outs = session.run(names, feeds)
        tokens[:, step] = outs[logits_at][:, -1].argmax(-1)
        times.append((time.perf_counter_ns() - start) / 1e9)
        total = t + step + 1
        feeds = {
            "input_ids": tokens[:, step : step + 1].copy(),
            "attention_mask": np.ones((batch, total), dtype=np.int64),
            "position_ids": np.full((batch, 1), total - 1, dtype=np.int64),
        }
        feeds.update({name: outs[i] for i, name in past})
    return tokens, times


def bare_seq2seq(
    encoder: ort.InferenceSession, decoder: ort.InferenceSession, ids: np.ndarray, start_token: int, new_tokens: int
) -> tuple[np.ndarray, list[float]]:
    """The minimal greedy loop of an encoder-decoder: the encoder (and its cross keys/values) once,
    then one decoder call per token with the self-attention cache fed back."""
    start = time.perf_counter_ns()
    batch = ids.shape[0]
    mask = np.ones(ids.shape, dtype=np.int64)
    enc_names = [o.name for o in encoder.get_outputs()]
    enc = encoder.run(enc_names, {"input_ids": ids, "attention_mask": mask})
    cross = {
        "past_key_values." + n[len("present.") :]: v
        for n, v in zip(enc_names, enc, strict=True)
        if n.startswith("present.")
    }
    names = [o.name for o in decoder.get_outputs()]
    logits_at = names.index("logits")
    past = [(i, "past_key_values." + n[len("present.") :]) for i, n in enumerate(names) if n.startswith("present.")]
    feeds = {
        "input_ids": np.full((batch, 1), start_token, dtype=np.int64),
        "encoder_attention_mask": mask,
        **cross,
        **_empty_past(decoder, batch),
    }
    tokens = np.empty((batch, new_tokens), dtype=np.int64)
    times = []
    for step in range(new_tokens):
        outs = decoder.run(names, feeds)
        tokens[:, step] = outs[logits_at][:, -1].argmax(-1)
        times.append((time.perf_counter_ns() - start) / 1e9)
        feeds["input_ids"] = tokens[:, step : step + 1].copy()
        feeds.update({name: outs[i] for i, name in past})
    return tokens, times


def runtime_generate(model: RuntimeModel, ids: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list[float]]:
    """Greedy ``model.generate`` (exactly ``new_tokens``, no stop tokens) and each step's time:
    when the batch's last row got its token (rows of a step come in order)."""
    assert isinstance(model, DecoderModel | Seq2SeqModel)
    stamps: list[int] = []
    start = time.perf_counter_ns()
    out = model.generate(ids, new_tokens, stop_tokens=(), callback=lambda _step: stamps.append(time.perf_counter_ns()))
    batch = ids.shape[0]
    return np.asarray(out, dtype=np.int64), [(t - start) / 1e9 for t in stamps[batch - 1 :: batch]]


def bare_generate(model: RuntimeModel, ids: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list[float]]:
    """The bare loop over the model's own sessions."""
    if isinstance(model, Seq2SeqModel):
        return bare_seq2seq(model.sessions["encoder"], model.sessions["decoder"], ids, model.start_token, new_tokens)
    return bare_decoder(model.sessions["model"], ids, new_tokens)


# ----- inputs -------------------------------------------------------------------------------------------


def case_rng(seed: int, *case: int) -> np.random.Generator:
    """The random generator of one case: the same inputs for every variant and process."""
    return np.random.default_rng([seed, *case])


def prompt_ids(seed: int, vocab_size: int, batch: int, prompt: int) -> np.ndarray:
    """(batch, prompt) random token ids of a generation case, identical in every variant."""
    return case_rng(seed, 1, batch, prompt).integers(0, vocab_size, (batch, prompt), dtype=np.int64)


def forward_ids(seed: int, vocab_size: int, batch: int, sequence: int) -> np.ndarray:
    """(batch, sequence) random token ids of a forward case, identical in every variant."""
    return case_rng(seed, 0, batch, sequence).integers(0, vocab_size, (batch, sequence), dtype=np.int64)


def forward_feeds(graph: Graph, config: dict[str, Any], batch: int, sequence: int, seed: int = 0):
    """Feeds for one call of a graph: random token ids, all-ones masks, positions 0..T-1, empty
    caches; other inputs (a user's own module) ones for integers and standard normal for floats."""
    vocab = v if isinstance(v := config.get("vocab_size"), int) else 2
    rng = case_rng(seed, 2, batch, sequence)
    feeds = {}
    for spec in graph.inputs:
        past = spec.name.startswith("past_key_values.")
        dims = []
        for d in spec.shape:
            if isinstance(d, int):
                dims.append(d)
            elif d == "batch":
                dims.append(batch)
            elif d == "past_sequence":
                dims.append(0)
            else:
                dims.append(sequence)
        dtype = np.dtype(spec.dtype)
        if spec.name == "input_ids" and len(dims) == 2:
            feeds[spec.name] = forward_ids(seed, vocab, *dims).astype(dtype)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.broadcast_to(np.arange(dims[-1], dtype=dtype), dims).copy()
        elif past:
            feeds[spec.name] = np.zeros(dims, dtype=dtype)
        elif dtype.kind in "iub":
            feeds[spec.name] = np.ones(dims, dtype=dtype)
        else:
            feeds[spec.name] = rng.standard_normal(dims).astype(dtype)
    return feeds
