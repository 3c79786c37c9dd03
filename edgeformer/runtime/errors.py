"""Typed errors of the device runtime. Each message says what is wrong and what to do about it.

All derive from ``RuntimeBundleError`` (itself an ``EdgeformerError``), so an app can catch one
class; input mistakes are also ``ValueError`` and provider problems also ``RuntimeError``.
"""

from __future__ import annotations

from edgeformer.errors import EdgeformerError


class RuntimeBundleError(EdgeformerError):
    """Base class of every error the runtime raises on purpose."""


class BundleFormatError(RuntimeBundleError):
    """The bundle directory or its manifest.json is missing, unreadable or not understood."""


class BundleIntegrityError(RuntimeBundleError):
    """A file of the bundle is missing, points outside the bundle, or fails its sha256."""


class ProviderError(RuntimeBundleError, RuntimeError):
    """A requested execution provider is unknown, not in this onnxruntime, or failed to start."""


class OptionError(RuntimeBundleError, ValueError):
    """A session or generation option has a value the runtime does not accept."""


class InputError(RuntimeBundleError, ValueError):
    """An input given to a model is wrong; subclasses say how."""


class InputDtypeError(InputError, TypeError):
    """An array has the wrong element type (token ids must be integers, for example)."""


class InputShapeError(InputError):
    """An array has the wrong rank or a dimension of the wrong size."""


class EmptyInputError(InputError):
    """A prompt, a text or a batch holds nothing."""


class SequenceTooLongError(InputError):
    """A sequence (plus the tokens to generate) does not fit in the model's max_positions."""


class TokenRangeError(InputError):
    """A token id is outside the model's vocabulary [0, vocab_size)."""


class TextEncodingError(InputError, UnicodeError):
    """Text was given as bytes that are not valid UTF-8."""


class NoTokenizerError(InputError):
    """Text was given to a bundle that has no tokenizer: it takes token ids only."""


class InferenceError(RuntimeBundleError):
    """onnxruntime failed while running a graph; the message is onnxruntime's first line."""


class UnverifiedManifestWarning(UserWarning):
    """A bundle's manifest.json has no manifest.sha256 beside it (written by edgeformer < 0.2, or
    removed): its files are checked against their sha256, but edits of the manifest itself cannot
    be detected. Pin the bundle with ``load(..., expect_manifest_sha256=...)`` to close that gap."""
