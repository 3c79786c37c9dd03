"""The GPU path of the runtime: provider options, IO binding, fp16. onnxruntime + numpy only.

``provider_options``  the options each execution provider gets: defaults that keep an fp32 bundle's
                      parity (CUDA's TF32 math, on by default in onnxruntime, rounds fp32 matrix
                      products to a 10-bit mantissa and moves outputs by ~1e-3; it is turned off),
                      merged with the caller's; unknown CUDA option names and bad values are an
                      OptionError here, before any GPU is touched.
``BoundSession``      an InferenceSession run through IO binding: inputs are copied to the session's
                      device, ``present.*`` outputs (the KV cache) stay there as ``DeviceArray`` and
                      are bound again, without a copy, when the next step feeds them back.
``cache_dtype``       fp16 graphs: the empty KV cache takes the dtype the graph declares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeformer.runtime.errors import OptionError
from edgeformer.runtime.providers import PROVIDERS, full_name, short_name

# The CUDA provider's option names (onnxruntime's cuda_execution_provider_info.cc).
CUDA_OPTIONS = frozenset(
    {
        "device_id",
        "gpu_mem_limit",
        "arena_extend_strategy",
        "cudnn_conv_algo_search",
        "do_copy_in_default_stream",
        "cudnn_conv_use_max_workspace",
        "enable_cuda_graph",
        "cudnn_conv1d_pad_to_nc1d",
        "tunable_op_enable",
        "tunable_op_tuning_enable",
        "tunable_op_max_tuning_duration_ms",
        "enable_skip_layer_norm_strict_mode",
        "prefer_nhwc",
        "use_ep_level_unified_stream",
        "use_tf32",
        "sdpa_kernel",
        "has_user_compute_stream",
        "user_compute_stream",
    }
)
DEVICE_PROVIDERS = {PROVIDERS["cuda"]: "cuda", PROVIDERS["tensorrt"]: "cuda"}  # provider -> OrtValue device


def defaults(provider: str, precision: str = "fp32") -> dict[str, str]:
    """The options edgeformer gives a provider unless told otherwise."""
    full = full_name(provider)
    half = precision in ("fp16", "mixed")
    if full == PROVIDERS["cuda"]:
        options = {"device_id": "0", "use_tf32": "0", "arena_extend_strategy": "kSameAsRequested"}
        if half:
            options["enable_skip_layer_norm_strict_mode"] = "1"  # fp32 accumulation in fp16 SkipLayerNorm
        return options
    if full == PROVIDERS["tensorrt"]:
        return {"device_id": "0", "trt_fp16_enable": "1" if half else "0"}
    return {}


def _option_value(provider: str, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str) and str(value) != "":
        text = str(value)
    else:
        raise OptionError(f"{short_name(provider)} option {key}={value!r}: give a bool, a number or a non-empty string")
    if key == "device_id" and not (text.isdigit()):
        raise OptionError(f"{short_name(provider)} option device_id must be an integer >= 0, got {value!r}")
    return text


def provider_options(
    providers: Sequence[str] | str,
    given: Mapping[str, Mapping[str, Any]] | None = None,
    precision: str = "fp32",
) -> dict[str, dict[str, str]]:
    """Options per provider (full name -> {name: value as text}) for a preference list: edgeformer's
    defaults (see ``defaults``) updated by ``given`` (keyed by short or full provider names)."""
    if isinstance(providers, str):
        providers = [providers]
    requested = [full_name(p) for p in providers]
    out = {p: defaults(p, precision) for p in requested}
    for name, options in (given or {}).items():
        full = full_name(name)
        if full not in out:
            have = ", ".join(short_name(p) for p in requested)
            raise OptionError(
                f"options given for provider {short_name(full)!r}, which is not requested (providers: {have})"
            )
        if not isinstance(options, Mapping):
            raise OptionError(f"options for {short_name(full)!r} must be a mapping of option names to values")
        unknown = sorted(set(options) - CUDA_OPTIONS) if full == PROVIDERS["cuda"] else []
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise OptionError(f"unknown CUDA provider option {names}; known: {', '.join(sorted(CUDA_OPTIONS))}")
        out[full].update({str(k): _option_value(full, str(k), v) for k, v in options.items()})
    return out


# ----- IO binding ---------------------------------------------------------------------------------


class DeviceArray:
    """An output left on the session's device (an ``OrtValue``). ``np.asarray(x)`` copies it to the
    host; indexing copies too. Fed back to the same BoundSession it is bound without a copy."""

    def __init__(self, value: ort.OrtValue) -> None:
        self.value = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_NUMPY.get(self.value.data_type(), "float32"))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def device(self) -> str:
        return self.value.device_name()

    def numpy(self) -> np.ndarray:
        return self.value.numpy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.numpy()[index]

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, device={self.device!r})"


_NUMPY = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def session_device(session: ort.InferenceSession) -> tuple[str, int]:
    """The OrtValue device ("cuda" or "cpu") and device id of a session's first provider."""
    first = session.get_providers()[0]
    device = DEVICE_PROVIDERS.get(first, "cpu")
    if device == "cpu":
        return "cpu", 0
    options = session.get_provider_options().get(first, {})
    return device, int(options.get("device_id", 0) or 0)


class BoundSession:
    """An InferenceSession that runs through IO binding (``session.io_binding()``).

    Inputs are copied to the session's device; outputs whose names start with one of ``keep``
    (``present.`` by default: the KV cache) stay on the device as ``DeviceArray`` and are bound
    again as inputs without a copy; the others come back as numpy arrays. On the CPU provider the
    binding is plain memory, so this runs (and is tested) anywhere. Other attributes are the
    session's (``get_inputs``, ``get_providers``, ...).
    """

    def __init__(self, session: ort.InferenceSession, keep: Iterable[str] = ("present.",)) -> None:
        self.session = session
        self.keep = tuple(keep)
        self.device, self.device_id = session_device(session)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def _ortvalue(self, value: Any) -> ort.OrtValue:
        if isinstance(value, DeviceArray):
            return value.value
        array = np.ascontiguousarray(value)
        return ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any], run_options: Any = None) -> list:
        binding = self.session.io_binding()
        held = []  # keep the input OrtValues alive until the run is over
        for name, value in feeds.items():
            held.append(self._ortvalue(value))
            binding.bind_ortvalue_input(name, held[-1])
        names = list(output_names or [o.name for o in self.session.get_outputs()])
        for name in names:
            binding.bind_output(name, self.device, self.device_id)
        if run_options is None:
            self.session.run_with_iobinding(binding)
        else:
            self.session.run_with_iobinding(binding, run_options)
        outputs = binding.get_outputs()
        return [
            DeviceArray(value) if name.startswith(self.keep) else value.numpy()
            for name, value in zip(names, outputs, strict=True)
        ]


def cache_dtype(dtype: str | np.dtype) -> np.dtype:
    """The numpy dtype of a KV-cache input from the manifest's dtype name (float32, float16, ...)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        raise OptionError(f"unknown cache dtype {dtype!r} in the manifest") from None


def input_dtype(session_input: Any) -> np.dtype:
    """The numpy dtype of an onnxruntime NodeArg (``tensor(float16)`` -> float16)."""
    kind = str(session_input.type)
    if kind not in _NUMPY:
        raise OptionError(f"input {session_input.name!r} has type {kind}, which the runtime does not feed")
    return np.dtype(_NUMPY[kind])
