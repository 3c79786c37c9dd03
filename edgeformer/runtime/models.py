"""Models loaded from bundles, one class per family, on onnxruntime and numpy only.

RuntimeModel      any bundle: its manifest, one session per graph, ``run(feeds)`` checked against the specs
EncoderModel      ``encode(ids or text)`` -> last_hidden_state [, embeddings | logits]; ``logits(...)``
DecoderModel      ``logits(...)``, ``stepwise_logits(...)``; ``generate(prompts, ...)`` / ``stream(...)``, KV cache
Seq2SeqModel      ``encode(sources)``; ``generate(sources, ...)`` / ``stream(sources, ...)``

Inputs are text (byte-level bundles), one sequence of token ids, or a batch of them (lists of
different lengths are padded: on the right for encoders, on the left for decoder prompts). A
single input gives a single result, a list gives a list.
"""

from edgeformer.runtime.encoder import EncoderModel
from edgeformer.runtime.generating import DecoderModel, Seq2SeqModel, Step
from edgeformer.runtime.model_base import RuntimeModel

__all__ = ["DecoderModel", "EncoderModel", "RuntimeModel", "Seq2SeqModel", "Step"]
