"""The tensors of ``edgeformer train``: the user's examples (``edgeformer.train_data``) as batches.

``sampler_of`` draws a fixed number of rows uniformly with the trainer's generator; ``token_sampler``
batches by tokens (``--batch-tokens``, ``edgeformer.batching``). Tokenization is byte-level: ids
0-255, the card's pad/bos/eos ids (or the byte tokenizer's) for the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from edgeformer import tokenizer
from edgeformer.batching import TokenBatches
from edgeformer.config import ModelCard
from edgeformer.distributed import world
from edgeformer.train_data import Dataset, Stream
from edgeformer.train_tokens import Bytes

Sampler = Callable[[torch.Generator, int], dict[str, Tensor]]
BYTES = Bytes()


def _special(value: int, default: int) -> int:
    return value if value >= 0 else default


def pad_rows(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def lm_stream(data: Dataset) -> Stream:
    """The (masked) language model's token stream: ``stream[a:b]`` reads ids a..b from the files."""
    if data.stream is None:
        raise ValueError(f"a {data.task} set has no token stream")
    return data.stream


def window_of(stream: Stream, start: int, width: int) -> Tensor:
    return torch.from_numpy(stream[start : start + width])


def seq2seq_batch(
    sources: Sequence[str], targets: Sequence[str], card: ModelCard, encode: Callable[[str], list[int]] = BYTES.encode
) -> dict[str, Tensor]:
    """Encoder input, decoder input ([bos] target) and labels (target [eos], -100 on padding)."""
    cfg, length = card.config, card.config.max_positions
    bos, eos = _special(cfg.bos_token_id, tokenizer.BOS), _special(cfg.eos_token_id, tokenizer.EOS)
    ids, mask = pad_rows([encode(s)[:length] for s in sources], cfg.pad_token_id)
    target_rows = [encode(t)[: length - 1] for t in targets]
    dec, dec_mask = pad_rows([[bos] + r for r in target_rows], cfg.pad_token_id)
    labels, _ = pad_rows([r + [eos] for r in target_rows], -100)
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec, "decoder_attention_mask": dec_mask,
            "labels": labels}  # fmt: skip


MASK_RATE = 0.15  # BERT's: of the chosen tokens 80% become the mask id, 10% a random byte, 10% stay


def mask_tokens(ids: Tensor, card: ModelCard, gen: torch.Generator) -> dict[str, Tensor]:
    """BERT's masked-LM corruption of (B, T) ids; labels are the original ids at the chosen
    positions and -100 elsewhere. The mask id is [training].mask_token_id (default: the pad id)."""
    mask_id = int(card.training.get("mask_token_id", card.config.pad_token_id))
    chosen = torch.rand(ids.shape, generator=gen) < MASK_RATE
    chosen[:, 0] |= ~chosen.any(1)  # at least one target per row
    roll = torch.rand(ids.shape, generator=gen)
    random_bytes = torch.randint(0, 256, ids.shape, generator=gen)
    corrupted = torch.where(chosen & (roll < 0.8), mask_id, ids)
    corrupted = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_bytes, corrupted)
    return {"input_ids": corrupted, "labels": torch.where(chosen, ids, -100)}


def batch_of(data: Dataset, card: ModelCard, picks: list[int]) -> dict[str, Tensor]:
    """The batch of examples ``picks`` of a classification or sequence-to-sequence set."""
    if data.task == "sequence-to-sequence":
        return seq2seq_batch(
            [data.texts[i] for i in picks], [data.targets[i] for i in picks], card, data.encoder.encode
        )
    rows = [data.encoder.encode(data.texts[i])[: card.config.max_positions] for i in picks]
    ids, mask = pad_rows(rows, card.config.pad_token_id)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.tensor([int(data.labels[i]) for i in picks], dtype=torch.long),
    }


def _lm_rows(rows: Tensor, task: str, card: ModelCard, gen: torch.Generator) -> dict[str, Tensor]:
    if task == "masked-language-model":
        return mask_tokens(rows[:, :-1], card, gen)
    return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}


def sampler_of(data: Dataset, card: ModelCard) -> Sampler:
    """Batches drawn uniformly from the data by the trainer's generator (the data position)."""
    if data.task in ("language-model", "masked-language-model"):
        stream = lm_stream(data)
        window = min(card.config.max_positions, len(stream) - 2)

        def windows(gen: torch.Generator, batch_size: int) -> dict[str, Tensor]:
            starts = torch.randint(0, len(stream) - window, (batch_size,), generator=gen).tolist()
            return _lm_rows(torch.stack([window_of(stream, s, window + 1) for s in starts]), data.task, card, gen)

        return windows

    def examples(gen: torch.Generator, batch_size: int) -> dict[str, Tensor]:
        return batch_of(data, card, torch.randint(0, len(data.texts), (batch_size,), generator=gen).tolist())

    return examples


def token_sampler(data: Dataset, card: ModelCard, max_tokens: int, seed: int) -> TokenBatches:
    """Batches of up to ``max_tokens`` padded tokens, every example once per epoch (edgeformer.batching).
    An example's size: its tokens after truncation to max_positions (sequence-to-sequence: the longer
    of source and [bos] target); a language model's examples are the stream's consecutive windows."""
    rank, size = world()
    length = card.config.max_positions
    if data.task in ("language-model", "masked-language-model"):
        stream = lm_stream(data)
        window = min(length, len(stream) - 1)
        count = (len(stream) - 1) // window

        def make_windows(picks: list[int], gen: torch.Generator) -> dict[str, Tensor]:
            rows = torch.stack([window_of(stream, i * window, window + 1) for i in picks])
            return _lm_rows(rows, data.task, card, gen)

        return TokenBatches([window] * count, max_tokens, seed, make_windows, rank, size)
    sizes = [min(len(data.encoder.encode(t)), length) for t in data.texts]
    if data.task == "sequence-to-sequence":
        targets = (min(len(data.encoder.encode(t)), length - 1) + 1 for t in data.targets)
        sizes = [max(s, t) for s, t in zip(sizes, targets, strict=True)]
    return TokenBatches(sizes, max_tokens, seed, lambda picks, gen: batch_of(data, card, picks), rank, size)
