"""The device runtime: bundles on onnxruntime and numpy only (never torch, never onnx).

    from edgeformer import runtime
    model = runtime.load("demo-decoder-cpu-fp32/", providers=("cuda", "cpu"))
    model.generate("Return the", max_new_tokens=32)      # greedy text
    for step in model.stream("Return the", temperature=0.8, top_k=40, seed=0):
        print(step.text, end="", flush=True)

Modules: ``bundle`` (manifest and file checks), ``providers`` and ``session`` (execution providers
and session options), ``inputs`` (validation, tokenization, padding), ``sampling``, ``generate``
(the KV-cache loops), ``models`` (one class per family), ``loader`` (``load``), ``errors``;
``bench`` (``python -m edgeformer.runtime.bench``: the device benchmark runner, which lives in
``edgeformer.benchmark``), which ``import edgeformer.runtime`` does not load.
"""

from edgeformer.runtime.errors import (
    BundleFormatError,
    BundleIntegrityError,
    EmptyInputError,
    InferenceError,
    InputDtypeError,
    InputError,
    InputShapeError,
    NoTokenizerError,
    OptionError,
    ProviderError,
    RuntimeBundleError,
    SequenceTooLongError,
    TextEncodingError,
    TokenRangeError,
    UnverifiedManifestWarning,
)
from edgeformer.runtime.loader import load
from edgeformer.runtime.models import DecoderModel, EncoderModel, RuntimeModel, Seq2SeqModel, Step
from edgeformer.runtime.providers import PROVIDERS

__all__ = [
    "PROVIDERS",
    "BundleFormatError",
    "BundleIntegrityError",
    "DecoderModel",
    "EmptyInputError",
    "EncoderModel",
    "InferenceError",
    "InputDtypeError",
    "InputError",
    "InputShapeError",
    "NoTokenizerError",
    "OptionError",
    "ProviderError",
    "RuntimeBundleError",
    "RuntimeModel",
    "Seq2SeqModel",
    "SequenceTooLongError",
    "Step",
    "TextEncodingError",
    "TokenRangeError",
    "UnverifiedManifestWarning",
    "load",
]
