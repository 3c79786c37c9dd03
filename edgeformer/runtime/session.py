"""onnxruntime sessions: execution providers by short name, plain session options. No torch.

``open_session`` tries the planned providers in order (see ``providers.plan``) and reports what
happened to each; ``make_session`` is the strict one-liner the parity checks use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import onnxruntime as ort

from edgeformer.runtime import cuda
from edgeformer.runtime.errors import BundleFormatError, OptionError, ProviderError
from edgeformer.runtime.providers import PROVIDERS, full_name, installed, missing_message, plan, short_name

__all__ = [
    "OPTIMIZATION",
    "PROVIDERS",
    "ProviderError",
    "make_session",
    "open_session",
    "provider_names",
    "session_options",
]

OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def max_threads() -> int:
    """The most intra-op threads a session may ask for: 4 per core, at least 64 (onnxruntime
    crashes creating a pool of tens of thousands; more threads than that never help)."""
    return max(64, 4 * (os.cpu_count() or 1))


def provider_names(short: Sequence[str]) -> list[str]:
    """Full names of the given providers; any that this onnxruntime lacks is a ProviderError."""
    have = installed()
    out = []
    for name in short:
        full = full_name(name)
        if full not in have:
            raise ProviderError(missing_message(name))
        out.append(full)
    return out


class SessionSettings(TypedDict, total=False):
    """The keyword options of ``open_session``, passed on to ``session_options``."""

    threads: int | None
    spinning: bool
    optimization: str
    memory_arena: bool
    optimized_model_path: str | Path | None


def session_options(
    *,
    threads: int | None = None,
    spinning: bool = True,
    optimization: str = "all",
    memory_arena: bool = True,
    optimized_model_path: str | Path | None = None,
) -> ort.SessionOptions:
    """SessionOptions from plain values.

    threads: intra-op threads (None: onnxruntime's default, one per core). spinning: whether idle
    intra-op threads spin (``session.intra_op.allow_spinning``); turn it off when several sessions
    share the cores. optimization: disable, basic, extended or all. memory_arena: the CPU memory
    arena. optimized_model_path: where onnxruntime saves the graph after its optimizations.
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= max_threads()
    ):
        raise OptionError(
            f"threads must be None (one per core) or an integer from 1 to {max_threads()} on this machine, "
            f"got {threads!r:.40}"
        )
    if optimization not in OPTIMIZATION:
        raise OptionError(f"optimization must be one of {', '.join(OPTIMIZATION)}, got {optimization!r}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.graph_optimization_level = OPTIMIZATION[optimization]
    opts.enable_cpu_mem_arena = bool(memory_arena)
    if optimized_model_path is not None:
        Path(optimized_model_path).parent.mkdir(parents=True, exist_ok=True)
        opts.optimized_model_filepath = str(optimized_model_path)
    return opts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_session(
    model: str | Path | bytes,
    providers: Sequence[str] | str = ("cpu",),
    *,
    strict: bool = False,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    precision: str = "fp32",
    external_data: Mapping[str, bytes] | None = None,
    label: str | None = None,
    **options: Unpack[SessionSettings],
) -> tuple[ort.InferenceSession, dict[str, str]]:
    """A session on the first providers of the preference list that start, and what happened to
    each provider considered, in order (short name -> "used", "not installed", "failed: ...",
    "did not start" or "not tried").

    Without ``strict``, a provider that is missing or fails to start is skipped for the next one
    (the CPU provider last). With ``strict``, either every requested provider runs or ProviderError.
    ``provider_options`` (short or full provider name -> options) update edgeformer's defaults for
    the bundle's ``precision`` (``cuda.provider_options``: CUDA without TF32 for fp32 parity).
    ``model`` given as bytes (a graph already read and verified) takes its external data from
    ``external_data`` (location as the graph names it -> the file's bytes), never from disk;
    ``label`` names it in messages (the file the bytes came from).
    """
    chosen = plan(providers, strict=strict)
    per_provider = cuda.provider_options(chosen.requested + chosen.candidates, provider_options, precision)
    considered = dict.fromkeys(chosen.requested + chosen.candidates)  # preference order, CPU fallback last
    outcomes = {short_name(p): chosen.skipped.get(p, "not tried") for p in considered}
    opts = session_options(**options)
    if external_data:
        names, buffers = list(external_data), list(external_data.values())
        opts.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
    source = model if isinstance(model, bytes) else str(model)
    label = label or ("the graph" if isinstance(model, bytes) else Path(model).name)  # named in messages
    error = ""
    for i, candidate in enumerate(chosen.candidates):
        try:
            tried = chosen.candidates[i:]
            session = ort.InferenceSession(
                source, opts, providers=tried, provider_options=[per_provider.get(p, {}) for p in tried]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; we keep the message
            error = _first_line(exc)
            if strict:
                raise ProviderError(
                    f"onnxruntime could not open {label} on {', '.join(map(short_name, chosen.candidates))}: {error}"
                ) from None
            outcomes[short_name(candidate)] = f"failed: {error}"
            continue
        outcomes |= _started(session.get_providers(), tried, chosen.requested if strict else (), label)
        return session, outcomes
    raise BundleFormatError(f"onnxruntime could not open {label}: {error}")


def _started(used: list[str], tried: list[str], required: Sequence[str], label: str) -> dict[str, str]:
    """Which of the ``tried`` providers the session runs on ("used") and which it skipped ("did not
    start"); a ``required`` one that did not start is a ProviderError."""
    outcomes = {}
    for name in tried:
        if name in used:
            outcomes[short_name(name)] = "used"
        elif name in required:
            raise ProviderError(
                f"execution provider {short_name(name)!r} is installed but did not start for {label} "
                f"(onnxruntime fell back to {', '.join(map(short_name, used))}); check its libraries and drivers"
            )
        else:
            outcomes[short_name(name)] = "did not start"
    return outcomes


def make_session(
    model: str | Path | bytes,
    providers: Sequence[str] = ("cpu",),
    *,
    threads: int | None = None,
    spinning: bool = True,
    optimization: str = "all",
    memory_arena: bool = True,
    optimized_model_path: str | Path | None = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    precision: str = "fp32",
) -> ort.InferenceSession:
    """An InferenceSession on exactly the given providers (short names), with plain options."""
    provider_names(providers)  # a missing provider is an error here, with where to get it
    session, _ = open_session(
        model,
        providers,
        strict=True,
        provider_options=provider_options,
        precision=precision,
        threads=threads,
        spinning=spinning,
        optimization=optimization,
        memory_arena=memory_arena,
        optimized_model_path=optimized_model_path,
    )
    return session
