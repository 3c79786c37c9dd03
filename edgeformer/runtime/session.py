"""onnxruntime sessions: execution providers by short name, plain session options. No torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}


class ProviderError(RuntimeError):
    """A requested execution provider is not in the installed onnxruntime."""


def provider_names(short: Sequence[str]) -> list[str]:
    available = ort.get_available_providers()
    out = []
    for name in short:
        full = PROVIDERS.get(name.lower(), name)
        if full not in available:
            raise ProviderError(
                f"execution provider {name!r} ({full}) is not in this onnxruntime; installed: {', '.join(available)}"
            )
        out.append(full)
    return out


def make_session(
    model: str | Path | bytes,
    providers: Sequence[str] = ("cpu",),
    *,
    threads: int | None = None,
    spinning: bool = True,
    optimization: str = "all",
) -> ort.InferenceSession:
    """An InferenceSession on the given providers (short names), with plain options."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=provider_names(providers))
