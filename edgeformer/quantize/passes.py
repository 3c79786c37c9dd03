"""Quantization as passes: one per precision and mode, all keeping one contract, chosen from a table.

    quantize = pass_for("int8", "dynamic", "minmax")
    result = quantize.run(model, trial, calibration_feeds, budget, ...)

A pass declares as data what it needs (``needs``: calibration rows for activation ranges, an untied
LM head, the gated ranker) and the settings its report records; ``prepare`` plans one graph (the
graph it reduces, the candidate nodes the search may keep in float, the quantizer the search calls);
``run`` hands them to the budget search (``mixed.quantize_within_budget``) and returns a
``QuantizeResult``: whether the graph changed, which nodes are reduced and which are kept in float,
and the report entry. The passes work on ONNX protobuf, as onnxruntime's quantization tools do
(the fusion passes, ``fusions/passes.py``, work on onnx-ir).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgeformer.errors import EdgeformerError
from edgeformer.quantize import half_storage, int4_embedding, int4_rank, int8, qattention, tied_head, weights
from edgeformer.quantize.mixed import Feeds, MixedResult, Quantizer, Ranker, quantize_within_budget, weight_params
from edgeformer.targets import QUANTIZATION_MODES

Log = Callable[[str], None]
MODES = QUANTIZATION_MODES  # what --mode takes; int4 and fp16 are weight-only whatever it says
NEEDS = {
    "calibration_rows": "activation ranges measured on calibration rows (real inputs, or byte text)",
    "untied_head": "a tied LM head untied into a MatMul the pass can reduce (its Gathers read the reduced table)",
    "gate_ranker": "candidates scored from one gated session (int4_rank) instead of one graph per node",
}


class QuantizeError(EdgeformerError):
    """A bundle that cannot be quantized as asked."""


@dataclass
class Prepared:
    """One graph planned by a pass: the graph it reduces, the candidates, the quantizer, the ranker."""

    model: onnx.ModelProto
    candidates: list[str]
    quantize: Quantizer
    rank: Ranker | None = None


@dataclass
class QuantizeResult:
    """What a pass did to one graph: ``reduced`` nodes in reduced precision, ``kept_in_float`` the
    candidates the search kept in float, ``entry`` the pass's own report fields."""

    path: Path
    search: MixedResult
    candidates: list[str]
    reduced: list[str]
    kept_in_float: list[str]
    float_weight_bytes: int  # what the nodes kept in float read at full width per run
    entry: dict[str, Any] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """Whether the written graph differs from the float one (fp16 has no candidates: all of it changes)."""
        return bool(self.reduced) or not self.candidates


class QuantizePass:
    """One precision and mode. Subclasses set the class fields and ``prepare``."""

    precision = ""
    mode = ""  # as the report writes it: dynamic, static or weight-only
    needs: tuple[str, ...] = ()
    method: str | None = None

    def settings(self) -> dict[str, Any]:
        return {}

    def prepare(self, model: onnx.ModelProto, feeds: Sequence[Feeds], log: Log) -> Prepared:
        raise NotImplementedError

    def reduced(self, path: Path, candidates: list[str], kept: list[str]) -> list[str]:
        return [c for c in candidates if c not in set(kept)]

    def entry(self, reduced: list[str], kept: list[dict[str, Any]]) -> dict[str, Any]:
        return {}

    def in_float(self, kept: list[str]) -> list[str]:
        """The nodes the search kept that the graph holds in float (int4 keeps them at 8 bits instead)."""
        return kept

    def run(
        self, model: onnx.ModelProto, trial: Path, feeds: Sequence[Feeds], budget: dict[str, float], **search: Any
    ) -> QuantizeResult:
        """Plan ``model``, search for the fewest float nodes that meet ``budget``, write ``trial``
        (``search``: the keywords of ``quantize_within_budget`` after ``candidates``)."""
        prepared = self.prepare(model, feeds, search.get("log", lambda _m: None))
        found = quantize_within_budget(
            prepared.model, trial, prepared.quantize, feeds, budget,
            candidates=prepared.candidates, rank=prepared.rank, **search,
        )  # fmt: skip
        kept = [k["node"] for k in found.kept_in_float]
        reduced = self.reduced(trial, prepared.candidates, kept)
        floats = self.in_float(kept)
        params = weight_params(prepared.model, floats)
        return QuantizeResult(
            trial, found, prepared.candidates, reduced, floats, 4 * sum(params.values()),
            self.entry(reduced, found.kept_in_float),
        )  # fmt: skip


class DynamicInt8(QuantizePass):
    """Weights int8, activations quantized at run time; attention blocks as one QAttention each."""

    precision, mode, needs = "int8", "dynamic", ("untied_head", "gate_ranker")

    def settings(self) -> dict[str, Any]:
        return int8.settings(static=False) | {
            "float_weights": half_storage.DESCRIPTION,
            "attention": qattention.DESCRIPTION,
        }

    def prepare(self, model: onnx.ModelProto, feeds: Sequence[Feeds], log: Log) -> Prepared:
        model, heads = tied_head.untie(model)  # a tied LM head becomes a quantizable MatMul
        shared = {g for head in heads for g in head.gathers}
        candidates = [c for c in int8.quantizable_nodes(model) if c not in shared]
        attention = qattention.plan(model, feeds)
        if attention:
            log(f"  {len(attention)} self-attention block(s) can run as one int8 QAttention each")
        return Prepared(model, candidates, dynamic_int8(heads, attention), int4_rank.rank)


