"""Training recipes of the two shipped demo models, on the stdlib docstring corpus.

``demo-decoder``: a byte-level language model; metric: held-out perplexity per byte.
``demo-encoder``: a byte-level classifier of word order: the first words of a docstring as
written, shuffled, or reversed (``data.ORDERS``); metric: held-out accuracy and balanced accuracy
(the held-out classes are exactly balanced), beside a bag-of-bytes baseline that is at chance by
construction (the three orders of a text hold the same bytes).

The recipe (steps, batch size, learning rate, seed) lives in the card's ``[training]`` table, so
``edgeformer train demo-decoder`` re-runs exactly what produced the shipped checkpoint.
"""

from __future__ import annotations

import math
import platform
import random
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeformer import tokenizer
from edgeformer.config import ModelCard
from edgeformer.data import ORDERS, Docstring, load_docstrings, reorder, word_order_examples, word_order_texts
from edgeformer.errors import CardError
from edgeformer.nn.checkpoint import save_checkpoint
from edgeformer.nn.models import build_model, lm_loss
from edgeformer.nn.training import PRECISIONS, SCHEDULES, TrainConfig, TrainResult, train
from edgeformer.numbers import finite_number

RECIPES = ("demo-decoder", "demo-encoder")


def train_config_of(card: ModelCard, **overrides: Any) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    recipe = {k: v for k, v in card.training.items() if k in known}
    unknown = sorted(set(card.training) - known - {"task", "python", "seconds", "labels", "mask_token_id"})
    if unknown:
        raise CardError(f"{card.name}: unknown key [training].{unknown[0]}; known: {', '.join(sorted(known))}")
    if "betas" in recipe:
        recipe["betas"] = tuple(recipe["betas"])
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig(**recipe)
    _check_recipe(card.name, cfg)
    return cfg


# [training] values: integers in these ranges; finite floats in these intervals
RECIPE_COUNTS = {
    "steps": (1, 10**8), "batch_size": (1, 4096), "warmup_steps": (0, 10**8), "log_every": (1, 10**8),
    "grad_accum": (1, 4096), "checkpoint_every": (0, 10**8), "batch_tokens": (0, 10**7),
}  # fmt: skip
RECIPE_FLOATS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("(0, 10)", lambda v: 0 < v < 10),
    "min_lr_ratio": ("[0, 1]", lambda v: 0 <= v <= 1),
    "weight_decay": ("[0, 1]", lambda v: 0 <= v <= 1),
    "grad_clip": ("(0, 1e6]", lambda v: 0 < v <= 1e6),
    "betas": ("[0, 1)", lambda v: 0 <= v < 1),
    "eps": ("(0, 1)", lambda v: 0 < v < 1),
    "label_smoothing": ("[0, 1)", lambda v: 0 <= v < 1),
    "dropout": ("[0, 1)", lambda v: v is None or 0 <= v < 1),
    "attention_dropout": ("[0, 1)", lambda v: v is None or 0 <= v < 1),
}


def _check_choices(name: str, cfg: TrainConfig) -> None:
    for key, choices in (("schedule", SCHEDULES), ("precision", PRECISIONS)):
        if getattr(cfg, key) not in choices:
            got = getattr(cfg, key)
            raise CardError(f"{name}: [training].{key} must be one of {', '.join(choices)}, got {got!r:.40}")
    if not isinstance(cfg.gradient_checkpointing, bool):
        raise CardError(f"{name}: [training].gradient_checkpointing must be true or false")


def _check_recipe(name: str, cfg: TrainConfig) -> None:
    """Refuse a [training] value outside its domain (CardError naming the key): NaN or inf in a
    rate trains nothing and reports a loss of NaN; a huge count runs for days or allocates everything."""
    for key, (low, high) in RECIPE_COUNTS.items():
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CardError(f"{name}: [training].{key} must be an integer from {low} to {high:,}, got {value!r:.40}")
    betas = cfg.betas if isinstance(cfg.betas, tuple | list) and len(cfg.betas) == 2 else (None,)
    values = [(k, getattr(cfg, k)) for k in RECIPE_FLOATS if k != "betas"] + [("betas", b) for b in betas]
    _check_choices(name, cfg)
    for key, value in values:
        if value is None and key in ("dropout", "attention_dropout"):
            continue  # the card's [model] value
        interval, inside = RECIPE_FLOATS[key]
        finite = finite_number(value)
        if not finite or not inside(value):
            what = "two numbers, each" if key == "betas" else "a finite number"
            raise CardError(f"{name}: [training].{key} must be {what} in {interval}, got {getattr(cfg, key)!r:.40}")


