"""Training throughput: `edgeformer train` against a plain hand-written torch loop (the nanoGPT kind)
on the same card, batch and machine; time to the first step; two CPU ranks under torchrun against one.

    python bench/train_throughput.py                          # demo-decoder, batch 16, 60 steps
    python bench/train_throughput.py --card gpt-mini --steps 200 --batch-size 32 --out bench-out/train.json

The data is this Python's standard library docstrings written to one text file (every machine has
them). Throughput is tokens per second of the training loop alone (data reading and evaluation are
timed apart). The issue's bar: edgeformer at >= 0.95x of the plain loop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgeformer.data import load_docstrings
from edgeformer.nn.models import build_model
from edgeformer.zoo import resolve_card


def corpus(directory: Path) -> Path:
    path = directory / "docstrings.txt"
    path.write_text("\n\n".join(d.text for d in load_docstrings("train")), encoding="utf-8")
    return path


def plain_loop(card_name: str, data: Path, steps: int, batch: int, lr: float) -> dict[str, float]:
    """The hand-written baseline: AdamW, random windows, cross-entropy, clip, step; nothing else."""
    cfg = resolve_card(card_name).config
    torch.manual_seed(0)
    model = build_model(cfg).train()
    stream = torch.tensor(list(data.read_bytes()), dtype=torch.long)
    length = cfg.max_positions
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - length - 1, (batch,), generator=gen).tolist()
        rows = torch.stack([stream[s : s + length + 1] for s in starts])
        logits = model(rows[:, :-1])["logits"]
        loss = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens_per_s": steps * batch * length / seconds}


def edgeformer_train(card: str, data: Path, out: Path, steps: int, batch: int, ranks: int) -> dict[str, Any]:
    """`edgeformer train` in a process of its own (under torchrun for ranks > 1)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--standalone"]
    command = [*(launcher if ranks > 1 else [sys.executable]), "-m", "edgeformer.cli", "train", card]
    command += ["--data", str(data), "--steps", str(steps), "--batch-size", str(batch), "--log-every", "1"]
    command += ["--dropout", "0", "--warmup", "1", "-o", str(out), "--force"]
    launched = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_step = None
    assert process.stderr is not None
    for line in process.stderr:
        if first_step is None and line.startswith("step 1/"):
            first_step = time.perf_counter() - launched
    report = json.loads(process.stdout.read() if process.stdout else "{}")
    if process.wait() != 0:
        raise SystemExit(f"edgeformer train failed: {' '.join(command)}")
    seconds = report["metrics"]["train_seconds"]
    length = resolve_card(card).config.max_positions
    return {"seconds": seconds, "tokens_per_s": steps * batch * length / seconds, "first_step_s": first_step}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", default="demo-decoder")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, help="JSON file for the figures")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = corpus(Path(tmp))
        plain = plain_loop(args.card, data, args.steps, args.batch_size, lr=1e-3)
        one = edgeformer_train(args.card, data, Path(tmp) / "one", args.steps, args.batch_size, ranks=1)
        two = edgeformer_train(args.card, data, Path(tmp) / "two", args.steps, args.batch_size, ranks=2)
    figures = {
        "card": args.card, "steps": args.steps, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "plain_loop": plain, "edgeformer_1_rank": one, "edgeformer_2_ranks": two,
        "edgeformer_vs_plain": one["tokens_per_s"] / plain["tokens_per_s"],
        "two_ranks_vs_one": two["tokens_per_s"] / one["tokens_per_s"],
    }  # fmt: skip
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
