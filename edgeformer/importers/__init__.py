"""Pretrained checkpoints in the Hugging Face layout -> edgeformer models and cards.

    from edgeformer.importers import import_directory, write_card
    imported = import_directory("bert-dir/")        # config.json + model.safetensors | pytorch_model.bin
    imported.model                                  # an edgeformer EncoderModel, weights loaded, eval mode
    card = write_card(imported, "bert.toml")        # card + bert.safetensors (+ bert.tokenizer.json)

Everything loads from the directory (no network). The weights land in edgeformer's own modules
(``edgeformer.nn``), so export, fusions and quantization treat them like any card. Supported: BERT
(BertModel, BertForMaskedLM, BertForSequenceClassification, BertForPreTraining's MLM head, and
sentence-transformers directories of a BertModel), GPT-2 (GPT2LMHeadModel, GPT2Model) and BART
(BartForConditionalGeneration). A pickle checkpoint (pytorch_model.bin) is read with
``torch.load(weights_only=True)``: one that would run code is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from edgeformer.config import MAX_NAME_CHARS, ModelCard, ModelConfig, check_card_name, load_card, render_card
from edgeformer.errors import BundleError, CardError, EdgeformerError, ModelImportError, UnsupportedArchitectureError
from edgeformer.export.graphs import plan_graphs
from edgeformer.export.source import Source
from edgeformer.importers import bart, bert, gpt2
from edgeformer.importers.common import HFConfig, load_mapped, read_weights, weight_files
from edgeformer.importers.memory import MemoryPlan, check_memory
from edgeformer.importers.sentence import SUPPORTED_MODULES, read_layout
from edgeformer.io import atomic_group, repair_groups, sha256_file
from edgeformer.travel import travelling_file

FAMILIES: tuple[ModuleType, ...] = (bert, gpt2, bart)
ARCHITECTURES: dict[str, ModuleType] = {arch: family for family in FAMILIES for arch in family.ARCHITECTURES}
MODEL_TYPES: dict[str, ModuleType] = {t: family for family in FAMILIES for t in family.MODEL_TYPES}
TOKENIZER_FILE = "tokenizer.json"
IMPORT_ONLY = MemoryPlan()  # the memory of an import alone (no parity check)


def supported() -> str:
    """The architectures edgeformer imports, as one line for messages."""
    return ", ".join(ARCHITECTURES) + f"; and sentence-transformers directories of a BertModel ({SUPPORTED_MODULES})"


@dataclass
class Imported:
    """A pretrained directory as an edgeformer model."""

    name: str
    architecture: str
    config: ModelConfig
    model: nn.Module  # eval mode, fp32
    directory: Path
    weight_files: list[Path]
    tokenizer: Path | None = None  # tokenizer.json, when the directory has one
    ignored: dict[str, str] = field(default_factory=dict)  # checkpoint tensors not used -> why
    sentence_transformers: bool = False

    @property
    def description(self) -> str:
        kind = "sentence-transformers " if self.sentence_transformers else ""
        return f"{kind}{self.architecture} imported from {self.directory.resolve()}"


def _architecture(hf: HFConfig) -> tuple[ModuleType, str]:
    declared = hf.get("architectures", [])
    if not isinstance(declared, list):
        raise ModelImportError(f"{hf.path}: architectures must be a list of class names, got {declared!r}")
    for arch in declared:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch], arch
    model_type = hf.get("model_type", "")
    if not declared and model_type in MODEL_TYPES:
        family = MODEL_TYPES[model_type]
        return family, family.DEFAULT_ARCHITECTURE
    what = f"architectures {declared}" if declared else "no architectures"
    raise UnsupportedArchitectureError(
        f"{hf.path} declares {what} (model_type {model_type!r}), which edgeformer does not import; "
        f"supported: {supported()}"
    )


def card_name(directory: Path) -> str:
    """A card name from a directory name: letters, digits, '.', '_' and '-', at most MAX_NAME_CHARS."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.resolve().name)[:MAX_NAME_CHARS].strip("-.")
    return name or "imported"


def _config(family: ModuleType, hf: HFConfig, arch: str, names: set[str], extra: dict[str, Any]) -> ModelConfig:
    """The family's ModelConfig of config.json; a value out of range names config.json and the key."""
    try:
        return family.config(hf, arch, names, **extra)
    except CardError as exc:
        raise ModelImportError(f"{hf.path}: {exc} (from config.json)") from None


def _tokenizer(directory: Path, model_dir: Path) -> Path | None:
    """The directory's tokenizer.json: a regular file inside ``directory``, never a symbolic link
    (it is copied into what edgeformer writes); None when there is none."""
    for where in (model_dir, directory):
        candidate = where / TOKENIZER_FILE
        if os.path.lexists(candidate):
            name = candidate.relative_to(directory)
            what = f"{directory}'s tokenizer"
            return travelling_file(directory, name, what=what, error=ModelImportError)
    return None


