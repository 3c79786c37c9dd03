"""A user's own nn.Module as a bundle source: a factory plus its inputs declared as data.

``package.module:factory`` names a function returning an ``nn.Module``. Its inputs are declared
as data, either as the factory's ``edgeformer_io`` attribute or in a TOML file (``--io``)::

    [inputs.input_ids]
    dtype = "int64"
    shape = ["batch", "sequence"]
    high = 30522                 # token ids: values in [0, high)

    [inputs.attention_mask]
    dtype = "int64"
    shape = ["batch", "sequence"]

    [dims]
    sequence = 128               # the largest size parity is checked at

    outputs = ["last_hidden_state", "pooler_output"]   # optional; default: every tensor returned

Hugging Face transformers models go through this same path (build them with ``use_cache=False``
or ``return_dict=True``; a returned ModelOutput is read by name).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edgeformer import safe_read
from edgeformer.errors import ExportError
from edgeformer.export.graphs import GraphPlan, TensorSpec, make_inputs

DTYPES = ("int64", "int32", "float32", "float16", "bool")
IO_BYTES = 1 << 20  # an input declaration is a few lines


def _fail(msg: str) -> ExportError:
    return ExportError(f"input declaration: {msg}")


def parse_io(data: Mapping[str, Any]) -> tuple[list[TensorSpec], dict[str, int], list[str] | None]:
    """(input specs, largest size per named dimension, output names or None) from declared data."""
    unknown = sorted(set(data) - {"inputs", "dims", "outputs"})
    if unknown:
        raise _fail(f"unknown key {unknown[0]!r}; it takes inputs, dims, outputs")
    inputs = data.get("inputs")
    if not isinstance(inputs, Mapping) or not inputs:
        raise _fail("[inputs] must name at least one input")
    specs = []
    for name, item in inputs.items():
        if not isinstance(item, Mapping):
            raise _fail(f"[inputs.{name}] must be a table with dtype and shape")
        bad = sorted(set(item) - {"dtype", "shape", "high"})
        if bad:
            raise _fail(f"[inputs.{name}] has unknown key {bad[0]!r}")
        dtype = item.get("dtype")
        if dtype not in DTYPES:
            raise _fail(f"[inputs.{name}].dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
            raise _fail(f"[inputs.{name}].shape must be a list of sizes and dimension names")
        high = item.get("high", 0)
        if not isinstance(high, int) or high < 0:
            raise _fail(f"[inputs.{name}].high must be an integer >= 0")
        specs.append(TensorSpec(name, dtype, tuple(shape), high=high))
    dims = data.get("dims", {})
    if not isinstance(dims, Mapping) or not all(isinstance(v, int) and v >= 1 for v in dims.values()):
        raise _fail("[dims] maps dimension names to their largest size (integers >= 1)")
    outputs = data.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs)):
        raise _fail("outputs must be a list of names")
    return specs, dict(dims), outputs


def load_io(path: str | Path) -> dict[str, Any]:
    """The TOML input declaration at ``path`` (special files, huge or deeply nested files refused)."""
    return safe_read.read_toml(path, what="input declaration", error=ExportError, max_bytes=IO_BYTES)


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """The working directory first on sys.path while the user's module is imported, as with
    ``python -m`` (the ``edgeformer`` script's own sys.path starts with its bin directory)."""
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)


def load_factory(spec: str) -> Any:
    """The callable named by ``package.module:function``, a name the user gave on the command line
    (export MODEL, check --factory; never a name read from a bundle). A module in the working
    directory is found without PYTHONPATH, as with ``python -m``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ExportError(f"{spec!r} is not of the form package.module:factory")
    try:
        with _working_directory_importable():
            module = importlib.import_module(module_name)
    except (ImportError, SystemExit) as exc:  # a module that exits on import must not end a check as a success
        raise ExportError(f"cannot import {module_name!r} for factory {spec!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ExportError(f"{module_name!r} has no callable {attr!r}")
    return factory


def _flatten(out: Any) -> list[tuple[str, Tensor]]:
    """Named tensors of a module's output: a tensor, a tuple/list, or a dict / ModelOutput."""
    if isinstance(out, Tensor):
        return [("output", out)]
    if isinstance(out, Mapping) or hasattr(out, "items"):
        return [(str(k), v) for k, v in out.items() if isinstance(v, Tensor)]
    if isinstance(out, (tuple, list)):
        return [(f"output_{i}", v) for i, v in enumerate(out) if isinstance(v, Tensor)]
    raise ExportError(f"the module returned {type(out).__name__}; return tensors, a tuple or a dict of tensors")


