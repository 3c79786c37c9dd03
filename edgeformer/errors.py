"""Typed errors. The CLI turns every one of these into a message without a traceback."""

from __future__ import annotations

from typing import Any, Protocol


class EdgeformerError(Exception):
    """Base class of every error edgeformer raises on purpose."""


class CardError(EdgeformerError, ValueError):
    """A model card (or the config built from it) is wrong; the message names the key."""


class CheckpointError(EdgeformerError):
    """A checkpoint is missing, unsafe, or does not fit the model it is loaded into."""


class ExportError(EdgeformerError):
    """Tracing or checking a graph failed; the message names the module and the cause."""


class BundleError(EdgeformerError):
    """A bundle directory is missing, incomplete, or its files do not match the manifest."""


class CheckReport(Protocol):
    """What a failed check reports (``parity.ParityReport``, which this module cannot import)."""

    def to_dict(self) -> dict[str, Any]: ...


class ParityError(EdgeformerError):
    """The ONNX graph does not compute what the torch source computes (within tolerance).

    ``report``: the report of the check that failed (None when the check could not run, e.g. its
    real inputs were refused)."""

    report: CheckReport | None = None


class ResourceError(EdgeformerError):
    """The machine lacks what a step needs (memory); the message gives the estimate and the way out."""


class ModelImportError(EdgeformerError):
    """A pretrained model directory cannot be imported: no config.json, an option edgeformer's
    modules do not have, or an unreadable layout; the message names the file and the key."""


class UnsupportedArchitectureError(ModelImportError):
    """The directory's architecture is not one edgeformer imports; the message lists those it does."""


class UserCodeNotRun(BundleError):
    """A bundle's torch source is a user's factory (``module:function``): edgeformer never imports
    code a bundle names; the user names it (``--factory``) to have it run. ``spec`` is the one recorded."""

    def __init__(self, spec: str) -> None:
        super().__init__(
            f"the torch source is user code ({spec}), which edgeformer does not import because a bundle names it; "
            f"pass --factory {spec} (API: factory={spec!r}) if you trust that code and want torch parity checked"
        )
        self.spec = spec


class DataError(EdgeformerError, ValueError):
    """Training data is unusable (empty, not UTF-8, a label the card does not have, a pair without
    a target); the message names the file and the line."""


class UsageError(EdgeformerError, ValueError):
    """Options that contradict each other, or one whose value is malformed: a usage error. The CLI
    shows it as click's usage error (exit 2); ``param_hint`` names the option when there is one."""

    def __init__(self, message: str, param_hint: str | None = None) -> None:
        super().__init__(message)
        self.param_hint = param_hint
