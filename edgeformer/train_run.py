"""``edgeformer train``: which run a command line asks for, decided here rather than in the CLI.

``--resume DIR`` continues a checkpointed run; ``--data FILE...`` trains any card on the user's data
(``edgeformer.fit``); a demo card without ``--data`` re-runs its recipe on the standard library's
docstrings (``edgeformer.demo``), which takes ``--steps`` and ``--seed`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeformer.errors import CardError, UsageError

DEMO_OVERRIDES = {"steps", "seed"}


def run_training(
    card_name: str | None,
    out: Path | None,
    *,
    data: list[Path],
    valid: list[Path],
    init: Path | None,
    resume: Path | None,
    tokenizer: Path | None = None,
    overrides: dict[str, Any],
    force: bool,
    echo: Callable[[str], None],
) -> dict[str, Any] | None:
    """The result to print (None under torchrun on ranks other than 0)."""
    from edgeformer.zoo import resolve_card

    if resume is not None:
        from edgeformer.fit import resume_training

        return resume_training(resume, echo=echo)
    if card_name is None:
        raise UsageError("give a CARD (or --resume DIR)")
    card = resolve_card(card_name)
    out = out or Path(f"{card.name}-trained")
    if data:
        from edgeformer.fit import train_card

        return train_card(card, out, data=data, valid=valid, overrides=overrides, init=init, tokenizer=tokenizer,
                          force=force, echo=echo)  # fmt: skip
    if tokenizer is not None:
        raise CardError("--tokenizer needs --data (a demo recipe is byte-level)")
    return _demo(card, out, overrides, force, echo)


def _demo(card: Any, out: Path, overrides: dict[str, Any], force: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    from edgeformer.demo import write_trained

    if card.path is None or card.checkpoint is None or card.training.get("task") is None:
        raise CardError(
            f"card {card.name!r} has no demo recipe to re-run; give --data FILE (text, JSONL, CSV or TSV) to train it"
        )
    unsupported = sorted(set(overrides) - DEMO_OVERRIDES)
    if unsupported:
        flag = unsupported[0].replace("_", "-")
        raise CardError(f"--{flag} needs --data (a demo recipe takes --steps and --seed)")

    def log(step: int, loss: float, lr: float) -> None:
        echo(f"step {step + 1:>5}  loss {loss:.4f}  lr {lr:.2e}")

    steps, seed = overrides.get("steps"), overrides.get("seed")
    return write_trained(card, out, steps=steps, seed=seed, force=force, log=log)
