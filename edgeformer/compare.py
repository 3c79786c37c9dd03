"""One output of a graph against its reference: max absolute and relative error, cosine, and
whether either side holds NaN or inf. numpy only; no float64 copies of whole outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OutputReport:
    name: str
    max_abs: float
    max_rel: float  # max |error| / max |reference|
    cosine: float
    ok: bool
    non_finite: str = ""  # NaN or inf in either side, in words: never parity, even when both agree


def _non_finite(side: str, values: np.ndarray) -> str:
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    return f"{side} {nan} NaN, {inf} inf" if nan or inf else ""


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a * b) accumulated in float64 without a float64 copy of either (einsum casts in buffers)."""
    return float(np.einsum("i,i->", a.ravel(), b.ravel(), dtype=np.float64))


def _floats(reference: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides in one float type: their own when they share one, else float64."""
    if reference.dtype.kind == "f" and got.dtype == reference.dtype:
        return reference, got
    return reference.astype(np.float64), got.astype(np.float64)


def _error_and_scale(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """max |ref - out| and max |ref|, without a float64 copy or a second full-size temporary."""
    diff = np.subtract(ref, out)
    np.abs(diff, out=diff)
    return float(diff.max()), max(float(ref.max()), -float(ref.min()))


def scaled_error(reference: np.ndarray, got: np.ndarray) -> float:
    """max |got - ref| / max(1, max |ref|), the quantity ``compare`` holds to its tolerance; inf
    when either side is not finite (NaN compared with a tolerance is false both ways)."""
    if not reference.size:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        err, ref_max = _error_and_scale(*_floats(reference, got))
    if not (np.isfinite(err) and np.isfinite(ref_max)):
        return float("inf")
    return err / max(1.0, ref_max)


def compare(name: str, reference: np.ndarray, got: np.ndarray, tolerance: float) -> OutputReport:
    """Error relative to the output's scale: max |got - ref| / max(1, max |ref|) <= tolerance.
    A NaN or inf on either side fails, named in ``non_finite``: a torch source and a graph that
    agree on nonsense (a card whose layer norm divides by inf) are not at parity. Computed in the
    outputs' own float type (a float64 copy of a decoder's logits cost more than running the graph);
    the cosine's sums are accumulated in float64."""
    if reference.shape != got.shape:
        return OutputReport(name, float("inf"), float("inf"), 0.0, False)
    if not reference.size:
        return OutputReport(name, 0.0, 0.0, 1.0, True)
    ref, out = _floats(reference, got)
    with np.errstate(invalid="ignore", over="ignore"):
        ref_sq, out_sq = _dot(ref, ref), _dot(out, out)
        non_finite = ""
        if not (np.isfinite(ref_sq) and np.isfinite(out_sq)):  # a NaN or inf somewhere: name them
            non_finite = "; ".join(filter(None, (_non_finite("torch source", ref), _non_finite("ONNX", out))))
        err, ref_max = _error_and_scale(ref, out)
        norm = float(np.sqrt(ref_sq) * np.sqrt(out_sq))
        cosine = _dot(ref, out) / norm if norm > 0 else float(np.array_equal(ref, out))
    ok = not non_finite and err / max(1.0, ref_max) <= tolerance
    return OutputReport(name, err, err / ref_max if ref_max else err, cosine, ok, non_finite)
