"""torch -> ONNX with the dynamo exporter: dynamic axes, named dimensions, clear failures."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator

import onnx_ir as ir
import torch
from torch import nn
from torch.export import Dim

from edgeformer.errors import ExportError
from edgeformer.export.graphs import GraphPlan, make_inputs
from edgeformer.nn.layers import attention_impl

# Fusion forms whose graph keeps local and sparse attention banded (nn/banded.py: standard ops, O(S * window)).
# The contrib forms trace the dense masked attention their MultiHeadAttention fusion matches; so do the
# provider forms, whose fixed shapes and op lists were never checked against the 5-D blocked products.
BANDED_FORMS = ("none", "standard")


def attention_for(form: str) -> str:
    """How the layers compute banded patterns while traced for fusion form ``form`` (layers.ATTENTION_IMPLS)."""
    return "banded" if form in BANDED_FORMS else "dense"


# Example sizes for tracing: all >= 2, because torch.export specializes dimensions of size 0 and 1.
TRACE_DIMS = {"batch": 2, "sequence": 3, "past_sequence": 4, "encoder_sequence": 5}


@contextlib.contextmanager
def _module_stack(root: nn.Module) -> Iterator[list[str]]:
    """Record which submodule was running when tracing failed (the deepest one entered)."""
    names = {id(m): n for n, m in root.named_modules()}
    stack: list[str] = []
    deepest: list[str] = []

    def pre(module: nn.Module, _args: object) -> None:
        if id(module) in names:
            stack.append(names[id(module)])
            deepest[:] = list(stack)

    def post(module: nn.Module, _args: object, _out: object) -> None:
        if stack and id(module) in names and stack[-1] == names[id(module)]:
            stack.pop()

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(pre)]
    handles.append(torch.nn.modules.module.register_module_forward_hook(post))
    try:
        yield deepest
    finally:
        for h in handles:
            h.remove()


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    return exc


def _dynamic_shapes(plan: GraphPlan) -> tuple:
    """Dynamic dimensions of every input; inputs past the wrapper's fixed arguments are its *args."""
    specs = [{i: Dim.DYNAMIC for i, d in enumerate(s.shape) if isinstance(d, str)} for s in plan.inputs]
    fixed = plan.module.forward.__code__.co_argcount - 1  # minus self
    return tuple(specs[:fixed]) + ((tuple(specs[fixed:]),) if len(specs) > fixed else ())


def trace(
    plan: GraphPlan,
    opset: int,
    example_dims: dict[str, int] | None = None,
    *,
    optimize: bool = True,
    attention: str = "dense",
) -> ir.Model:
    """Export one graph; inputs and outputs carry the plan's names and dimension names. ``optimize``
    runs onnxscript's optimizer on it (constant folding, dead code); the fuse stage's first pass
    (``cleanup``) runs the same optimizer, so an export that fuses traces without it. ``attention``:
    local and sparse self-attention "banded" or "dense" (``attention_for(form)``)."""
    example = make_inputs(plan, example_dims or TRACE_DIMS, pad=False)
    args = tuple(torch.from_numpy(example[s.name]) for s in plan.inputs)
    plan.module.eval()
    quiet = io.StringIO()
    with (
        _module_stack(plan.module) as deepest,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(quiet),
        _quiet_loggers(),
        attention_impl(plan.module, attention),
    ):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                plan.module,
                args,
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(plan),
                input_names=[s.name for s in plan.inputs],
                output_names=[s.name for s in plan.outputs],
                opset_version=opset,
                optimize=optimize,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - the exporter raises anything; we name the module
            cause = _root_cause(exc)
            where = deepest[-1].removeprefix("model.") if deepest else type(plan.module).__name__
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            raise ExportError(
                f"cannot trace {plan.name!r}: module '{where}' failed with {type(cause).__name__}: {first}. "
                "Make its forward traceable by torch.export (no data-dependent Python control flow, "
                "no .item()/.tolist() on tensors, no non-tensor outputs)."
            ) from None
    if program is None:  # pragma: no cover - only for dynamo=False
        raise ExportError("the exporter returned no program")
    model = program.model
    _name_dimensions(model, plan)
    return model


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _name_dimensions(model: ir.Model, plan: GraphPlan) -> None:
    """Give inputs and outputs the plan's dimension names; a dimension that the exporter fixed to
    the example's size where the plan wants it dynamic is an export failure."""
    values = {v.name: v for v in [*model.graph.inputs, *model.graph.outputs]}
    symbols: dict[str, str] = {}  # exporter symbol (s10) -> dimension name (batch), from the inputs
    for spec in plan.inputs:
        value = values.get(spec.name)
        if value is not None and value.shape is not None:
            for dim, want in zip(value.shape.dims, spec.shape, strict=False):
                if isinstance(want, str) and isinstance(dim, ir.SymbolicDim) and dim.value:
                    symbols.setdefault(dim.value, want)
    _rename_symbols(model, symbols)
    aliases: dict[str, str] = {}  # an expression the outputs give a name: past_sequence + sequence -> total_sequence
    for spec in plan.outputs:
        value = values.get(spec.name)
        if value is not None and value.shape is not None and value.shape.rank() == len(spec.shape):
            for dim, want in zip(value.shape.dims, spec.shape, strict=True):
                if isinstance(want, str) and isinstance(dim, ir.SymbolicDim) and dim.value and dim.value != want:
                    aliases.setdefault(dim.value, want)
    _rename_symbols(model, aliases, whole=True)
    for spec in [*plan.inputs, *plan.outputs]:
        value = values.get(spec.name)
        if value is None or value.shape is None:
            raise ExportError(f"{plan.file}: the exported graph has no {spec.name!r} with a known shape")
        if value.shape.rank() != len(spec.shape):
            raise ExportError(f"{plan.file}: {spec.name!r} has rank {value.shape.rank()}, expected {len(spec.shape)}")
        for i, (dim, want) in enumerate(zip(value.shape.dims, spec.shape, strict=True)):
            if isinstance(want, str) and isinstance(dim, int):
                raise ExportError(
                    f"{plan.file}: dimension {i} ({want}) of {spec.name!r} was specialized to {dim} by the "
                    "exporter; the model treats that size as a constant"
                )
            if isinstance(want, int) and isinstance(dim, int) and dim != want:
                raise ExportError(f"{plan.file}: dimension {i} of {spec.name!r} is {dim}, expected {want}")
        value.shape = ir.Shape(list(spec.shape))


def _rename_symbols(model: ir.Model, symbols: dict[str, str], *, whole: bool = False) -> None:
    """Use the dimension names inside the graph too, so that shapes of intermediate values and of
    the inputs and outputs speak of the same symbols (fusion rules compare them). ``whole``
    renames only dimensions whose whole expression is a key."""
    if not symbols:
        return
    alternatives = "|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True))
    token = re.compile(rf"^({alternatives})$" if whole else rf"\b({alternatives})\b")
    values = list(model.graph.inputs) + [out for node in model.graph.all_nodes() for out in node.outputs]
    for value in values:
        shape = value.shape
        if shape is None or not any(isinstance(d, ir.SymbolicDim) for d in shape.dims):
            continue
        dims = [
            ir.SymbolicDim(token.sub(lambda m: symbols[m.group(1)], d.value))
            if isinstance(d, ir.SymbolicDim) and d.value
            else d
            for d in shape.dims
        ]
        value.shape = ir.Shape(dims)
