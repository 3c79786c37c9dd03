"""Decoding over bundle graphs with the KV cache, in numpy. No torch.

``greedy_decoder`` and ``greedy_seq2seq`` are the plain greedy loops the parity checks compare with
torch. ``decoder_steps`` and ``seq2seq_steps`` are the loops behind ``DecoderModel.generate`` and
``Seq2SeqModel.generate``: left-padded batches, sampling, stop tokens, one token per row per step
yielded as soon as it is chosen. Rows that stop leave the batch (their cache rows are dropped).
With greedy sampling and no stop tokens they choose exactly the tokens of the greedy loops.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator

import numpy as np
import onnxruntime as ort

from edgeformer.runtime.bundle import Spec
from edgeformer.runtime.sampling import Sampling, sample
from edgeformer.runtime.window import SlidingWindow, trim

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]  # feeds -> outputs by name


def _empty_cache(session: ort.InferenceSession, batch: int, prefix: str) -> dict[str, np.ndarray]:
    """Zero-length past keys/values for every cache input whose name starts with ``prefix``."""
    feeds = {}
    for inp in session.get_inputs():
        if inp.name.startswith(prefix):
            _, heads, _, head_dim = inp.shape
            dtype = np.float16 if inp.type == "tensor(float16)" else np.float32  # fp16 graphs take an fp16 cache
            feeds[inp.name] = np.zeros((batch, heads, 0, head_dim), dtype=dtype)
    return feeds


def greedy_decoder(
    session: ort.InferenceSession,
    prompt: np.ndarray,
    steps: int,
    eos: int | None = None,
    window: SlidingWindow | None = None,
) -> np.ndarray:
    """Greedy continuation of (B, T) prompts (no padding) by a decoder-only graph; returns (B, steps).
    With a sliding ``window`` (local decoders) the cache is trimmed to it between steps."""
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
        total = feeds["attention_mask"].shape[1] + 1  # the cache (trimmed or not) and the next token
        feeds = {
            "input_ids": nxt[:, None],
            "attention_mask": np.ones((batch, total), dtype=np.int64),
            "position_ids": np.full((batch, 1), t, dtype=np.int64),
            **{n.replace("present.", "past_key_values.", 1): v for n, v in outs.items() if n.startswith("present.")},
        }
        t += 1
        if window is not None:
            trim(feeds, window)
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


def empty_cache(specs: tuple[Spec, ...], batch: int) -> dict[str, np.ndarray]:
    """Zero-length self-attention caches (B, heads, 0, head_dim), of the dtype the manifest gives
    (float32, or float16 for fp16 graphs), for every past_key_values input whose length is the
    growing ``past_sequence`` (not the encoder's cross cache)."""
    return {
        s.name: np.zeros((batch, int(s.shape[1]), 0, int(s.shape[3])), dtype=np.dtype(s.dtype))
        for s in specs
        if s.name.startswith("past_key_values.") and s.shape[2] == "past_sequence"
    }


def left_padded_positions(mask: np.ndarray) -> np.ndarray:
    """Position ids of a (B, T) mask: real tokens count from 0, padding sits at 0 (as in torch)."""
    return np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int64)


