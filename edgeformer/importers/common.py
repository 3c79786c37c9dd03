"""What every importer shares: reading config.json and the weights (safely), and mapping
checkpoint tensors onto an edgeformer model by name, with every missing, unexpected or mis-shaped
tensor named.

A family module (bert, gpt2, bart) describes its architecture as data: ``config(...)`` turns
config.json into a ModelConfig, ``weights(...)`` returns a ``WeightMap``: for each tensor of the
edgeformer model, the checkpoint tensor it comes from, the shape that tensor must have, and how to
convert it (GPT-2's Conv1D weights are transposed, its fused q/k/v projection is split).
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from edgeformer import safe_read
from edgeformer.errors import CheckpointError, ModelImportError
from edgeformer.nn.checkpoint import read_state_dict

# In the order they are looked for; an index file names shards of the same format.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
JSON_BYTES = 64 << 20  # config.json, an index: kilobytes to a few megabytes
LIST_LIMIT = 12  # names listed per kind of problem; the rest are counted


def exists(path: Path) -> bool:
    """Whether something is at ``path`` (a dangling link or a FIFO counts: safe_read then says what
    it is); False for names no file can have (too long, a NUL byte)."""
    try:
        return path.exists() or path.is_symlink()
    except (OSError, ValueError):
        return False


class HFConfig:
    """config.json, read once; lookups name the file and the key when something is wrong."""

    def __init__(self, data: dict[str, Any], path: Path) -> None:
        self.data = data
        self.path = path

    @classmethod
    def read(cls, path: Path) -> HFConfig:
        if not exists(path):
            raise ModelImportError(
                f"{path.parent} has no config.json; a Hugging Face model directory holds config.json "
                "and model.safetensors (or pytorch_model.bin)"
            )
        data = safe_read.read_json(path, what="config", error=ModelImportError, max_bytes=JSON_BYTES)
        if not isinstance(data, dict):
            raise ModelImportError(f"{path} must hold a JSON object")
        return cls(data, path)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key, default)
        return default if value is None else value

    def int(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            missing = "is missing" if value is None else f"must be an integer, got {value!r}"
            raise ModelImportError(f"{self.path}: {key} {missing}")
        return value

    def float(self, key: str, default: float) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelImportError(f"{self.path}: {key} must be a number, got {value!r}")
        return float(value)

    def token_id(self, key: str, vocab_size: builtins.int) -> builtins.int:  # (int: the method above)
        """A special token id, or -1 when config.json has none (or one outside the vocabulary)."""
        value = self.get(key)
        if isinstance(value, list):  # generation configs allow several; the first is the one to use
            value = value[0] if value else None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
            return -1
        return value

    def refuse(self, key: str, value: Any, why: str) -> None:
        """Refuse a config value edgeformer's modules cannot reproduce."""
        if self.data.get(key) == value:
            raise ModelImportError(f"{self.path}: {key} = {json.dumps(value)} is not supported: {why}")


ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}


def activation(hf: HFConfig, key: str) -> str:
    value = hf.get(key, "gelu")
    if value not in ACTIVATIONS:
        raise ModelImportError(
            f"{hf.path}: {key} = {value!r} is not supported; edgeformer has {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[value]


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint file(s) of a model directory: one file, or the shards an index names."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not exists(path):
            continue
        if not path.is_file():
            raise ModelImportError(f"{path} is not a regular file (a FIFO, a device or a directory); weights are files")
        if not name.endswith(".index.json"):
            return [path]
        index = safe_read.read_json(path, what="weight index", error=ModelImportError, max_bytes=JSON_BYTES)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelImportError(f"{path} is not a weight index: it needs a weight_map of tensor name -> shard file")
        shards = sorted(set(weight_map.values()))
        files = []
        for shard in shards:
            shard_path = directory / shard
            if Path(shard).name != shard or not shard_path.is_file():
                raise ModelImportError(f"{path} names shard {shard!r}, which is not a file in {directory}")
            files.append(shard_path)
        return files
    raise ModelImportError(f"{directory} has no weights: looked for {', '.join(WEIGHT_FILES)}")


def read_weights(files: list[Path]) -> dict[str, Tensor]:
    """All tensors of the checkpoint; a pickle is loaded with weights_only=True (code is refused)."""
    state: dict[str, Tensor] = {}
    for path in files:
        state.update(read_state_dict(path))
    return state


T = TypeVar("T")


def identity(t: T) -> T:
    return t


@dataclass(frozen=True)
class Take:
    """One edgeformer tensor, made from checkpoint tensor ``source`` of shape ``shape``."""

    source: str
    shape: tuple[int, ...]
    convert: Callable[[Tensor], Tensor] = identity
    default: Callable[[], Tensor] | None = None  # when the checkpoint may lack it (BART's final_logits_bias)


@dataclass(frozen=True)
class Naming:
    """How a family's checkpoints name tensors: the base model's prefix (``bert.``, absent when the
    base model was saved alone), the names that never take it (heads), and old spellings to fix."""

    prefix: str = ""
    outside: tuple[str, ...] = ()
    fix: Callable[[str], str] = identity

    def canonical(self, name: str) -> str:
        return self.fix(name.removeprefix(self.prefix)) if self.prefix else self.fix(name)


@dataclass
class WeightMap:
    """edgeformer tensor name -> Take (with canonical checkpoint names); checkpoint tensors known
    to be unused, with the reason."""

    naming: Naming = field(default_factory=Naming)
    takes: dict[str, Take] = field(default_factory=dict)
    ignore: list[tuple[str, str]] = field(default_factory=list)  # (regular expression, why)

    def linear(self, ours: str, theirs: str, d_out: int, d_in: int, *, bias: bool = True) -> None:
        """An nn.Linear stored as nn.Linear: weight (out, in)."""
        self.takes[f"{ours}.weight"] = Take(f"{theirs}.weight", (d_out, d_in))
        if bias:
            self.takes[f"{ours}.bias"] = Take(f"{theirs}.bias", (d_out,))

    def norm(self, ours: str, theirs: str, d: int) -> None:
        self.takes[f"{ours}.weight"] = Take(f"{theirs}.weight", (d,))
        self.takes[f"{ours}.bias"] = Take(f"{theirs}.bias", (d,))

    def tensor(self, ours: str, theirs: str, shape: tuple[int, ...]) -> None:
        self.takes[ours] = Take(theirs, shape)

    def ignored(self, name: str) -> str | None:
        return next((why for pattern, why in self.ignore if re.fullmatch(pattern, name)), None)


def _shape(t: Tensor | tuple[int, ...]) -> str:
    dims = tuple(t.shape) if isinstance(t, Tensor) else t
    return "(" + ", ".join(str(d) for d in dims) + ")"


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - LIST_LIMIT} more" if len(items) > LIST_LIMIT else ""
    return "; ".join(items[:LIST_LIMIT]) + more