# torch.nn.init's in-place initializers: the modules' reset_parameters and the model's _init_weights call them
_INITIALIZERS = tuple(n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_"))


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """torch.nn.init's initializers made no-ops while a model is built whose every tensor is then
    loaded (load_mapped refuses a model tensor left unset), as transformers' ``no_init_weights``
    does: on BERT-base the random init took ~0.9 s of every export. Buffers computed in __init__
    (position tables) do not use them and stay as they are."""
    saved = {name: getattr(nn.init, name) for name in _INITIALIZERS}
    try:
        for name in saved:
            setattr(nn.init, name, _untouched)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def _untouched(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def import_directory(
    directory: str | Path, *, name: str | None = None, memory: MemoryPlan | None = IMPORT_ONLY
) -> Imported:
    """Build the edgeformer model a Hugging Face directory describes and load its weights into it.

    Before any weight is read, the model config.json describes is judged against the available
    memory (``memory``; None skips it): a ResourceError gives the estimate. A tokenizer.json that
    is a symbolic link or not a regular file is refused (it would be copied).

    Raises UnsupportedArchitectureError (listing the supported ones), ModelImportError (config.json
    missing or holding an option edgeformer's modules lack) or CheckpointError (weights refused,
    or tensors missing, unexpected or of the wrong shape — named, with expected and found shapes).
    """
    directory = Path(directory)
    if not os.path.isdir(directory):  # False, not OSError, for a name too long or with NUL
        raise ModelImportError(f"{str(directory)[:200]} is not a directory")
    layout = read_layout(directory)
    model_dir = layout.transformer if layout else directory
    hf = HFConfig.read(model_dir / "config.json")
    family, arch = _architecture(hf)
    if layout is not None and family is not bert:
        raise UnsupportedArchitectureError(
            f"{directory} is a sentence-transformers directory of {arch}; edgeformer imports those of a "
            f"BertModel. Supported: {supported()}"
        )
    extra: dict[str, Any] = {"pooling": layout.pooling, "normalize": layout.normalize} if layout else {}
    if memory is not None:  # from config.json alone, before a weight is read or allocated
        check_memory(_config(family, hf, arch, set(), extra), hf.path, memory)
    tokenizer = _tokenizer(directory, model_dir)
    files = weight_files(model_dir)
    state = read_weights(files)
    names = {family.NAMING.canonical(n) for n in state}
    cfg = _config(family, hf, arch, names, extra)
    from edgeformer.nn.models import build_model

    with torch.random.fork_rng(devices=[]), _no_init():  # every tensor is overwritten below; keep the caller's RNG
        model = build_model(cfg)
    where = str(files[0]) if len(files) == 1 else f"the {len(files)} shards in {model_dir}"
    ignored = load_mapped(model, state, family.weights(cfg, arch), where)
    return Imported(
        name or card_name(directory), arch, cfg, model.eval(), directory, files, tokenizer, ignored, layout is not None
    )


def card_files(card_path: Path, tokenizer: bool) -> list[Path]:
    """The files an import writes: the card, its checkpoint and (when there is one) its tokenizer."""
    files = [card_path, card_path.with_suffix(".safetensors")]
    return files + [card_path.with_name(f"{card_path.stem}.{TOKENIZER_FILE}")] if tokenizer else files


def _earlier_import(card_path: Path) -> set[Path]:
    """The files of an earlier import at ``card_path``: the card (when it is a card) and the
    checkpoint and tokenizer it names beside it. Empty when ``card_path`` is not a card."""
    if not card_path.is_file():
        return set()
    try:
        card = load_card(card_path)
    except EdgeformerError:
        return set()
    named = [card.checkpoint, card_path.parent / card.tokenizer if card.tokenizer else None]
    return {card_path} | {p for p in named if p is not None and p.parent == card_path.parent}


def check_card_outputs(files: list[Path], force: bool) -> None:
    """Refuse to write over any of ``files`` without ``force``; with it, over any that is not part
    of an earlier import (the card at ``files[0]`` and the files it names)."""
    existing = [p for p in files if os.path.lexists(p)]
    if not existing:
        return
    for path in existing:
        if path.is_symlink() or not path.is_file():
            raise ModelImportError(f"{path} exists and is not a regular file; choose another -o (nothing was written)")
    if not force:
        also = f" (and {', '.join(map(str, existing[1:]))})" if len(existing) > 1 else ""
        raise ModelImportError(f"{existing[0]} already exists{also}; pass --force to replace an earlier import")
    ours = _earlier_import(files[0])
    foreign = [p for p in existing if p not in ours]
    if foreign:
        raise ModelImportError(
            f"{', '.join(map(str, foreign))} not written by an earlier `edgeformer import` to {files[0]}; "
            "--force replaces only that. Move them or choose another -o"
        )


def write_card(imported: Imported, card_path: str | Path, *, force: bool = False) -> ModelCard:
    """Write the card, its checkpoint (``<card>.safetensors``, edgeformer's tensor names) and, when
    the directory has one, its tokenizer (``<card>.tokenizer.json``) beside it, as one unit
    (``io.atomic_group``): a kill at any moment leaves the earlier set or the new one."""
    from edgeformer.nn.checkpoint import save_checkpoint

    card_path = Path(card_path)
    if card_path.suffix != ".toml":
        raise ModelImportError(f"{card_path}: a card is a .toml file")
    check_card_name(imported.name, "the card's name")  # refused before anything is written
    files = card_files(card_path, imported.tokenizer is not None)
    if card_path.parent.is_dir():
        repair_groups(card_path.parent)  # an earlier import killed midway: its files back first
    check_card_outputs(files, force)
    with atomic_group(files) as tmps:
        sha = save_checkpoint(imported.model, tmps[1])
        tokenizer = ""
        if imported.tokenizer is not None:
            shutil.copyfile(imported.tokenizer, tmps[2])
            tokenizer = files[2].name
        card = ModelCard(imported.name, imported.config, imported.description, files[1], sha, tokenizer)
        tmps[0].write_text(render_card(card), encoding="utf-8")
    return load_card(card_path)


def import_card(
    directory: str | Path,
    output: str | Path | None = None,
    *,
    name: str | None = None,
    force: bool = False,
    memory_check: bool = True,
) -> dict[str, Any]:
    """``edgeformer import DIRECTORY``: import it (``import_directory``) and write its card
    (``write_card``, default ``./<name>.toml``); returns what was written, with the parameter count
    and the tensors of the directory that edgeformer's model has no place for (``ignored``)."""
    if name is not None:
        check_card_name(name, "--name")
    imported = import_directory(directory, name=name, memory=MemoryPlan() if memory_check else None)
    out = Path(output) if output is not None else Path(f"{name or card_name(Path(directory))}.toml")
    card = write_card(imported, out, force=force)
    return {
        "card": str(out),
        "name": card.name,
        "architecture": imported.architecture,
        "family": card.config.family,
        "checkpoint": str(card.checkpoint),
        "tokenizer": card.tokenizer or None,
        "parameters": sum(p.numel() for p in imported.model.parameters()),
        "ignored": imported.ignored,
    }


def _source(imported: Imported, recipe: dict[str, Any], max_sequence: int | None) -> Source:
    plans = plan_graphs(imported.model, imported.config, max_sequence)
    files = {TOKENIZER_FILE: imported.tokenizer} if imported.tokenizer is not None else {}
    tokenizer = TOKENIZER_FILE if files else ""
    return Source(imported.name, imported.model, imported.config, plans, recipe, tokenizer, files=files)


def _hashes(directory: Path, files: list[Path]) -> dict[str, str]:
    """The sha256 of each weight file, by its path inside ``directory`` (what a manifest records)."""
    return {str(f.relative_to(directory)): sha256_file(f) for f in files}


def _weight_hashes(imported: Imported) -> dict[str, str]:
    return _hashes(imported.directory, imported.weight_files)


def source_from_directory(
    directory: str | Path, *, max_sequence: int | None = None, memory_check: bool = True, parity: bool = True
) -> Source:
    """The export source of a Hugging Face directory (``edgeformer export DIR``). The manifest
    records the directory and the sha256 of its weights, so ``edgeformer check`` can rebuild it.
    With ``memory_check``, the export's estimated peak (``edgeformer.limits``) is judged first."""
    plan = MemoryPlan(max_sequence, parity) if memory_check else None
    imported = import_directory(directory, memory=plan)
    card = ModelCard(imported.name, imported.config, imported.description)
    recipe = {
        "kind": "huggingface",
        "directory": str(imported.directory.resolve()),
        "architecture": imported.architecture,
        "card": render_card(card),
        "weights_sha256": _weight_hashes(imported),
    }
    return _source(imported, recipe, max_sequence)


def rebuild_source(recipe: dict[str, Any], max_sequence: int | None = None) -> Source:
    """The source a ``huggingface`` manifest recipe records, from the same directory and weights."""
    directory = Path(str(recipe.get("directory", "")))
    if not directory.is_dir():
        raise BundleError(
            f"the torch source's directory {directory} is not on this machine; "
            "parity needs the weights the bundle was exported from"
        )
    # a manifest names this directory: its weights must be the recorded ones before any is loaded
    layout = read_layout(directory)
    if _hashes(directory, weight_files(layout.transformer if layout else directory)) != recipe.get("weights_sha256"):
        raise BundleError(f"the weights in {directory} changed since the bundle was exported (sha256 differs)")
    imported = import_directory(directory, memory=MemoryPlan(max_sequence, parity=True))
    return _source(imported, recipe, max_sequence)


__all__ = [
    "ARCHITECTURES",
    "Imported",
    "MemoryPlan",
    "import_directory",
    "rebuild_source",
    "source_from_directory",
    "supported",
    "write_card",
]
