"""Deployment targets (``export/*.toml``): where a bundle is meant to run, and the vocabularies a
target file is checked against (precisions, quantization modes, fusion forms, static dimensions).

    name = "gpt-mini-android-int8"
    precision = "int8"
    providers = ["nnapi", "cpu"]
    fusions = "nnapi"
    static_shapes = { batch = 1, sequence = 64 }

Every mistake is reported as a ``CardError`` whose message names the file and the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformer import safe_read
from edgeformer.budget import budget_table_problem
from edgeformer.config import CARD_BYTES
from edgeformer.errors import CardError

PRECISIONS = ("fp32", "int8", "fp16", "int4")
QUANTIZATION_MODES = ("dynamic", "static")
REDUCED_PRECISIONS = ("int8", "int4", "fp16")  # PRECISIONS less fp32, in the order `edgeformer quantize` lists them
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # static int8: activations to ranges
TARGET_KEYS = {
    "name", "description", "precision", "opset", "providers", "fusions", "quantization", "budget",
    "static_shapes", "ort_format", "ort_optimization",
}  # fmt: skip
# the bundle dimensions a static-shape target may fix (edgeformer.export.graphs)
STATIC_SIZE_LIMIT = 1 << 20  # a fixed batch or sequence size; more would not fit any device
STATIC_DIMS = ("batch", "sequence", "encoder_sequence", "past_sequence", "total_sequence")
ORT_OPTIMIZATIONS = ("basic", "extended", "all")  # onnxruntime's levels for the saved .ort graph
FUSION_FORMS = ("none", "contrib", "standard", "nnapi", "coreml", "qnn")
FUSED_FORMS = tuple(f for f in FUSION_FORMS if f != "none")  # what `edgeformer fuse --form` produces


@dataclass(frozen=True)
class Target:
    """Where a bundle is meant to run: precision, ONNX opset, execution providers, fusion form."""

    name: str
    description: str = ""
    precision: str = "fp32"
    opset: int = 18
    providers: tuple[str, ...] = ("cpu",)
    fusions: str = "none"
    quantization: str = "dynamic"  # int8 only: dynamic, or static (QDQ, needs calibration data)
    budget: tuple[tuple[str, float], ...] = ()  # accuracy budget of a reduced precision, e.g. cosine 0.999
    static_shapes: tuple[tuple[str, int], ...] = ()  # dimension name -> fixed size (NNAPI, CoreML, QNN)
    ort_format: bool = False  # also write <graph>.ort and required_operators.config (onnxruntime mobile/web)
    ort_optimization: str = "basic"  # onnxruntime's optimization level baked into the .ort graph
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["providers"] = list(self.providers)
        d["budget"] = dict(self.budget)
        d["static_shapes"] = dict(self.static_shapes)
        d.pop("path")
        return d


def _choice(data: dict[str, Any], key: str, default: str, choices: tuple[str, ...], source: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise CardError(f"{source}: {key} {value!r:.40} is not one of {', '.join(choices)}")
    return value


def _budget(data: dict[str, Any], source: str) -> tuple[tuple[str, float], ...]:
    budget = data.get("budget", {})
    problem = budget_table_problem(budget)
    if problem:
        raise CardError(f"{source}: {problem}")
    return tuple(sorted((k, float(v)) for k, v in budget.items()))


def _static_shapes(data: dict[str, Any], source: str) -> tuple[tuple[str, int], ...]:
    static = data.get("static_shapes", {})
    if not isinstance(static, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= STATIC_SIZE_LIMIT for v in static.values()
    ):
        raise CardError(
            f"{source}: static_shapes must be a table of dimension = size from 1 to {STATIC_SIZE_LIMIT:,}, "
            f"got {static!r:.80}"
        )
    unknown_dims = sorted(set(static) - set(STATIC_DIMS))
    if unknown_dims:
        raise CardError(f"{source}: static_shapes dimension {unknown_dims[0]!r} is not one of {', '.join(STATIC_DIMS)}")
    return tuple(static.items())


def _plain(data: dict[str, Any], source: str) -> tuple[int, tuple[str, ...], bool]:
    """opset, providers and ort_format, checked."""
    opset = data.get("opset", 18)
    if isinstance(opset, bool) or not isinstance(opset, int) or not 17 <= opset <= 23:
        raise CardError(f"{source}: opset must be an integer from 17 to 23, got {opset!r}")
    providers = data.get("providers", ["cpu"])
    if not isinstance(providers, list) or not providers or not all(isinstance(p, str) for p in providers):
        raise CardError(f"{source}: providers must be a non-empty list of names, got {providers!r}")
    ort_format = data.get("ort_format", False)
    if not isinstance(ort_format, bool):
        raise CardError(f"{source}: ort_format must be true or false, got {ort_format!r:.40}")
    return opset, tuple(providers), ort_format


def parse_target(data: dict[str, Any], *, source: str = "<target>") -> Target:
    unknown = sorted(set(data) - TARGET_KEYS)
    if unknown:
        raise CardError(f"{source}: unknown key {unknown[0]!r}; a target takes {', '.join(sorted(TARGET_KEYS))}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise CardError(f"{source}: key 'name' is missing or not a string")
    precision = _choice(data, "precision", "fp32", PRECISIONS, source)
    opset, providers, ort_format = _plain(data, source)
    return Target(
        name=data["name"],
        description=str(data.get("description", "")),
        precision=precision,
        opset=opset,
        providers=providers,
        fusions=_choice(data, "fusions", "none", FUSION_FORMS, source),
        quantization=_choice(data, "quantization", "dynamic", QUANTIZATION_MODES, source),
        budget=_budget(data, source),
        static_shapes=_static_shapes(data, source),
        ort_format=ort_format,
        ort_optimization=_choice(data, "ort_optimization", "basic", ORT_OPTIMIZATIONS, source),
    )


def load_target(path: str | Path) -> Target:
    path = Path(path)
    data = safe_read.read_toml(path, what="target", error=CardError, max_bytes=CARD_BYTES)
    return dataclasses.replace(parse_target(data, source=str(path)), path=path)