def tied_names(model: nn.Module) -> set[str]:
    """State-dict names that are aliases of another parameter (a tied LM head, a shared table)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in model.named_parameters()}


def _made(take: Take, found: Tensor | None) -> Tensor:
    """The tensor ``take`` makes of the checkpoint's ``found`` (None: of its default)."""
    if found is not None:
        return take.convert(found)
    assert take.default is not None  # load_mapped refused a missing tensor without a default
    return take.default()


def load_mapped(model: nn.Module, checkpoint: dict[str, Tensor], wmap: WeightMap, where: str) -> dict[str, str]:
    """Fill ``model`` from ``checkpoint`` through ``wmap``. Every problem is listed at once in a
    CheckpointError: missing tensors (with the shape expected), unexpected ones (with the shape
    found), wrong shapes (expected and found). Returns the unused tensors known to be unused -> why."""
    naming = wmap.naming
    state, original = {}, {}
    for name, tensor in checkpoint.items():
        state[naming.canonical(name)] = tensor
        original[naming.canonical(name)] = name
    prefixed = bool(naming.prefix) and any(name.startswith(naming.prefix) for name in checkpoint)

    def shown(canonical: str) -> str:
        """The name as this file spells it (or would: with the prefix its other tensors carry)."""
        if canonical in original:
            return original[canonical]
        return naming.prefix + canonical if prefixed and not canonical.startswith(naming.outside) else canonical

    missing, wrong, used = [], [], set()
    for take in wmap.takes.values():
        found = state.get(take.source)
        used.add(take.source)
        if found is None:
            if take.default is None:
                missing.append(f"{shown(take.source)} (expected {_shape(take.shape)})")
        elif tuple(found.shape) != take.shape:
            wrong.append(f"{shown(take.source)}: expected {_shape(take.shape)}, found {_shape(found)}")
    unexpected, ignored = [], {}
    for name in sorted(set(state) - used):
        why = wmap.ignored(name)
        if why is None:
            unexpected.append(f"{shown(name)} {_shape(state[name])}")
        else:
            ignored[shown(name)] = why
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listed(sorted(missing))}")
    if wrong:
        problems.append(f"wrong shapes: {_listed(sorted(wrong))}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listed(unexpected)}")
    if problems:
        raise CheckpointError(
            f"{where} does not fit the architecture its config.json describes: " + " | ".join(problems)
        )

    own = model.state_dict()
    aliases = tied_names(model)
    unset = sorted(set(own) - aliases - set(wmap.takes))
    if unset:  # the importer itself is incomplete: a bug, not the user's checkpoint
        raise ModelImportError(f"the importer leaves edgeformer tensors unset: {_listed(unset)}")
    new = {}
    for ours, take in wmap.takes.items():
        tensor = _made(take, state.get(take.source)).detach().to(torch.float32).contiguous()
        if ours not in own or tuple(tensor.shape) != tuple(own[ours].shape):
            want = _shape(own[ours]) if ours in own else "no such tensor"
            raise ModelImportError(f"the importer makes {ours} of shape {_shape(tensor)}; the model has {want}")
        new[ours] = tensor
    model.load_state_dict(new, strict=False)
    return ignored
