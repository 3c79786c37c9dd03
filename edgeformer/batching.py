"""Batches by tokens (``--batch-tokens N``, ``[training] batch_tokens``), as fairseq and the Transformer
paper batch: examples grouped by length so that each batch's padded size (rows x its longest example)
stays at or below N, in place of a fixed number of rows that pads short examples to long ones.

An epoch: the examples in an order shuffled by (seed, epoch), stably sorted by length (equal lengths
stay shuffled), cut greedily into batches, the batches shuffled. The sorted lengths are the same in
every epoch, so every epoch has the same number of batches B and global batch g is batch g mod B of
epoch g // B. Under torchrun rank r of R takes global batches r, r + R, r + 2R, ... (each rank its
own batch of up to N tokens, fairseq's ``--max-tokens`` per device), so the ranks together see every
example once per epoch. The data position is the number of batches a rank has drawn (``seek``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from edgeformer.errors import CardError

MakeBatch = Callable[[list[int], torch.Generator], dict[str, Tensor]]


def plan_epoch(lengths: Sequence[int] | np.ndarray, max_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches (lists of example indices); each index once, rows x longest <= max_tokens."""
    sizes = np.asarray(lengths, dtype=np.int64)
    longest = int(sizes.max()) if len(sizes) else 0
    if longest > max_tokens:
        raise CardError(
            f"--batch-tokens {max_tokens} is below the longest example ({longest} tokens); give at least that"
        )
    rng = np.random.default_rng([seed, epoch])
    shuffled = rng.permutation(len(sizes))
    order = shuffled[np.argsort(sizes[shuffled], kind="stable")]
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order.tolist():
        width = max(int(sizes[index]), 1)  # the longest so far: the order is by length
        if current and (len(current) + 1) * width > max_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


class TokenBatches:
    """A sampler for the trainer (``sampler(generator, batch_size)``) drawing batches by tokens.

    ``batch_size`` is ignored (the batch is N tokens); the generator goes to ``make`` (masked-LM's
    corruption draws from it). ``position`` counts the batches this rank has drawn; ``seek`` sets it
    when a run resumes (optimizer steps x gradient accumulation)."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        seed: int,
        make: MakeBatch,
        rank: int = 0,
        size: int = 1,
    ) -> None:
        self.lengths, self.max_tokens, self.seed, self.make = lengths, max_tokens, seed, make
        self.rank, self.size, self.position = rank, size, 0
        self._epoch, self._plan = 0, plan_epoch(lengths, max_tokens, seed, 0)
        self.per_epoch = len(self._plan)

    def seek(self, position: int) -> None:
        self.position = position

    def indices(self, position: int) -> list[int]:
        """The example indices of this rank's batch number ``position``."""
        epoch, batch = divmod(position * self.size + self.rank, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._plan = epoch, plan_epoch(self.lengths, self.max_tokens, self.seed, epoch)
        return self._plan[batch]

    def __call__(self, gen: torch.Generator, batch_size: int) -> dict[str, Tensor]:
        picks = self.indices(self.position)
        self.position += 1
        return self.make(picks, gen)