class UserGraph(nn.Module):
    """Calls the user's module with keyword inputs; returns the chosen outputs in order."""

    def __init__(self, module: nn.Module, input_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        self.model = module
        self.input_names, self.output_names = input_names, output_names

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        out = dict(_flatten(self.model(**dict(zip(self.input_names, args, strict=True)))))
        return tuple(out[name] for name in self.output_names)


def example_sizes(specs: list[TensorSpec], base: int = 2) -> dict[str, int]:
    """Distinct trace sizes >= 2 per dimension name."""
    names = list(dict.fromkeys(d for s in specs for d in s.shape if isinstance(d, str)))
    return {name: base + i for i, name in enumerate(names)}


def _probe(module: nn.Module, specs: list[TensorSpec], sizes: dict[str, int]) -> dict[str, Tensor]:
    example = make_inputs(GraphPlan("model", module, specs, []), sizes, pad=False)
    with torch.no_grad():
        try:
            return dict(_flatten(module(**{k: torch.from_numpy(v) for k, v in example.items()})))
        except Exception as exc:  # noqa: BLE001 - the user's module may raise anything
            raise ExportError(
                f"the module does not run on the declared inputs: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from None


def _output_shape(name: str, a: Tensor, b: Tensor, sizes: dict[str, int], other: dict[str, int]) -> tuple:
    """Name each output dimension after the input dimension it follows between two probes."""
    if a.dim() != b.dim():
        raise ExportError(f"output {name!r} changes rank with the input sizes")
    shape: list[str | int] = []
    for da, db in zip(a.shape, b.shape, strict=True):
        if da == db:
            shape.append(da)
            continue
        match = [d for d in sizes if sizes[d] == da and other[d] == db]
        shape.append(match[0] if match else f"{name}_dim{len(shape)}")
    return tuple(shape)


def user_plan(module: nn.Module, io: Mapping[str, Any]) -> tuple[GraphPlan, dict[str, int]]:
    """The graph plan of a user module: runs it at two sets of sizes to learn its outputs and
    which input dimension each output dimension follows."""
    specs, dims_max, wanted = parse_io(io)
    sizes, other = example_sizes(specs), example_sizes(specs, base=9)
    module.eval()
    available, again = _probe(module, specs, sizes), _probe(module, specs, other)
    names = wanted or list(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise ExportError(f"the module returns no output {missing[0]!r}; it returns {', '.join(available)}")
    outputs = []
    for name in names:
        t = available[name]
        shape = _output_shape(name, t, again[name], sizes, other)
        outputs.append(TensorSpec(name, str(t.dtype).removeprefix("torch."), shape))
    plan = GraphPlan("model", UserGraph(module, [s.name for s in specs], names), specs, outputs)
    plan.cases = user_cases(sizes, dims_max)
    return plan, sizes


def user_cases(sizes: dict[str, int], dims_max: dict[str, int]) -> list[dict[str, int]]:
    """Batch 1 and 2; every other dimension at 1, 7 and its declared largest size (default 64)."""
    others = [d for d in sizes if d != "batch"]
    cases = []
    for batch in (1, 2) if "batch" in sizes else (None,):
        for length in (1, 7, None):
            case = {d: min(length or dims_max.get(d, 64), dims_max.get(d, 64)) for d in others}
            if batch is not None:
                case["batch"] = batch
            if case not in cases:
                cases.append(case)
    return cases
