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

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgeformer.config import ModelCard, ModelConfig, load_card, render_card
from edgeformer.errors import BundleError, ModelImportError, UnsupportedArchitectureError
from edgeformer.importers import bart, bert, gpt2
from edgeformer.importers.common import HFConfig, load_mapped, read_weights, weight_files
from edgeformer.importers.sentence import SUPPORTED_MODULES, read_layout
from edgeformer.io import atomic_path, sha256_file, write_text_atomic

if TYPE_CHECKING:
    from edgeformer.export.bundle import Source

FAMILIES: tuple[ModuleType, ...] = (bert, gpt2, bart)
ARCHITECTURES: dict[str, ModuleType] = {arch: family for family in FAMILIES for arch in family.ARCHITECTURES}
MODEL_TYPES: dict[str, ModuleType] = {t: family for family in FAMILIES for t in family.MODEL_TYPES}
TOKENIZER_FILE = "tokenizer.json"


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
    """A card name from a directory name: letters, digits, '.', '_' and '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.resolve().name).strip("-.")
    return name or "imported"


def import_directory(directory: str | Path, *, name: str | None = None) -> Imported:
    """Build the edgeformer model a Hugging Face directory describes and load its weights into it.

    Raises UnsupportedArchitectureError (listing the supported ones), ModelImportError (config.json
    missing or holding an option edgeformer's modules lack) or CheckpointError (weights refused,
    or tensors missing, unexpected or of the wrong shape — named, with expected and found shapes).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelImportError(f"{directory} is not a directory")
    layout = read_layout(directory)
    model_dir = layout.transformer if layout else directory
    hf = HFConfig.read(model_dir / "config.json")
    family, arch = _architecture(hf)
    if layout is not None and family is not bert:
        raise UnsupportedArchitectureError(
            f"{directory} is a sentence-transformers directory of {arch}; edgeformer imports those of a "
            f"BertModel. Supported: {supported()}"
        )
    files = weight_files(model_dir)
    state = read_weights(files)
    names = {family.NAMING.canonical(n) for n in state}
    extra: dict[str, Any] = {"pooling": layout.pooling, "normalize": layout.normalize} if layout else {}
    cfg = family.config(hf, arch, names, **extra)
    from edgeformer.nn.models import build_model

    with torch.random.fork_rng(devices=[]):  # the fresh weights are all overwritten; keep the caller's RNG
        model = build_model(cfg)
    where = str(files[0]) if len(files) == 1 else f"the {len(files)} shards in {model_dir}"
    ignored = load_mapped(model, state, family.weights(cfg, arch), where)
    tokenizer = next((d / TOKENIZER_FILE for d in (model_dir, directory) if (d / TOKENIZER_FILE).is_file()), None)
    return Imported(
        name or card_name(directory), arch, cfg, model.eval(), directory, files, tokenizer, ignored, layout is not None
    )


def write_card(imported: Imported, card_path: str | Path, *, force: bool = False) -> ModelCard:
    """Write the card, its checkpoint (``<card>.safetensors``, edgeformer's tensor names) and, when
    the directory has one, its tokenizer (``<card>.tokenizer.json``) beside it; every file atomically."""
    from edgeformer.nn.checkpoint import save_checkpoint

    card_path = Path(card_path)
    if card_path.suffix != ".toml":
        raise ModelImportError(f"{card_path}: a card is a .toml file")
    if card_path.exists() and not force:
        raise ModelImportError(f"{card_path} already exists; pass --force to replace it")
    checkpoint = card_path.with_suffix(".safetensors")
    sha = save_checkpoint(imported.model, checkpoint)
    tokenizer = ""
    if imported.tokenizer is not None:
        target = card_path.with_name(f"{card_path.stem}.{TOKENIZER_FILE}")
        with atomic_path(target) as tmp:
            shutil.copyfile(imported.tokenizer, tmp)
        tokenizer = target.name
    card = ModelCard(imported.name, imported.config, imported.description, checkpoint, sha, tokenizer)
    write_text_atomic(card_path, render_card(card))
    return load_card(card_path)


def _source(imported: Imported, recipe: dict[str, Any], max_sequence: int | None) -> Source:
    from edgeformer.export.bundle import Source
    from edgeformer.export.graphs import plan_graphs

    plans = plan_graphs(imported.model, imported.config, max_sequence)
    files = {TOKENIZER_FILE: imported.tokenizer} if imported.tokenizer is not None else {}
    tokenizer = TOKENIZER_FILE if files else ""
    return Source(imported.name, imported.model, imported.config, plans, recipe, tokenizer, files=files)


def _weight_hashes(imported: Imported) -> dict[str, str]:
    return {str(f.relative_to(imported.directory)): sha256_file(f) for f in imported.weight_files}


def source_from_directory(directory: str | Path, *, max_sequence: int | None = None) -> Source:
    """The export source of a Hugging Face directory (``edgeformer export DIR``). The manifest
    records the directory and the sha256 of its weights, so ``edgeformer check`` can rebuild it."""
    imported = import_directory(directory)
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
    files = weight_files(layout.transformer if layout else directory)
    if {str(f.relative_to(directory)): sha256_file(f) for f in files} != recipe.get("weights_sha256"):
        raise BundleError(f"the weights in {directory} changed since the bundle was exported (sha256 differs)")
    imported = import_directory(directory)
    if _weight_hashes(imported) != recipe.get("weights_sha256"):
        raise BundleError(f"the weights in {directory} changed since the bundle was exported (sha256 differs)")
    return _source(imported, recipe, max_sequence)


__all__ = [
    "ARCHITECTURES",
    "Imported",
    "import_directory",
    "rebuild_source",
    "source_from_directory",
    "supported",
    "write_card",
]
