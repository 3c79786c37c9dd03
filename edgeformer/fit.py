"""``edgeformer train CARD --data PATH...``: any card, the user's data, the recipe from flags and the
card's ``[training]`` table, checkpoints that ``--resume`` continues exactly.

The output directory (``-o``, default ``./<card>-trained``) holds the card with the held-out metrics
and the recipe as run, its safetensors weights (and ``<card>.tokenizer.json`` when one tokenized the
data, so that export carries it), ``log.jsonl`` (one line per logged step) and
``checkpoint/`` (weights, optimizer, schedule and data-generator state; replaced atomically, so a
kill during a write leaves the previous one whole). It is listed in ``edgeformer-train.json``;
an existing directory is replaced only with ``--force`` and only when it is an earlier training output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeformer import __version__
from edgeformer.batching import TokenBatches
from edgeformer.config import ModelCard, render_card
from edgeformer.distributed import barrier, finish, parallel, shard, world
from edgeformer.errors import CardError, CheckpointError, DataError
from edgeformer.io import atomic_dir, atomic_path, json_text, sha256_file, write_text_atomic
from edgeformer.nn.checkpoint import load_weights, save_checkpoint
from edgeformer.nn.models import build_model
from edgeformer.nn.training import TrainConfig, TrainResult, train
from edgeformer.ownership import TRAIN_MARKER, check_bundle_output
from edgeformer.safe_read import read_json
from edgeformer.train_batches import Sampler, lm_stream, mask_tokens, pad_rows, sampler_of, seq2seq_batch, token_sampler
from edgeformer.train_data import Dataset, Stream, read_data
from edgeformer.train_tokens import TokenizerJson, encoder_of
from edgeformer.travel import copy_travelling

RUN_FILE = "run.json"


def loss_of(task: str, smoothing: float) -> Callable[[nn.Module, dict[str, Tensor]], Tensor]:
    def loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs)["logits"]
        if task == "classification":
            return F.cross_entropy(logits, batch["labels"], label_smoothing=smoothing)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                               label_smoothing=smoothing)  # fmt: skip

    return loss


def _lm_windows(stream: Stream, card: ModelCard, masked: bool) -> Iterator[dict[str, Tensor]]:
    """The held-out stream in consecutive windows, read one at a time (masked-LM: the same
    corruption at every evaluation)."""
    length = card.config.max_positions
    n = max(1, (len(stream) - 1) // length)
    length = min(length, len(stream) - 1)
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        ids = torch.from_numpy(stream[i * length : (i + 1) * length + 1])[None]
        if masked:
            yield mask_tokens(ids[:, :-1], card, gen)
        else:
            yield {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, card: ModelCard, batch_size: int = 32) -> dict[str, Any]:
    """Held-out metrics: perplexity per token (language model, sequence-to-sequence; masked-LM: of
    the masked tokens), accuracy and balanced accuracy (classification)."""
    model.eval()
    if data.task == "classification":
        from edgeformer.demo import classification_metrics

        ids, mask = pad_rows([data.encoder.encode(t)[: card.config.max_positions] for t in data.texts], 0)
        return classification_metrics(model, ids, mask, torch.as_tensor(data.labels, dtype=torch.long))
    loss, total, count = loss_of(data.task, 0.0), 0.0, 0
    rows: Iterator[dict[str, Tensor]]
    if data.task in ("language-model", "masked-language-model"):
        rows = _lm_windows(lm_stream(data), card, masked=data.task == "masked-language-model")
    else:
        encode, n = data.encoder.encode, len(data.texts)
        rows = (seq2seq_batch(data.texts[i : i + batch_size], data.targets[i : i + batch_size], card, encode)
                for i in range(0, n, batch_size))  # fmt: skip
    for batch in rows:
        tokens = int((batch["labels"] != -100).sum())
        total, count = total + loss(model, batch).item() * tokens, count + tokens
    return {"valid_perplexity": round(math.exp(total / count), 4), "valid_tokens": count}


def fingerprint(files: dict[str, int], paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0{files[str(path)]}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def card_in(directory: Path, error: type[Exception] = CardError) -> Path:
    """The one card (.toml) of a training output directory."""
    cards = sorted(directory.glob("*.toml"))
    if len(cards) != 1:
        raise error(f"{directory}: expected one card (.toml) in the directory, found {len(cards)}")
    return cards[0]


def init_weights(model: nn.Module, init: Path) -> None:
    """Load ``init``: a safetensors/torch weights file, a card, or a directory holding one card."""
    from edgeformer.zoo import resolve_card

    if init.is_dir():
        init = card_in(init, CheckpointError)
    if init.suffix == ".toml":
        card = resolve_card(init)
        if card.checkpoint is None:
            raise CheckpointError(f"--init {init}: the card names no checkpoint")
        init = card.checkpoint
    load_weights(model, init)


def _listing(out: Path) -> None:
    """Write the marker that makes ``out`` an earlier training output (``--force``, ``--resume``)."""
    files = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
    files.pop(TRAIN_MARKER, None)
    marker = {"format_version": 1, "producer": {"edgeformer": __version__}, "files": files}
    write_text_atomic(out / TRAIN_MARKER, json_text(marker) + "\n")


def save_state(out: Path, model: nn.Module, state: dict[str, Any], run: dict[str, Any]) -> None:
    """checkpoint/: weights (safetensors), the loop's state (torch tensors only) and the run; one atomic unit."""
    with atomic_dir(out / "checkpoint") as tmp:
        save_checkpoint(model, tmp / "model.safetensors")
        torch.save(state, tmp / "state.pt")
        (tmp / RUN_FILE).write_text(json_text(run | {"step": state["step"]}) + "\n", encoding="utf-8")
    _listing(out)


