"""Execution providers by short name: which exist, which are installed, where to get the others.

``plan`` turns a preference list (``("cuda", "cpu")``) into the providers to try, in order. Without
``strict`` a provider this onnxruntime lacks is skipped (and recorded) and the CPU provider closes
the list; with ``strict`` a missing provider is an error that names the installed providers and the
package (or build flag) that brings the missing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import onnxruntime as ort

from edgeformer.runtime.errors import ProviderError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "directml": "DmlExecutionProvider",
    "azure": "AzureExecutionProvider",
}

# Where each provider comes from, for the message when it is missing.
WHERE = {
    "cpu": "every onnxruntime package (pip install onnxruntime)",
    "cuda": "pip install onnxruntime-gpu (instead of onnxruntime), with the CUDA and cuDNN libraries it names",
    "tensorrt": "pip install onnxruntime-gpu (instead of onnxruntime), with the TensorRT libraries",
    "xnnpack": "the mobile packages (Android onnxruntime-android, iOS onnxruntime-objc / onnxruntime-c) "
    "or a custom build with --use_xnnpack",
    "nnapi": "a custom build with --use_nnapi / Android package onnxruntime-android",
    "coreml": "the macOS wheel (pip install onnxruntime on macOS), iOS pod onnxruntime-objc, "
    "or a custom build with --use_coreml",
    "qnn": "pip install onnxruntime-qnn (Windows on Snapdragon), or a custom build with --use_qnn",
    "webgpu": "onnxruntime-web (JavaScript) or a custom build with --use_webgpu",
    "directml": "pip install onnxruntime-directml (Windows, instead of onnxruntime)",
    "azure": "the onnxruntime packages built with --use_azure (remote inference endpoints)",
}


def full_name(name: str) -> str:
    """``cuda`` -> ``CUDAExecutionProvider``; full provider names pass through."""
    key = name.lower()
    if key in PROVIDERS:
        return PROVIDERS[key]
    if name in PROVIDERS.values() or name in ort.get_all_providers():
        return name
    raise ProviderError(f"unknown execution provider {name!r}; short names: {', '.join(PROVIDERS)}")


def short_name(full: str) -> str:
    """``CUDAExecutionProvider`` -> ``cuda``; providers without a short name keep their full name."""
    return next((short for short, long in PROVIDERS.items() if long == full), full)


def installed() -> list[str]:
    """Full names of the providers this onnxruntime was built with."""
    return list(ort.get_available_providers())


def missing_message(name: str) -> str:
    """Why a provider cannot be used here, and where it comes from."""
    short = short_name(full_name(name))
    where = WHERE.get(short, "a build of onnxruntime that includes it")
    have = ", ".join(short_name(p) for p in installed())
    return (
        f"execution provider {short!r} ({full_name(name)}) is not in this onnxruntime {ort.__version__}; "
        f"installed: {have}. It comes with {where}."
    )


@dataclass
class ProviderPlan:
    """The providers to try, in order, and what happened to each requested one."""

    requested: list[str]  # full names, in preference order
    candidates: list[str]  # installed full names to hand to onnxruntime, in order
    skipped: dict[str, str] = field(default_factory=dict)  # full name -> why it was not tried


def plan(preference: Sequence[str] | str, *, strict: bool = False) -> ProviderPlan:
    """The providers to try for a preference list (short or full names)."""
    if isinstance(preference, str):
        preference = [preference]
    if not preference:
        raise ProviderError(f"no execution provider requested; short names: {', '.join(PROVIDERS)}")
    requested = list(dict.fromkeys(full_name(p) for p in preference))
    have = set(installed())
    missing = [p for p in requested if p not in have]
    if strict and missing:
        raise ProviderError(" ".join(missing_message(p) for p in missing) + " (strict: no fallback)")
    candidates = [p for p in requested if p in have]
    if not strict and PROVIDERS["cpu"] not in candidates:
        candidates.append(PROVIDERS["cpu"])  # the fallback of last resort
    return ProviderPlan(requested, candidates, {p: "not installed" for p in missing})
