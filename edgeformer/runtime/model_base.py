"""What every loaded bundle is: its manifest, one onnxruntime session per graph, inputs checked
against the IO spec. The families build on it (encoder.py, generating.py).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeformer.runtime.bundle import Bundle, Graph
from edgeformer.runtime.errors import (
    BundleFormatError,
    InferenceError,
    InputError,
    InputShapeError,
)
from edgeformer.runtime.inputs import Batch, check_feeds, check_mask, check_rows, pad, token_batch
from edgeformer.runtime.providers import short_name
from edgeformer.runtime.text import Codec, codec_for


def _mentions_text(value: Any) -> bool:
    text = (str, bytes, bytearray)
    return isinstance(value, text) or (isinstance(value, list | tuple) and any(isinstance(v, text) for v in value))


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
