"""A small trainer, as the paper's training section needs: AdamW (betas, eps, weight decay), a
learning-rate schedule with warmup (linear decay, cosine, or the paper's inverse square root),
gradient clipping and accumulation, label smoothing (in the loss functions), a seed, and a state
that can be saved and resumed exactly. A function of the library, not a notebook."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Batch = dict[str, Tensor]
SCHEDULES = ("linear", "cosine", "inverse-sqrt")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3  # the peak rate, reached at the end of warmup
    warmup_steps: int = 100
    schedule: str = "linear"  # SCHEDULES
    min_lr_ratio: float = 0.1  # linear and cosine decay to lr * min_lr_ratio at the last step
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step
    batch_tokens: int = 0  # > 0: micro-batches of at most this many padded tokens (edgeformer.batching)
    label_smoothing: float = 0.0
    dropout: float | None = None  # None: the card's [model] value
    attention_dropout: float | None = None
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0  # 0: no checkpoint during training
    precision: str = "fp32"  # PRECISIONS: bf16 runs the forward pass under torch.autocast (CPU)
    gradient_checkpointing: bool = False  # recompute each layer's activations in the backward pass


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """The rate of optimizer step ``step`` (from 0) as a fraction of cfg.lr.

    linear: warmup from 0 to 1 over warmup_steps, then linear decay to min_lr_ratio; cosine: the same
    warmup, then half a cosine down to min_lr_ratio; inverse-sqrt (the paper): min(n^-0.5, n *
    warmup^-1.5) * warmup^0.5 with n = step + 1, which is 1 at n = warmup; with cfg.lr =
    d_model^-0.5 * warmup^-0.5 the rate is the paper's d_model^-0.5 * min(n^-0.5, n * warmup^-1.5).
    """
    n = step + 1
    if cfg.schedule == "inverse-sqrt":
        warmup = max(1, cfg.warmup_steps)
        return min(n**-0.5, n * warmup**-1.5) * warmup**0.5
    if step < cfg.warmup_steps:
        return n / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "cosine":
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - (1.0 - cfg.min_lr_ratio) * progress


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or position tables)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "positions" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


@dataclass
class _Loop:
    """Everything a resumed run needs besides the weights: the optimizer, the schedule, the data
    generator (the data position) and torch's global generator (dropout)."""

    opt: torch.optim.AdamW
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    step: int = 0

    def state(self, losses: list[float]) -> dict[str, Any]:
        return {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "losses": torch.tensor(losses, dtype=torch.float64),
        }

    def restore(self, state: dict[str, Any]) -> list[float]:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        return [float(v) for v in state["losses"].tolist()]


def _one_step(model: nn.Module, sample_batch: Callable, loss_fn: Callable, cfg: TrainConfig, loop: _Loop) -> float:
    """One optimizer step over cfg.grad_accum micro-batches; returns their mean loss."""
    loop.opt.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(cfg.grad_accum):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss = loss_fn(model, sample_batch(loop.gen, cfg.batch_size)).float()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {loop.step}; lower the learning rate")
        (loss / cfg.grad_accum).backward()
        total += loss.item() / cfg.grad_accum
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    loop.opt.step()
    loop.sched.step()
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # under torchrun: the global mean
        reduced = torch.tensor([total], dtype=torch.float64)
        torch.distributed.all_reduce(reduced)
        total = reduced.item() / torch.distributed.get_world_size()
    return total


def train(
    model: nn.Module,
    sample_batch: Callable[[torch.Generator, int], Batch],
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    cfg: TrainConfig,
    log: Callable[[int, float, float], None] | None = None,
    *,
    resume: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` for cfg.steps optimizer steps on batches drawn by ``sample_batch(generator, batch_size)``.

    The generator is seeded from cfg.seed, so a run is reproducible on the same machine and torch.
    ``log(step, loss, lr)`` is called every cfg.log_every steps and at the last one. ``checkpoint(state)``
    is called every cfg.checkpoint_every steps with the loop's state; ``resume`` (such a state, the
    model already holding the weights saved with it) continues exactly where it was taken.
    """
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    loop = _Loop(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, cfg)), torch.Generator())
    loop.gen.manual_seed(cfg.seed)
    result = TrainResult()
    if resume is not None:
        result.losses = loop.restore(resume)
    start = time.perf_counter()
    model.train()
    while loop.step < cfg.steps:
        loss = _one_step(model, sample_batch, loss_fn, cfg, loop)
        result.losses.append(loss)
        step, loop.step = loop.step, loop.step + 1
        if log is not None and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            log(step, loss, float(loop.sched.get_last_lr()[0]))
        if checkpoint is not None and cfg.checkpoint_every and loop.step % cfg.checkpoint_every == 0:
            checkpoint(loop.state(result.losses))
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
