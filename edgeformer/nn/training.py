"""A small trainer, as the paper's training section needs: AdamW, linear warmup then linear decay,
gradient clipping, a batch size and a seed. A function of the library, not a notebook."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # the rate decays linearly to lr * min_lr_ratio at the last step
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """Linear warmup from 0 to 1 over warmup_steps, then linear decay to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
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
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def train(
    model: nn.Module,
    sample_batch: Callable[[torch.Generator, int], Batch],
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    cfg: TrainConfig,
    log: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` for cfg.steps batches drawn by ``sample_batch(generator, batch_size)``.

    The generator is seeded from cfg.seed, so a run is reproducible on the same machine and torch.
    ``log(step, loss, lr)`` is called every cfg.log_every steps and at the last one.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, cfg))
    result = TrainResult()
    start = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        loss = loss_fn(model, sample_batch(gen, cfg.batch_size))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        result.losses.append(loss.item())
        if log is not None and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            log(step, loss.item(), float(sched.get_last_lr()[0]))
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