def dynamic_int8(heads: list[tied_head.TiedHead], attention: list[qattention.Block]) -> Quantizer:
    """The dynamic int8 quantizer of one graph: QAttention, the ops, the tied head, half storage."""
    shared = [g for head in heads for g in head.gathers]  # they read the head's int8 table
    reduce_range = int8.needs_reduce_range()

    def quantize(m: onnx.ModelProto, o: Path, exclude: Sequence[str] = ()) -> Path:
        m, _ = qattention.apply(m, attention, exclude=exclude, reduce_range=reduce_range)
        int8.quantize_dynamic(m, o, exclude=[*exclude, *shared], reduce_range=reduce_range)
        tied_head.share_quantized(o, heads)
        half_storage.store_half(o)  # what stayed in float, at half the bytes on disk
        return o

    return quantize


class StaticInt8(QuantizePass):
    """Weights and activations int8 (QDQ), activation ranges from the calibration rows."""

    precision, mode, needs = "int8", "static", ("calibration_rows",)

    def __init__(self, method: str) -> None:
        self.method = method

    def settings(self) -> dict[str, Any]:
        return int8.settings(static=True) | {"float_weights": half_storage.DESCRIPTION}

    def prepare(self, model: onnx.ModelProto, feeds: Sequence[Feeds], log: Log) -> Prepared:
        method = str(self.method)

        def quantize(m: onnx.ModelProto, o: Path, exclude: Sequence[str] = ()) -> Path:
            int8.quantize_static(m, o, list(feeds), method=method, exclude=exclude)
            half_storage.store_half(o)
            return o

        # QDQ reaches attention's own MatMuls too
        return Prepared(model, int8.quantizable_nodes(model, static=True), quantize)


class Int4(QuantizePass):
    """Weight-only int4 (MatMulNBits) of the MatMuls; the nodes the search keeps out of int4 are
    MatMulNBits at 8 bits; a tied embedding reads the head's quantized table (``int4_embedding``)."""

    precision, mode, needs = "int4", "weight-only", ("untied_head", "gate_ranker")

    def settings(self) -> dict[str, Any]:
        return weights.int4_settings() | {"embedding": int4_embedding.DESCRIPTION}

    def prepare(self, model: onnx.ModelProto, feeds: Sequence[Feeds], log: Log) -> Prepared:
        model, heads = tied_head.untie(model)
        chosen = weights.int4_settings()

        def quantize(m: onnx.ModelProto, o: Path, exclude: Sequence[str] = ()) -> Path:
            weights.to_int4(m, o, exclude=tuple(exclude), settings=chosen)
            int4_embedding.share(o, heads)
            return o

        return Prepared(model, weights.int4_candidates(model), quantize, int4_rank.rank)

    def reduced(self, path: Path, candidates: list[str], kept: list[str]) -> list[str]:
        return int4_nodes(path, candidates, kept)

    def in_float(self, kept: list[str]) -> list[str]:
        return []  # kept at 8 bits

    def entry(self, reduced: list[str], kept: list[dict[str, Any]]) -> dict[str, Any]:
        # what the graph holds, node by node: every candidate is int4 or, kept by the search, 8-bit
        return {
            "int4_nodes": reduced,
            "int8_nodes": [k["node"] for k in kept],
            "kept_at_8_bits": kept,  # the search's choice, with each node's score
            "kept_in_float": [],
        }


def int4_nodes(path: Path, candidates: list[str], kept: list[str], kept_as: str = "int8") -> list[str]:
    """The nodes the written graph holds in int4, after checking it against the search's report:
    every node the search kept is ``kept_as`` there (MatMulNBits at 8 bits), every other candidate int4."""
    held = set(kept)
    layout = weights.int4_layout(onnx.load(str(path), load_external_data=False).graph, candidates)
    wrong = [f"{n}: {have} (reported {kept_as if n in held else 'int4'})" for n, have in layout.items()
             if have != (kept_as if n in held else "int4")]  # fmt: skip
    if wrong:
        raise QuantizeError(
            f"the int4 graph written is not the one the search reported ({len(wrong)} node(s): "
            f"{'; '.join(wrong[:5])}); this is a bug in edgeformer: please report it"
        )
    return [n for n, have in layout.items() if have == "int4"]


class Fp16(QuantizePass):
    """Every float weight and activation in float16; nothing for the search to keep in float."""

    precision, mode = "fp16", "weight-only"

    def prepare(self, model: onnx.ModelProto, feeds: Sequence[Feeds], log: Log) -> Prepared:
        return Prepared(model, [], lambda m, o, exclude=(): weights.to_fp16(m, o))


# (precision, mode) -> the pass, given the calibration method
PASSES: dict[tuple[str, str], Callable[[str], QuantizePass]] = {
    ("int8", "dynamic"): lambda _method: DynamicInt8(),
    ("int8", "static"): StaticInt8,
    ("int4", "weight-only"): lambda _method: Int4(),
    ("fp16", "weight-only"): lambda _method: Fp16(),
}


def pass_for(precision: str, mode: str, method: str) -> QuantizePass:
    """The pass for ``precision`` and ``mode`` (int4 and fp16 are weight-only whatever ``mode``
    says), or QuantizeError naming what is accepted."""
    precisions = sorted({p for p, _ in PASSES}, key=[p for p, _ in PASSES].index)
    if precision not in precisions:
        raise QuantizeError(f"precision {precision!r} is not one of {', '.join(precisions)}")
    if mode not in MODES:
        raise QuantizeError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if method not in int8.METHODS:
        raise QuantizeError(f"calibration method {method!r} is not one of {', '.join(int8.METHODS)}")
    return PASSES[(precision, mode if precision == "int8" else "weight-only")](method)
