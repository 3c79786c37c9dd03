"""The budget metrics of a session against stored references, one batch run at a time, measured row by row.

``budget.measure`` takes every output at once; on a GPT-2-small-sized decoder a search judging
``outputs_of(session, feeds)`` held the logits of every calibration and verdict row (32 x 128 and
4 x 1024 positions of 50,257 floats: 2.5 GB) beside the references, and measured the 4 x 1024 batch
in float64 temporaries of 1.6 GB each. Here the session runs one feed at a time (its outputs are
dropped before the next run) and each feed is measured one batch row at a time: the metrics are
sums over positions (cosine rows, top-1 agreements, log-likelihoods), so they are the same numbers.
The run itself is not split: dynamic int8 scales its activations over the whole batch it is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edgeformer import budget as budgets

Outputs = dict[str, np.ndarray]
Feeds = dict[str, np.ndarray]


class _Rows(Sequence[Outputs]):
    """A sequence computed on demand: row ``i`` from ``get(i)``; iterated in order by ``budget.measure``."""

    def __init__(self, n: int, get: Any) -> None:
        self.n, self.get = n, get

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.get(j) for j in range(*i.indices(self.n))]
        return self.get(i)

    def __iter__(self) -> Iterator[Outputs]:
        return (self.get(i) for i in range(self.n))


def _splittable(feed: Outputs, outputs: Outputs) -> int:
    """The feed's batch size when every array of it and of its outputs is batch-first, else 1 (not split)."""
    ids = feed.get("input_ids")
    batch = int(ids.shape[0]) if ids is not None and ids.ndim == 2 else 0
    arrays = [*feed.values(), *outputs.values()]
    return batch if batch > 1 and all(a.ndim >= 1 and a.shape[0] == batch for a in arrays) else 1


def _row(d: Outputs, r: int, n: int) -> Outputs:
    return d if n == 1 else {k: v[r : r + 1] for k, v in d.items()}


def measure_session(
    session: Any, reference: Sequence[Outputs], feeds: Sequence[Feeds], *, language_model: bool = False
) -> dict[str, float]:
    """``budget.measure(reference, outputs_of(session, feeds), feeds)``, holding one feed's outputs at a time."""
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    rows: list[tuple[int, int, int]] = []  # (feed, row, rows of that feed)
    for i, (feed, ref) in enumerate(zip(feeds, reference, strict=True)):
        n = _splittable(feed, ref)
        rows += [(i, r, n) for r in range(n)]
    current: dict[int, Outputs] = {}

    def got(j: int) -> Outputs:
        i, r, n = rows[j]
        if i not in current:
            current.clear()  # the previous feed's outputs go before the next run
            values = session.run(names, {k: v for k, v in feeds[i].items() if k in wanted})
            current[i] = dict(zip(names, values, strict=True))
        return _row(current[i], r, n)

    return budgets.measure(
        _Rows(len(rows), lambda j: _row(reference[rows[j][0]], rows[j][1], rows[j][2])),
        _Rows(len(rows), got),
        _Rows(len(rows), lambda j: _row(feeds[rows[j][0]], rows[j][1], rows[j][2])),
        language_model=language_model,
    )
