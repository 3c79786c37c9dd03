"""Decoder and encoder-decoder bundles: generation with a KV cache, streaming, sampling."""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeformer import tokenizer
from edgeformer.runtime.errors import (
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
from edgeformer.runtime.inputs import Batch, pad
from edgeformer.runtime.model_base import RuntimeModel
from edgeformer.runtime.sampling import Sampling
from edgeformer.runtime.text import TextStream
from edgeformer.runtime.window import SlidingWindow, sliding_window


@dataclass(frozen=True)
class Step:
    """One generated token, as it is streamed."""

    row: int  # which prompt of the batch (0 for a single prompt)
    index: int  # 0 for the first new token of that prompt
    token: int
    text: str  # text prompts: the text this token completes (often "" inside a character)
    last: bool  # the prompt's final token: a stop token, or max_new_tokens reached


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
    A local-attention bundle (graph entry ``sliding_window``) keeps only the window of its cache.
    """

    @functools.cached_property
    def window(self) -> SlidingWindow | None:
        """The sliding window the cache is trimmed to between steps, or None (the whole cache)."""
        entry = self.bundle.typed.graphs["model"].sliding_window if "model" in self.bundle.typed.graphs else None
        return sliding_window(entry, self.graph("model").inputs)

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
        run = functools.partial(self._run, "model")
        return teacher_forced_logits(run, self.graph("model").inputs, ids, mask, self.window)

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

        specs = self.graph("model").inputs
        tokens = decoder_steps(run, specs, ids, mask, max_new_tokens, sampling, stop, self.window)
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
