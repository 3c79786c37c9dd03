"""The sentence-transformers layout: modules.json lists the modules applied in order — a
Transformer (the model in Hugging Face layout, usually at the root), a Pooling (1_Pooling/config.json)
and optionally a Normalize. edgeformer imports Transformer + Pooling (mean or cls) [+ Normalize]
as an encoder whose embedding head pools (and L2-normalizes) the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformer import safe_read
from edgeformer.errors import ModelImportError
from edgeformer.importers.common import JSON_BYTES, exists

LEGACY_MODES = {  # sentence-transformers < 5 wrote one boolean per mode
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SUPPORTED_MODES = ("mean", "cls")
SUPPORTED_MODULES = "Transformer, then Pooling (mean or cls), then optionally Normalize"


@dataclass(frozen=True)
class SentenceLayout:
    transformer: Path  # the directory holding the Transformer module's config.json and weights
    pooling: str  # mean | cls
    normalize: bool


def _json(path: Path) -> Any:
    if not exists(path):
        raise ModelImportError(f"{path} is missing (named by modules.json)")
    return safe_read.read_json(path, what="sentence-transformers file", error=ModelImportError, max_bytes=JSON_BYTES)


def _inside(directory: Path, relative: object, where: Path) -> Path:
    if not isinstance(relative, str) or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ModelImportError(f"{where}: module path {relative!r} must be a folder inside {directory}")
    return directory / relative


def pooling_mode(config: dict[str, Any], path: Path) -> str:
    """The one pooling mode of a Pooling config (new ``pooling_mode`` key, or the legacy booleans)."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in LEGACY_MODES.items() if config.get(key)]
        mode = modes if len(modes) != 1 else modes[0]
        if not modes:
            mode = "mean"
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in SUPPORTED_MODES:
        raise ModelImportError(
            f"{path}: pooling {mode!r} is not supported; edgeformer's embedding head pools by "
            f"{' or '.join(SUPPORTED_MODES)} (one mode, not a concatenation)"
        )
    return str(mode)


def read_layout(directory: Path) -> SentenceLayout | None:
    """The layout modules.json declares, or None when the directory has no modules.json."""
    index = directory / "modules.json"
    if not exists(index):
        return None
    modules = _json(index)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelImportError(f"{index} must be a list of modules (objects with type and path)")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ModelImportError(
            f"{index} lists modules {', '.join(kinds) or 'none'}; edgeformer imports {SUPPORTED_MODULES}"
        )
    transformer = _inside(directory, modules[0].get("path", ""), index)
    pooling_dir = _inside(directory, modules[1].get("path", ""), index)
    config = _json(pooling_dir / "config.json")
    if not isinstance(config, dict):
        raise ModelImportError(f"{pooling_dir / 'config.json'} must hold a JSON object")
    return SentenceLayout(transformer, pooling_mode(config, pooling_dir / "config.json"), len(kinds) == 3)
