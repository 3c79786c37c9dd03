"""Models loaded from bundles, one class per family, on onnxruntime and numpy only.

RuntimeModel      any bundle: its manifest, one session per graph, ``run(feeds)`` checked against the specs
EncoderModel      ``encode(ids or text)`` -> last_hidden_state [, embeddings | logits]; ``logits(...)``
DecoderModel      ``logits(...)``, ``stepwise_logits(...)``; ``generate(prompts, ...)`` / ``stream(...)``, KV cache
Seq2SeqModel      ``encode(sources)``; ``generate(sources, ...)`` / ``stream(sources, ...)``

Inputs are text (byte-level bundles), one sequence of token ids, or a batch of them (lists of
different lengths are padded: on the right for encoders, on the left for decoder prompts). A
single input gives a single result, a list gives a list.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeformer import tokenizer
from edgeformer.runtime.bundle import Bundle, Graph
from edgeformer.runtime.errors import (
    BundleFormatError,
    InferenceError,
    InputError,
    InputShapeError,
    OptionError,
)
from edgeformer.runtime.generate import (
    RowToken,
    decoder_steps,
    empty_cache,
    left_padded_positions,
    seq2seq_steps,
    teacher_forced_logits,
)
from edgeformer.runtime.inputs import Batch, check_feeds, check_mask, check_rows, pad, token_batch
from edgeformer.runtime.providers import short_name
from edgeformer.runtime.sampling import Sampling
from edgeformer.runtime.text import Codec, TextStream, codec_for


def _mentions_text(value: Any) -> bool:
    text = (str, bytes, bytearray)
    return isinstance(value, text) or (isinstance(value, list | tuple) and any(isinstance(v, text) for v in value))


@dataclass(frozen=True)
class Step:
    """One generated token, as it is streamed."""

    row: int  # which prompt of the batch (0 for a single prompt)
    index: int  # 0 for the first new token of that prompt
    token: int
    text: str  # text prompts: the text this token completes (often "" inside a character)
    last: bool  # the prompt's final token: a stop token, or max_new_tokens reached


class RuntimeModel:
    """A loaded bundle: its manifest, one onnxruntime session per graph, the providers in use.

    ``providers_tried`` lists the providers considered, in order; ``provider_outcomes`` says what
    happened to each ("used", "not installed", "failed: ..."); ``providers`` are the ones the
    sessions run on, ``provider`` the first of them.
    """

    def __init__(
        self, bundle: Bundle, sessions: dict[str, ort.InferenceSession], provider_outcomes: dict[str, str]
    ) -> None:
        self.bundle = bundle
        self.sessions = sessions
        self.provider_outcomes = provider_outcomes
        self.providers_tried = list(provider_outcomes)
        self._output_names = {name: graph.output_names() for name, graph in bundle.graphs.items()}
        first = next(iter(sessions.values()))
        self.providers = [short_name(p) for p in first.get_providers()]
        self.provider = self.providers[0]

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def family(self) -> str:
        return self.bundle.family

    @property
    def config(self) -> dict[str, Any]:
        return self.bundle.config

    @property
    def tokenizer(self) -> str:
        return self.bundle.tokenizer

    @functools.cached_property
    def codec(self) -> Codec | None:
        """Text to token ids and back (None: the bundle takes token ids only). A tokenizer.json
        is read, with the optional ``tokenizers`` library, on first use."""
        return codec_for(self.bundle)

    def __repr__(self) -> str:
        graphs = ", ".join(self.bundle.graphs)
        return f"<{type(self).__name__} {self.name!r} ({self.family}; graphs {graphs}) on {', '.join(self.providers)}>"

    def _config_int(self, key: str) -> int:
        value = self.config.get(key)
        if not isinstance(value, int):
            raise BundleFormatError(f"{self.bundle.path}: manifest config has no integer {key!r}")
        return value

    @property
    def max_positions(self) -> int:
        return self._config_int("max_positions")

    @property
    def vocab_size(self) -> int:
        return self._config_int("vocab_size")

    def graph(self, name: str) -> Graph:
        if name not in self.bundle.graphs:
            raise InputError(f"this bundle has no graph {name!r}; it has {', '.join(self.bundle.graphs)}")
        return self.bundle.graphs[name]

    def run(self, feeds: dict[str, Any], graph: str | None = None) -> dict[str, np.ndarray]:
        """Run one graph (the only one, or ``graph``) on raw feeds checked against the manifest:
        every input present, of its dtype, rank and fixed sizes. Returns outputs by name."""
        name = graph or next(iter(self.bundle.graphs))
        spec = self.graph(name)
        return self._run(name, check_feeds(feeds, spec.inputs, name))

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._output_names[graph]
        try:
            outs = self.sessions[graph].run(names, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types; keep the message
            text = str(exc).strip().splitlines()
            raise InferenceError(f"onnxruntime failed running graph {graph!r}: {text[0] if text else exc!r}") from None
        return dict(zip(names, outs, strict=True))

    def _batch(self, inputs: Any, *, bos: bool, max_len: int, why: str = "") -> Batch:
        kind: str | Codec = self.tokenizer
        if self.tokenizer.endswith(".json") and _mentions_text(inputs):
            kind = self.codec or kind
        batch = token_batch(inputs, tokenizer_kind=kind, bos=bos)
        check_rows(batch.rows, vocab_size=self.vocab_size, max_len=max_len, why=why)
        return batch

    def _ids_and_mask(self, batch: Batch, attention_mask: Any, *, left: bool) -> tuple[np.ndarray, np.ndarray]:
        if attention_mask is None:
            return pad(batch.rows, self._config_int("pad_token_id"), left=left)
        if len({r.size for r in batch.rows}) > 1:
            raise InputShapeError("an attention_mask needs input_ids of equal lengths (or leave it out to pad)")
        ids = np.stack(batch.rows)
        return ids, check_mask(attention_mask, ids.shape)


class EncoderModel(RuntimeModel):
    """An encoder bundle (graph ``model``): hidden states, and embeddings or logits when it has them.

    Text (byte-level bundles) is encoded as UTF-8 bytes without a begin-of-text token, as the
    demo encoder was trained; a batch of different lengths is padded on the right.
    """

    def encode(self, inputs: Any, attention_mask: Any = None) -> dict[str, np.ndarray]:
        """Outputs by name: ``last_hidden_state`` (B, T, C) and, when the graph has them,
        ``embeddings`` (B, C) or ``logits``. ``attention_mask`` (B, T) of 0/1 is optional.
        A static-shape bundle (mobile targets) gets its inputs padded to its fixed sequence and
        run in batches of its fixed size; the outputs come back at the inputs' own shape."""
        batch = self._batch(inputs, bos=False, max_len=self._static_dim("model", 1) or self.max_positions)
        ids, mask = self._ids_and_mask(batch, attention_mask, left=False)
        return self._run_fitted("model", ids, mask)

    def _static_dim(self, graph: str, axis: int) -> int | None:
        spec = self.graph(graph).input("input_ids")
        dim = spec.shape[axis] if spec is not None and len(spec.shape) > axis else None
        return dim if isinstance(dim, int) else None

    def _run_fitted(self, graph: str, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Run (B, T) ids through ``graph``, padded to its fixed sequence length and split into
        its fixed batch size when the graph has them; outputs trimmed back to (B, T, ...)."""
        rows, width = ids.shape
        fixed_b, fixed_t = self._static_dim(graph, 0), self._static_dim(graph, 1)
        if fixed_b is None and fixed_t is None:
            return self._run(graph, {"input_ids": ids, "attention_mask": mask})
        t = fixed_t or width
        step = fixed_b or rows
        pad_id = self._config_int("pad_token_id")
        parts = []
        for start in range(0, rows, step):
            chunk_ids = np.full((step, t), pad_id, dtype=np.int64)
            chunk_mask = np.zeros((step, t), dtype=np.int64)
            n = min(step, rows - start)
            chunk_ids[:n, :width], chunk_mask[:n, :width] = ids[start : start + n], mask[start : start + n]
            chunk_mask[n:, 0] = 1  # filler rows of a fixed batch: one token, so no row is fully masked
            outs = self._run(graph, {"input_ids": chunk_ids, "attention_mask": chunk_mask})
            parts.append({k: v[:n] for k, v in outs.items()})
        joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        for name, value in joined.items():  # per-token outputs back to the inputs' length
            if value.ndim >= 3 and value.shape[1] == t and t != width:
                joined[name] = value[:, :width]
        return joined

    def logits(self, inputs: Any, attention_mask: Any = None) -> np.ndarray:
        """The ``logits`` output: (B, T, V) for a language-model head, (B, labels) for a classifier."""
        if "logits" not in self.graph("model").output_names():
            have = ", ".join(self.graph("model").output_names())
            head = self.config.get("head")
            raise InputError(f"this encoder bundle has no logits output (head {head!r}); it has {have}")
        return self.encode(inputs, attention_mask)["logits"]


class _Generating(RuntimeModel):
    """What decoders and encoder-decoders share: generation options, streaming, results."""

    def _options(
        self,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        seed: int | None,
        stop_tokens: int | Iterable[int] | None,
    ) -> tuple[Sampling, set[int]]:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise OptionError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise OptionError(f"seed must be an integer or None, got {seed!r}")
        sampling = Sampling(temperature, top_k, top_p, seed)
        if stop_tokens is None:
            eos = self.config.get("eos_token_id", -1)
            return sampling, {eos} if isinstance(eos, int) and eos >= 0 else set()
        if isinstance(stop_tokens, int | np.integer):
            stop_tokens = [int(stop_tokens)]
        try:
            if isinstance(stop_tokens, str | bytes):
                raise TypeError("text")
            stop = {int(t) for t in stop_tokens}
        except (TypeError, ValueError):
            raise OptionError(f"stop_tokens must be token ids (an int or ints), got {stop_tokens!r}") from None
        return sampling, stop

    def _steps(self, batch: Batch, tokens: Iterator[RowToken]) -> Iterator[Step]:
        """Number the tokens per row and, for byte-level bundles, decode text as characters complete."""
        counts = [0] * len(batch.rows)
        text = self.tokenizer == "bytes"
        decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in batch.rows] if text else []
        codec = self.codec if batch.text and not text else None
        streams = [TextStream(codec) for _ in batch.rows] if codec is not None else []
        for row, token, last in tokens:
            piece = ""
            if text:
                piece = decoders[row].decode(bytes([token]) if 0 <= token < 256 else b"", final=last)
            elif streams:
                piece = streams[row].push(token, last=last)
            yield Step(row, counts[row], token, piece, last)
            counts[row] += 1

    def _collect(
        self, batch: Batch, steps: Iterator[Step], callback: Callable[[Step], Any] | None
    ) -> str | list[str] | list[int] | list[list[int]]:
        tokens: list[list[int]] = [[] for _ in batch.rows]
        for step in steps:
            tokens[step.row].append(step.token)
            if callback is not None:
                callback(step)
        results: list = tokens
        if batch.text:
            codec = None if self.tokenizer == "bytes" else self.codec
            results = [(codec.decode if codec is not None else tokenizer.decode)(t) for t in tokens]
        return results[0] if batch.single else results


class DecoderModel(_Generating):
    """A decoder-only bundle (graph ``model`` with a KV cache).

    Text prompts (byte-level bundles) start with the begin-of-text token; generated text is the
    continuation only. Prompts of different lengths are padded on the left with the config's
    pad_token_id; positions count real tokens only, so each prompt gets the tokens it gets alone.
    """

    def logits(self, inputs: Any, attention_mask: Any = None) -> np.ndarray:
        """(B, T, V) logits of whole sequences (no cache); a ragged batch is left-padded."""
        batch = self._batch(inputs, bos=True, max_len=self.max_positions)
        ids, mask = self._ids_and_mask(batch, attention_mask, left=True)
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": left_padded_positions(mask)}
        feeds.update(empty_cache(self.graph("model").inputs, ids.shape[0]))
        return self._run("model", feeds)["logits"]

    def stepwise_logits(self, inputs: Any, attention_mask: Any = None) -> np.ndarray:
        """(B, T, V) logits like ``logits``, computed one token per call through the KV cache, as
        ``generate`` runs the graph: what a reduced-precision bundle predicts while generating."""
        batch = self._batch(inputs, bos=True, max_len=self.max_positions)
        ids, mask = self._ids_and_mask(batch, attention_mask, left=True)
        return teacher_forced_logits(functools.partial(self._run, "model"), self.graph("model").inputs, ids, mask)

    def stream(
        self,
        prompts: Any,
        max_new_tokens: int = 32,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_tokens: int | Iterable[int] | None = None,
        seed: int | None = None,
    ) -> Iterator[Step]:
        """Yield each new token as a ``Step`` as soon as it is chosen (rows of a batch interleave).

        temperature 0 is greedy; otherwise tokens are sampled (top_k, top_p filter; seed makes it
        reproducible). stop_tokens default to the config's eos_token_id (when >= 0); pass ()
        to generate exactly max_new_tokens. Inputs are checked here, before the first token.
        """
        return self._decode(prompts, max_new_tokens, temperature, top_k, top_p, stop_tokens, seed)[1]

    def _decode(
        self,
        prompts: Any,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        stop_tokens: int | Iterable[int] | None,
        seed: int | None,
    ) -> tuple[Batch, Iterator[Step]]:
        sampling, stop = self._options(max_new_tokens, temperature, top_k, top_p, seed, stop_tokens)
        room = self.max_positions - max_new_tokens
        why = (
            f"with max_new_tokens={max_new_tokens} a prompt may have at most {max(room, 0)} "
            f"(max_positions {self.max_positions}); shorten the prompt or lower max_new_tokens"
        )
        batch = self._batch(prompts, bos=True, max_len=max(room, 0), why=why)
        ids, mask = pad(batch.rows, self._config_int("pad_token_id"), left=True)

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._run("model", feeds)

        tokens = decoder_steps(run, self.graph("model").inputs, ids, mask, max_new_tokens, sampling, stop)
        return batch, self._steps(batch, tokens)

    def generate(
        self,
        prompts: Any,
        max_new_tokens: int = 32,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_tokens: int | Iterable[int] | None = None,
        seed: int | None = None,
        callback: Callable[[Step], Any] | None = None,
    ) -> str | list[str] | list[int] | list[list[int]]:
        """The new tokens (or text) per prompt; ``callback(step)`` sees each token as it comes.
        Options as in ``stream``; a stop token that ends a prompt is included in its tokens."""
        batch, steps = self._decode(prompts, max_new_tokens, temperature, top_k, top_p, stop_tokens, seed)
        return self._collect(batch, steps, callback)


class Seq2SeqModel(_Generating):
    """An encoder-decoder bundle (graphs ``encoder`` and ``decoder``).

    Sources of different lengths are padded on the right; decoding starts from the config's
    bos_token_id (0 when it has none). The cross-attention cache is computed once per source.
    """

    @property
    def start_token(self) -> int:
        bos = self.config.get("bos_token_id", -1)
        return bos if isinstance(bos, int) and bos >= 0 else 0

    def _sources(self, sources: Any, attention_mask: Any) -> tuple[Batch, np.ndarray, np.ndarray]:
        batch = self._batch(sources, bos=False, max_len=self.max_positions)
        ids, mask = self._ids_and_mask(batch, attention_mask, left=False)
        return batch, ids, mask

    def encode(self, sources: Any, attention_mask: Any = None) -> dict[str, np.ndarray]:
        """The encoder's outputs: ``last_hidden_state`` and the cross-attention keys/values."""
        _, ids, mask = self._sources(sources, attention_mask)
        return self._run("encoder", {"input_ids": ids, "attention_mask": mask})

    def stream(
        self,
        sources: Any,
        max_new_tokens: int = 32,
        *,
        attention_mask: Any = None,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_tokens: int | Iterable[int] | None = None,
        seed: int | None = None,
    ) -> Iterator[Step]:
        """Yield each new token as a ``Step``; options as in ``DecoderModel.stream``."""
        args = (attention_mask, temperature, top_k, top_p, stop_tokens, seed)
        return self._decode(sources, max_new_tokens, *args)[1]

    def _decode(
        self,
        sources: Any,
        max_new_tokens: int,
        attention_mask: Any,
        temperature: float,
        top_k: int,
        top_p: float,
        stop_tokens: int | Iterable[int] | None,
        seed: int | None,
    ) -> tuple[Batch, Iterator[Step]]:
        sampling, stop = self._options(max_new_tokens, temperature, top_k, top_p, seed, stop_tokens)
        if max_new_tokens > self.max_positions:
            limit = self.max_positions
            raise OptionError(f"max_new_tokens={max_new_tokens} exceeds the decoder's max_positions {limit}")
        batch, ids, mask = self._sources(sources, attention_mask)

        def encoder(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._run("encoder", feeds)

        def decoder(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._run("decoder", feeds)

        specs = self.graph("decoder").inputs
        tokens = seq2seq_steps(encoder, decoder, specs, ids, mask, self.start_token, max_new_tokens, sampling, stop)
        return batch, self._steps(batch, tokens)

    def generate(
        self,
        sources: Any,
        max_new_tokens: int = 32,
        *,
        attention_mask: Any = None,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_tokens: int | Iterable[int] | None = None,
        seed: int | None = None,
        callback: Callable[[Step], Any] | None = None,
    ) -> str | list[str] | list[int] | list[list[int]]:
        """The new tokens (or text) per source; options as in ``DecoderModel.generate``."""
        args = (attention_mask, temperature, top_k, top_p, stop_tokens, seed)
        batch, steps = self._decode(sources, max_new_tokens, *args)
        return self._collect(batch, steps, callback)
