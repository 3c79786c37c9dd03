"""The sliding-window KV cache of local-attention decoders, in numpy. No torch.

A local layer's query at position p sees the keys at p - window + 1 .. p and the global tokens (each
row's first ``global_tokens`` real tokens). So between steps the runtime keeps, per layer, only

    [ G global slots | the last window - 1 positions ]       and the attention mask of the same slots

and memory and per-token time stay flat however long generation runs. The graph is unchanged (the same
``past_key_values`` / ``attention_mask`` / ``position_ids`` inputs): its band is a distance between
cache slots, which trimming the oldest slots keeps; its global tokens are each row's first real tokens
in the mask, which the slots (in front, mask 1 for a global token that left the window, 0 otherwise)
keep; and positions come from ``position_ids``, counted by the caller over every token generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Named(Protocol):
    """A graph input as the manifest (runtime.bundle.Spec) or an export plan describes it."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[str | int, ...]: ...


@dataclass(frozen=True)
class SlidingWindow:
    """How to trim the caches named ``names``: to ``window - 1`` recent positions plus ``global_tokens`` slots."""

    window: int
    global_tokens: int
    names: tuple[str, ...]  # the growing self-attention cache inputs (past_key_values.{i}.key / .value)

    @property
    def keep(self) -> int:
        """Recent positions kept: the query's own key comes with the step, so window - 1."""
        return self.window - 1

    @property
    def limit(self) -> int:
        """The most cache positions a row holds between steps."""
        return self.global_tokens + self.keep


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def sliding_window(entry: dict[str, Any] | None, specs: Sequence[Named]) -> SlidingWindow | None:
    """The window a graph's manifest entry (``sliding_window``) allows, or None (keep the whole cache).

    One attention mask serves every layer, so the caches are trimmed only when every growing
    self-attention cache (``past_sequence`` long) belongs to a listed layer."""
    if not entry:
        return None
    names = tuple(s.name for s in specs if s.name.startswith("past_key_values.") and s.shape[2] == "past_sequence")
    layers = set(entry.get("layers", ()))
    if not names or any(_layer(n) not in layers for n in names):
        return None
    return SlidingWindow(int(entry["window"]), int(entry.get("global_tokens", 0)), names)


def _global_slots(mask: np.ndarray, g: int, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, g) cache slots of each row's global tokens before ``cut``, and (B, g) whether each is one."""
    rank = np.cumsum(mask, axis=1)  # (B, L): 1 for a row's first real token
    is_global = (mask[:, :cut] > 0) & (rank[:, :cut] <= g)  # (B, cut)
    order = np.argsort(~is_global, axis=1, kind="stable")[:, :g]  # global slots first, in order
    return order, np.take_along_axis(is_global, order, axis=1)


def trim(feeds: dict[str, np.ndarray], window: SlidingWindow) -> None:
    """Trim the caches in ``feeds`` (B, H, L, D) and their columns of ``attention_mask`` (B, L + T), in place,
    to the global slots and the last window - 1 positions. A cache no longer than that is left as it is."""
    length = feeds[window.names[0]].shape[2]
    if length <= window.limit:
        return
    mask = feeds["attention_mask"]
    cut = length - window.keep
    columns = [mask[:, cut:]]  # the recent cache columns and the new tokens'
    if window.global_tokens:
        order, valid = _global_slots(mask[:, :length], window.global_tokens, cut)
        columns.insert(0, valid.astype(mask.dtype))
    for name in window.names:
        cache = feeds[name]
        parts = [cache[:, :, cut:]]  # (B, H, keep, D)
        if window.global_tokens:
            parts.insert(0, np.take_along_axis(cache, order[:, None, :, None], axis=2))  # (B, H, G, D)
        feeds[name] = np.concatenate(parts, axis=2)
    feeds["attention_mask"] = np.concatenate(columns, axis=1)
