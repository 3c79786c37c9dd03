"""Weights in and out without executing code: safetensors, or torch.load(weights_only=True)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

from edgeformer.config import ModelCard
from edgeformer.errors import CheckpointError
from edgeformer.io import atomic_path, sha256_file
from edgeformer.nn.models import build_model


def save_checkpoint(model: nn.Module, path: str | Path) -> str:
    """Write the model's weights as safetensors (tied weights stored once), atomically; returns sha256."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))
    return sha256_file(path)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch pickle loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types; all mean "refused"
        raise CheckpointError(
            f"checkpoint {path} was refused: only plain tensors load (weights_only=True); "
            f"convert it to safetensors. ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a flat dict of tensors")
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into ``model``, naming every missing, unexpected or mis-shaped tensor."""
    state = read_state_dict(path)
    shared: dict[int, list[str]] = {}  # one parameter under several names (a tied head, a shared table)
    for name, p in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(name)
    for names in shared.values():  # safetensors keeps one name of a shared tensor: the first in sorted order
        found = next((n for n in names if n in state), None)
        if found is not None and names[0] not in state:
            state[names[0]] = state[found]
    own = model.state_dict()
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - {
        n for n, _ in model.named_parameters()
    }
    missing = sorted(set(own) - set(state) - tied)
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(state[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:10]))
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit the model: " + " | ".join(problems))
    model.load_state_dict(state, strict=False)


def load_model(card: ModelCard, *, seed: int = 0) -> nn.Module:
    """The card's torch model in eval mode: trained weights when the card has a checkpoint (its
    sha256 verified when the card records one), otherwise random weights from ``seed``."""
    torch.manual_seed(seed)
    model = build_model(card.config)
    if card.checkpoint is not None:
        if card.checkpoint_sha256 and card.checkpoint.is_file():
            found = sha256_file(card.checkpoint)
            if found != card.checkpoint_sha256:
                raise CheckpointError(
                    f"checkpoint {card.checkpoint} has sha256 {found}, but card {card.name!r} records "
                    f"{card.checkpoint_sha256}; the file was changed or corrupted"
                )
        load_weights(model, card.checkpoint)
    return model.eval()