# ----- the decoder: next-byte prediction ---------------------------------------------------------


def byte_stream(docs: list[Docstring]) -> Tensor:
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer.encode(d.text, bos=True, eos=True))
    return torch.tensor(ids, dtype=torch.long)


def _window_sampler(stream: Tensor, length: int) -> Callable[[torch.Generator, int], dict[str, Tensor]]:
    def sample(gen: torch.Generator, batch_size: int) -> dict[str, Tensor]:
        starts = torch.randint(0, len(stream) - length - 1, (batch_size,), generator=gen)
        rows = torch.stack([stream[s : s + length + 1] for s in starts.tolist()])  # (B, T + 1)
        return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}

    return sample


def _lm_step(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return lm_loss(model(batch["input_ids"])["logits"], batch["labels"])


@torch.no_grad()
def perplexity(model: nn.Module, stream: Tensor, length: int, batch_size: int = 32) -> float:
    """exp(mean next-byte cross-entropy) over non-overlapping windows of the stream."""
    model.eval()
    n = (len(stream) - 1) // length
    inputs = stream[: n * length].view(n, length)
    labels = stream[1 : n * length + 1].view(n, length)
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        logits = model(inputs[i : i + batch_size])["logits"]
        total += F.cross_entropy(logits.flatten(0, 1), labels[i : i + batch_size].flatten(), reduction="sum").item()
        count += labels[i : i + batch_size].numel()
    return math.exp(total / count)


# ----- the encoder: prose, shuffled or reversed? ------------------------------------------------


def encode_texts(texts: list[str], length: int) -> tuple[Tensor, Tensor]:
    """input_ids (N, L) of the first ``length`` bytes of each text, right-padded to the longest; mask."""
    rows = [tokenizer.encode(t)[:length] for t in texts]
    width = max(1, max((len(r) for r in rows), default=1))
    ids = torch.full((len(rows), width), tokenizer.PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def word_order_set(length: int, split: str = "valid") -> tuple[Tensor, Tensor, Tensor]:
    """The held-out word-order examples (``data.word_order_examples``) as input_ids, mask, labels."""
    examples = word_order_examples(split)
    ids, mask = encode_texts([t for t, _ in examples], length)
    return ids, mask, torch.tensor([label for _, label in examples])


def _order_sampler(texts: list[tuple[str, ...]], length: int) -> Callable[[torch.Generator, int], dict[str, Tensor]]:
    """Texts and orders drawn uniformly (balanced classes); a fresh shuffle every time a text is drawn."""

    def sample(gen: torch.Generator, batch_size: int) -> dict[str, Tensor]:
        picks = torch.randint(0, len(texts), (batch_size,), generator=gen).tolist()
        labels = torch.randint(0, len(ORDERS), (batch_size,), generator=gen)
        rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        rows = [reorder(texts[i], c, rng) for i, c in zip(picks, labels.tolist(), strict=True)]
        ids, mask = encode_texts(rows, length)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return sample


def _cls_step(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    logits = model(batch["input_ids"], batch["attention_mask"])["logits"]
    return F.cross_entropy(logits, batch["labels"])


def _scores(preds: Tensor, labels: Tensor, classes: int) -> tuple[float, float]:
    recalls = [(preds[labels == c] == c).float().mean().item() for c in range(classes) if (labels == c).any()]
    return (preds == labels).float().mean().item(), sum(recalls) / len(recalls)


@torch.no_grad()
def classification_metrics(model: nn.Module, ids: Tensor, mask: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy, balanced accuracy (the mean of per-class recalls) and the majority-class baseline."""
    model.eval()
    logits = torch.cat([model(ids[i : i + 64], mask[i : i + 64])["logits"] for i in range(0, len(ids), 64)])
    accuracy, balanced = _scores(logits.argmax(-1), labels, logits.shape[-1])
    majority = max((labels == c).float().mean().item() for c in range(logits.shape[-1]))
    return {
        "accuracy": round(accuracy, 4),
        "balanced_accuracy": round(balanced, 4),
        "majority_baseline": round(majority, 4),
        "examples": len(labels),
    }


def _byte_histograms(ids: Tensor, mask: Tensor) -> Tensor:
    counts = torch.zeros(len(ids), tokenizer.VOCAB_SIZE).scatter_add_(1, ids, mask.float())
    return counts / mask.sum(1, keepdim=True).clamp(min=1)


def bag_of_bytes_baseline(texts: list[tuple[str, ...]], valid: tuple[Tensor, Tensor, Tensor], length: int) -> float:
    """Held-out balanced accuracy of a softmax regression on byte frequencies, trained on every
    training text in every order: what a model that ignores order can reach."""
    rng = random.Random(0)
    rows = [(reorder(words, c, rng), c) for words in texts for c in range(len(ORDERS))]
    x = _byte_histograms(*encode_texts([t for t, _ in rows], length))
    y = torch.tensor([c for _, c in rows])
    linear = nn.Linear(tokenizer.VOCAB_SIZE, len(ORDERS))
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(linear(x * 100), y).backward()
        opt.step()
    ids, mask, labels = valid
    with torch.no_grad():
        preds = linear(_byte_histograms(ids, mask) * 100).argmax(-1)
    return round(_scores(preds, labels, len(ORDERS))[1], 4)


# ----- the driver --------------------------------------------------------------------------------


def train_demo(
    card: ModelCard,
    out: Path,
    *,
    steps: int | None = None,
    seed: int | None = None,
    log: Callable[[int, float, float], None] | None = None,
) -> tuple[dict[str, Any], TrainResult, str]:
    """Train the card's demo model by its recipe; write the safetensors checkpoint to ``out``.

    Returns (held-out metrics, training result, sha256 of the checkpoint).
    """
    task = card.training.get("task")
    if task not in ("language-model", "word-order"):
        raise CardError(f"{card.name}: [training].task must be 'language-model' or 'word-order' to train it here")
    cfg = train_config_of(card, steps=steps, seed=seed)
    from edgeformer.limits import check_export_memory

    check_export_memory(card.config, name=card.name, parity=False)  # a lower bound of training's peak
    torch.manual_seed(cfg.seed)
    model = build_model(card.config)
    length = card.config.max_positions
    train_docs = load_docstrings("train")
    if task == "language-model":
        valid_docs = load_docstrings("valid")
        result = train(model, _window_sampler(byte_stream(train_docs), length), _lm_step, cfg, log)
        metrics: dict[str, Any] = {"valid_perplexity": round(perplexity(model, byte_stream(valid_docs), length), 4)}
        metrics["valid_bytes"] = len(byte_stream(valid_docs))
    else:
        texts, valid = word_order_texts(train_docs), word_order_set(length)
        result = train(model, _order_sampler(texts, length), _cls_step, cfg, log)
        metrics = classification_metrics(model, *valid)
        metrics["bag_of_bytes_baseline"] = bag_of_bytes_baseline(texts, valid, length)
    metrics["python"] = platform.python_version()
    metrics["train_seconds"] = round(result.seconds, 1)
    sha = save_checkpoint(model, out)
    return metrics, result, sha


def write_trained(
    card: ModelCard,
    out: Path,
    *,
    steps: int | None = None,
    seed: int | None = None,
    force: bool = False,
    log: Callable[[int, float, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``card`` (``train_demo``) into the new directory ``out``: the card (with the metrics,
    the checkpoint's sha256 and the recipe as run), the checkpoint and ``edgeformer-train.json``
    listing them, written atomically. An existing ``out`` is replaced only with ``force`` and only
    when it is an earlier training output; the shipped card and checkpoint are never touched."""
    import dataclasses

    from edgeformer import __version__
    from edgeformer.config import render_card
    from edgeformer.io import atomic_dir, json_text, sha256_file
    from edgeformer.ownership import TRAIN_MARKER, check_bundle_output

    assert card.path is not None and card.checkpoint is not None
    check_bundle_output(out, force, CardError, marker=TRAIN_MARKER)
    card_file, ckpt_file = f"{card.name}.toml", card.checkpoint.name
    with atomic_dir(out) as tmp:
        metrics, _result, sha = train_demo(card, tmp / ckpt_file, steps=steps, seed=seed, log=log)
        training = dict(card.training) | ({"steps": steps} if steps is not None else {})
        training |= {"seed": seed} if seed is not None else {}
        updated = dataclasses.replace(
            card, checkpoint=out / ckpt_file, checkpoint_sha256=sha, metrics=metrics, training=training
        )
        (tmp / card_file).write_text(render_card(updated), encoding="utf-8")
        files = {name: sha256_file(tmp / name) for name in (card_file, ckpt_file)}
        marker = {"format_version": 1, "producer": {"edgeformer": __version__}, "files": files}
        (tmp / TRAIN_MARKER).write_text(json_text(marker) + "\n", encoding="utf-8")
    return {"card": str(out / card_file), "checkpoint": str(out / ckpt_file), "sha256": sha, "metrics": metrics}