def load_state(out: Path, model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run and loop state of ``out/checkpoint``, its weights loaded into ``model``."""
    ckpt = out / "checkpoint"
    run = read_json(ckpt / RUN_FILE, what="training run", error=CheckpointError)
    load_weights(model, ckpt / "model.safetensors")
    try:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types; all mean "unusable"
        raise CheckpointError(f"{ckpt / 'state.pt'} cannot be resumed from ({type(exc).__name__})") from None
    return run, state


def prepare_output(out: Path, force: bool, resume: bool) -> None:
    if resume:
        if not (out / "checkpoint" / RUN_FILE).is_file():
            raise CheckpointError(f"--resume {out}: no checkpoint/ there (give --checkpoint-every to write one)")
        return
    check_bundle_output(out, force, CardError, marker=TRAIN_MARKER)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


class Progress:
    """The log callback: a line with step, loss, lr, steps/s and the time left (to ``echo``), and
    the same as a line of ``log.jsonl`` in the output directory."""

    def __init__(self, out: Path, total: int, echo: Callable[[str], None]) -> None:
        self.out, self.total, self.echo = out, total, echo
        self.t0: float | None = None
        self.step0 = 0

    def __call__(self, step: int, loss: float, lr: float) -> None:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.step0 = now, step
        done = step - self.step0
        rate = done / (now - self.t0) if done and now > self.t0 else 0.0
        eta = f"{(self.total - step - 1) / rate:.0f}s" if rate > 0 else "?"
        self.echo(f"step {step + 1}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  {rate:.2f} steps/s  eta {eta}")
        line = {"step": step + 1, "loss": loss, "lr": lr, "steps_per_s": rate}
        with (self.out / "log.jsonl").open("a", encoding="utf-8") as f:
            f.write(json_text(line, indent=None) + "\n")


def _recipe(cfg: TrainConfig, task: str, card: ModelCard) -> dict[str, Any]:
    """The [training] table of the output card: the recipe as run (and the card's label names)."""
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    labels = {"labels": card.training["labels"]} if "labels" in card.training else {}
    return {"task": task} | {k: v for k, v in values.items() if v is not None} | labels


def _run_of(card: ModelCard, data: list[Path], valid: list[Path], overrides: dict[str, Any]) -> dict[str, Any]:
    return {"card": str(card.path), "data": [str(p) for p in data], "valid": [str(p) for p in valid],
            "overrides": overrides}  # fmt: skip


def train_card(
    card: ModelCard,
    out: Path,
    *,
    data: list[Path],
    valid: list[Path],
    overrides: dict[str, Any],
    init: Path | None = None,
    tokenizer: Path | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``card`` on ``data`` into the new directory ``out`` (see the module docstring)."""
    run = _run_of(card, data, valid, overrides) | {"tokenizer": str(tokenizer) if tokenizer else None}
    plan = _plan(card, run)  # bad data, a recipe out of range: refused before anything is written
    if world()[0] == 0:  # under torchrun, rank 0 alone writes
        prepare_output(out, force, resume=False)
    barrier()
    return _fit(card, out, plan, run, init, None, echo)


def tokenizer_path(card: ModelCard, given: Path | None) -> Path | None:
    """``--tokenizer FILE``, else the card's ``tokenizer = "x.json"`` (beside the card), else None: bytes."""
    if given is not None:
        return given
    if card.tokenizer.endswith(".json") and card.path is not None:
        return card.path.parent / card.tokenizer
    return None


@dataclasses.dataclass(frozen=True)
class _Plan:
    cfg: TrainConfig
    sets: tuple[Dataset, Dataset | None]
    sample: Sampler


def _plan(card: ModelCard, run: dict[str, Any]) -> _Plan:
    """The recipe, the training and held-out sets (checked in one streaming pass each) and the sampler of a run."""
    from edgeformer.demo import train_config_of

    cfg = train_config_of(card, **run["overrides"])
    given = run.get("tokenizer")
    encoder = encoder_of(tokenizer_path(card, Path(given) if given else None))
    data, valid = [Path(p) for p in run["data"]], [Path(p) for p in run["valid"]]
    train_set = read_data(card, data, encoder)
    sets = train_set, (read_data(card, valid, encoder) if valid else None)
    if cfg.batch_tokens:
        return _Plan(cfg, sets, token_sampler(train_set, card, cfg.batch_tokens, cfg.seed))
    return _Plan(cfg, sets, shard(sampler_of(train_set, card), cfg.batch_size))


def resume_training(out: Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Continue the run whose checkpoint is in ``out`` exactly where it stopped."""
    from edgeformer.zoo import resolve_card

    prepare_output(out, False, resume=True)
    run = read_json(out / "checkpoint" / RUN_FILE, what="training run", error=CheckpointError)
    card = resolve_card(run["card"])
    return _fit(card, out, _plan(card, run), run, None, out, echo)


def _fit(
    card: ModelCard,
    out: Path,
    plan: _Plan,
    run: dict[str, Any],
    init: Path | None,
    resume: Path | None,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    cfg, sets, sample = plan.cfg, plan.sets, plan.sample
    dropouts = {k: getattr(cfg, k) for k in ("dropout", "attention_dropout") if getattr(cfg, k) is not None}
    torch.manual_seed(cfg.seed)
    model = build_model(dataclasses.replace(card.config, **dropouts, gradient_checkpointing=cfg.gradient_checkpointing))
    if init is not None:
        init_weights(model, init)
    state = load_state(resume, model)[1] if resume is not None else None
    rank = world()[0]

    def checkpoint(loop_state: dict[str, Any]) -> None:
        if rank == 0:
            save_state(out, model, loop_state, run)
        barrier()

    loss = loss_of(sets[0].task, cfg.label_smoothing)
    if isinstance(sample, TokenBatches):
        sample.seek(int(state["step"]) * cfg.grad_accum if state is not None else 0)  # the data position
    log = Progress(out, cfg.steps, echo) if rank == 0 else None
    result = train(parallel(model), sample, loss, cfg, log, resume=state, checkpoint=checkpoint)
    written: dict[str, Any] = {}
    if rank == 0:
        written = _write_output(card, out, model, cfg, result, sets, run)
    barrier()
    finish()
    return written


def _write_output(
    card: ModelCard,
    out: Path,
    model: nn.Module,
    cfg: TrainConfig,
    result: TrainResult,
    sets: tuple[Dataset, Dataset | None],
    run: dict[str, Any],
) -> dict[str, Any]:
    """The trained card (held-out metrics, the recipe as run, data fingerprint), its weights, the listing."""
    train_set, valid_set = sets
    metrics = evaluate(model, valid_set, card) if valid_set is not None else {}
    tail = result.losses[-min(len(result.losses), cfg.log_every) :]
    metrics |= {"train_loss": round(sum(tail) / len(tail), 4), "train_seconds": round(result.seconds, 1)}
    metrics["data_sha256"] = fingerprint(train_set.files, [Path(p) for p in run["data"]])
    weights = out / f"{card.name}.safetensors"
    sha = save_checkpoint(model, weights)
    tokenizer = card.tokenizer
    if isinstance(train_set.encoder, TokenizerJson):  # travels with the card, so export carries it
        tokenizer = f"{card.name}.tokenizer.json"
        with atomic_path(out / tokenizer) as tmp:
            copy_travelling(train_set.encoder.path, tmp, what="tokenizer", error=DataError)
    recipe = _recipe(cfg, train_set.task, card)
    trained = dataclasses.replace(
        card, checkpoint=weights, checkpoint_sha256=sha, metrics=metrics, training=recipe, tokenizer=tokenizer
    )
    with atomic_path(out / f"{card.name}.toml") as tmp:
        tmp.write_text(render_card(trained), encoding="utf-8")
    _listing(out)
    return {"card": str(out / f"{card.name}.toml"), "checkpoint": str(weights), "sha256": sha, "metrics": metrics}