def _past_names(outs: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(present output, past input) name pairs, worked out once per generation."""
    return [(n, n.replace("present.", "past_key_values.", 1)) for n in outs if n.startswith("present.")]


def _as_past(outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {past: outs[present] for present, past in _past_names(outs)}


RowToken = tuple[int, int, bool]  # (row of the batch, token, whether the row is finished)


def _emit(rows: np.ndarray, tokens: np.ndarray, done: np.ndarray) -> Iterator[RowToken]:
    yield from zip(rows.tolist(), tokens.tolist(), done.tolist(), strict=True)


def _finished(tokens: np.ndarray, stop: set[int], last: bool) -> np.ndarray:
    """(B,) bool: rows whose token is a stop token, or every row at the last step."""
    if last:
        return np.ones(tokens.shape, dtype=bool)
    if not stop:
        return np.zeros(tokens.shape, dtype=bool)
    return np.fromiter((t in stop for t in tokens.tolist()), dtype=bool, count=tokens.shape[0])


def decoder_steps(
    run: Run,
    specs: tuple[Spec, ...],
    ids: np.ndarray,
    mask: np.ndarray,
    steps: int,
    sampling: Sampling,
    stop: Collection[int] = (),
    window: SlidingWindow | None = None,
) -> Iterator[RowToken]:
    """Generate up to ``steps`` tokens for left-padded (B, T) prompts with a decoder-only graph.

    The attention mask covers past and new tokens; position ids are cumsum(mask) - 1 clipped at 0.
    A row finishes after a stop token (which is yielded) or after ``steps`` tokens. With a sliding
    ``window`` (local attention) the cache and the mask are trimmed to it before every step.
    """
    rng = None if sampling.greedy else np.random.default_rng(sampling.seed)
    rows = np.arange(ids.shape[0])
    stop_ids = {int(t) for t in stop}
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": left_padded_positions(mask)}
    feeds.update(empty_cache(specs, ids.shape[0]))
    positions = mask.sum(1, keepdims=True)  # (B, 1): the position of each row's next token
    pairs: list[tuple[str, str]] = []
    for step in range(steps):
        outs = run(feeds)
        nxt = sample(outs["logits"][:, -1], sampling, rng)  # (B,)
        done = _finished(nxt, stop_ids, step == steps - 1)
        yield from _emit(rows, nxt, done)
        if done.all():
            return
        pairs = pairs or _past_names(outs)
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)  # (B, Tpast + 1)
        feeds = {"input_ids": nxt[:, None], "attention_mask": mask, "position_ids": positions}
        for present, past in pairs:
            feeds[past] = outs[present]
        if done.any():  # finished rows leave the batch, with their cache rows
            keep = ~done
            feeds = {n: v[keep] for n, v in feeds.items()}
            rows, positions = rows[keep], positions[keep]
        if window is not None:
            trim(feeds, window)
        mask = feeds["attention_mask"]
        positions = positions + 1


def teacher_forced_logits(
    run: Run, specs: tuple[Spec, ...], ids: np.ndarray, mask: np.ndarray, window: SlidingWindow | None = None
) -> np.ndarray:
    """(B, T, V) logits of left-padded (B, T) rows fed one token per step through the KV cache,
    the way generation runs them: step t sees token t and the cache of tokens 0..t-1 (teacher
    forcing). Equal to one whole-sequence pass in exact arithmetic; int8 graphs differ, because
    their activations are quantized per call (one token here, the whole batch in a prefill). With a
    sliding ``window`` the cache is trimmed to it, as generation trims it."""
    positions = left_padded_positions(mask)
    feeds = empty_cache(specs, ids.shape[0])
    feeds["attention_mask"] = mask[:, :0]
    steps = []
    pairs: list[tuple[str, str]] = []
    for t in range(ids.shape[1]):
        feeds.update(input_ids=ids[:, t : t + 1], position_ids=positions[:, t : t + 1])
        feeds["attention_mask"] = np.concatenate([feeds["attention_mask"], mask[:, t : t + 1]], axis=1)
        if window is not None:
            trim(feeds, window)
        outs = run(feeds)
        steps.append(outs["logits"][:, -1])
        pairs = pairs or _past_names(outs)
        for present, past in pairs:
            feeds[past] = outs[present]
    return np.stack(steps, axis=1)


def seq2seq_steps(
    run_encoder: Run,
    run_decoder: Run,
    specs: tuple[Spec, ...],
    source: np.ndarray,
    source_mask: np.ndarray,
    start: int,
    steps: int,
    sampling: Sampling,
    stop: Collection[int] = (),
) -> Iterator[RowToken]:
    """Generate up to ``steps`` tokens per (B, S) source with an encoder-decoder; the encoder and
    the cross-attention keys/values run once. Rows finish as in ``decoder_steps``."""
    rng = None if sampling.greedy else np.random.default_rng(sampling.seed)
    rows = np.arange(source.shape[0])
    stop_ids = {int(t) for t in stop}
    cross = _as_past(run_encoder({"input_ids": source, "attention_mask": source_mask}))  # computed once
    nxt = np.full(source.shape[0], start, dtype=np.int64)
    feeds = {"input_ids": nxt[:, None], "encoder_attention_mask": source_mask, **cross}
    feeds.update(empty_cache(specs, source.shape[0]))
    pairs: list[tuple[str, str]] = []
    for step in range(steps):
        outs = run_decoder(feeds)
        nxt = sample(outs["logits"][:, -1], sampling, rng)
        done = _finished(nxt, stop_ids, step == steps - 1)
        yield from _emit(rows, nxt, done)
        if done.all():
            return
        pairs = pairs or _past_names(outs)
        feeds["input_ids"] = nxt[:, None]
        for present, past in pairs:  # the self-attention cache (the cross cache is not an output)
            feeds[past] = outs[present]
        if done.any():  # finished rows leave the batch, with their cache and source rows
            keep = ~done
            feeds = {n: v[keep] for n, v in feeds.items()}
            rows = rows[keep]
