"""The rows a quantization verdict judged, travelling with the bundle so ``check`` judges them again.

``quantize`` (and ``export`` of an int8 / int4 / fp16 target) measures its verdict on held-out
validation rows: a --validation file's, the stdlib docstrings' valid split, or random tokens, plus
a few rows at the bundle's longest length. Those rows are written into the bundle as
``verdict_rows.npz`` (``input_ids_<i>`` / ``attention_mask_<i>``, one pair per group of rows of one
length, in the order they were judged), listed with its sha256 in the manifest's files, and the
verdict names the file (``rows_file``). ``check`` reads them back (no pickles, bounded sizes: the
bundle is from a stranger), builds the same feeds with ``calibration.graph_feeds``, runs the
bundle's graphs and the torch source on them, and calls ``verdict.judge`` with the bundle's budget.

The reference differs by what is at hand: ``quantize`` has the fp32 graphs, ``check`` has the torch
source those graphs equal within 1e-4 of each output's scale. An encoder-decoder's decoder takes
its cross-attention cache from the float encoder: the fp32 encoder graph in ``quantize``, the
torch encoder in ``check``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from edgeformer.errors import BundleError
from edgeformer.quantize.calibration import Rows

ROWS_FILE = "verdict_rows.npz"
MAX_GROUPS = 8  # groups of rows of one length (quantize writes one or two)
MAX_TOKENS = 1 << 20  # rows x tokens over all groups (quantize's default is a few thousand)
MAX_BYTES = 16 << 20  # the file on disk


def language_model(manifest: dict[str, Any], graph: str) -> bool:
    """Whether the graph's logits predict the next input token (perplexity is measured on them)."""
    file = manifest["graphs"][graph]["file"]
    return file in ("model.onnx", "decoder.onnx") and manifest.get("family") != "encoder"


def write_rows(directory: Path, groups: list[Rows], log: Any = lambda _m: None) -> str:
    """``groups`` into ``directory/verdict_rows.npz``; the file name, or "" when they are more than
    a bundle may carry (then ``check`` trusts the recorded verdict, and says so)."""
    tokens = sum(g.ids.size for g in groups)
    if not groups or len(groups) > MAX_GROUPS or tokens > MAX_TOKENS:
        log(f"  verdict rows not stored in the bundle ({tokens:,} tokens, over {MAX_TOKENS:,}): check cannot re-judge")
        return ""
    arrays: dict[str, Any] = {}  # (savez's keywords: mypy would match them to allow_pickle)
    for i, g in enumerate(groups):
        arrays[f"input_ids_{i}"] = g.ids.astype(np.int32 if g.ids.max(initial=0) < 2**31 else np.int64)
        arrays[f"attention_mask_{i}"] = g.mask.astype(np.uint8)
    np.savez_compressed(directory / ROWS_FILE, **arrays)
    shapes = " + ".join(f"{g.ids.shape[0]}x{g.ids.shape[1]}" for g in groups)
    log(f"stored in the bundle: {ROWS_FILE} (the validation rows the verdict judged, {shapes} tokens)")
    return ROWS_FILE


def _header(data: Any, key: str, where: str) -> tuple[int, ...]:
    """Shape of array ``key`` of an open .npz, from its header, refused unless 2-D integers."""
    with data.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(member)
    if len(shape) != 2 or dtype.kind not in "iu" or dtype.itemsize > 8:
        raise BundleError(f"{where}: {key} must be a 2-D integer array, got {dtype} of shape {shape}")
    return tuple(int(n) for n in shape)


def _keys(files: list[str], where: str) -> int:
    groups = len(files) // 2
    want = [f"{k}_{i}" for i in range(groups) for k in ("input_ids", "attention_mask")]
    if not 1 <= groups <= MAX_GROUPS or sorted(files) != sorted(want):
        raise BundleError(
            f"{where}: holds {sorted(files)[:10]}; want input_ids_<i> and attention_mask_<i> pairs (1 to {MAX_GROUPS})"
        )
    return groups


def parse_rows(data: bytes, where: str, vocab: int, max_positions: int) -> list[Rows]:
    """The groups of rows in the bytes of a verdict_rows.npz: no pickles, sizes read from the
    headers and bounded before anything is decompressed, ids in the vocabulary, masks of 0 and 1."""
    groups = []
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            n = _keys(list(npz.files), where)
            shapes = {k: _header(npz, k, where) for k in npz.files}
            if sum(s[0] * s[1] for s in shapes.values()) > 2 * MAX_TOKENS:
                raise BundleError(f"{where}: more than {MAX_TOKENS:,} tokens; a bundle's verdict rows are fewer")
            for i in range(n):
                ids, mask = npz[f"input_ids_{i}"].astype(np.int64), npz[f"attention_mask_{i}"].astype(np.int64)
                groups.append(_checked(ids, mask, f"{where}: group {i}", vocab, max_positions))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{where}: not a readable .npz of integer arrays ({str(exc)[:200]})") from None
    return groups


def _checked(ids: np.ndarray, mask: np.ndarray, where: str, vocab: int, max_positions: int) -> Rows:
    if ids.shape != mask.shape or 0 in ids.shape or ids.shape[1] > max_positions:
        raise BundleError(
            f"{where}: input_ids {ids.shape} and attention_mask {mask.shape} must be equal, non-empty shapes "
            f"of at most {max_positions} tokens"
        )
    if ids.min() < 0 or ids.max() >= vocab or not np.isin(mask, (0, 1)).all() or not mask.any(axis=1).all():
        raise BundleError(
            f"{where}: input_ids must lie in [0, {vocab}) and attention_mask hold only 0 and 1, "
            "with at least one real token in each row"
        )
    return Rows(ids, mask, f"{where.rsplit(': ', 1)[0]} ({ids.shape[0]} rows of {ids.shape[1]})")


def read_rows(bundle: Path, manifest: dict[str, Any], rows_file: str) -> list[Rows]:
    """The verdict rows a manifest names, read once, checked against their sha256 in the manifest."""
    from edgeformer import safe_read

    digest = (manifest.get("files") or {}).get(rows_file)
    if rows_file != ROWS_FILE or not isinstance(digest, str):
        raise BundleError(
            f"{bundle}/manifest.json: the verdict's rows_file must be {ROWS_FILE!r}, listed with its sha256 "
            f"in files; got {rows_file!r:.60}"
        )
    data = safe_read.read_bytes(bundle / rows_file, what="verdict rows", error=BundleError, max_bytes=MAX_BYTES)
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{bundle}: {rows_file} does not match its sha256 in the manifest (changed or corrupted)")
    config = manifest.get("config") or {}
    sizes = config.get("vocab_size"), config.get("max_positions")
    vocab, longest = (v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None for v in sizes)
    if vocab is None or longest is None:
        raise BundleError(f"{bundle}/manifest.json: config.vocab_size and config.max_positions must be integers")
    return parse_rows(data, f"{bundle}/{rows_file}", vocab, longest)


class _TorchGraph:
    """A torch plan with the two methods ``calibration.graph_feeds`` calls on an encoder session."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan

    def get_outputs(self) -> list[Any]:
        return [SimpleNamespace(name=spec.name) for spec in self.plan.outputs]

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from edgeformer.export.graphs import run_torch

        out = run_torch(self.plan, feeds)
        return [out[n] for n in names]


def bounds(manifest: dict[str, Any]) -> dict[str, float]:
    """The bundle's budget as its verdict applied it: the target's budget (checked: a manifest is
    data), narrowed to the metrics applied when written (cosine only on random tokens)."""
    from edgeformer.budget import BUDGET_METRICS, budget_for, budget_problem

    given = (manifest.get("target") or {}).get("budget") or {}
    if not isinstance(given, dict):
        raise BundleError("manifest.json: target.budget must be an object of METRIC: NUMBER")
    for name, value in given.items():
        problem = f"{name!r:.40} is not one of {', '.join(BUDGET_METRICS)}" if name not in BUDGET_METRICS else None
        problem = problem or budget_problem(name, value)
        if problem:
            raise BundleError(f"manifest.json: target.budget: {problem}")
    budget = budget_for(str(manifest.get("precision", "fp32")), given)
    applied = (manifest.get("quantization") or {}).get("budget_applied")
    return {k: v for k, v in budget.items() if k in applied} if isinstance(applied, dict) else budget


def rejudge(
    source: Any,
    graphs: dict[str, Path],
    manifest: dict[str, Any],
    groups: list[Rows],
    recorded: Any,
    *,
    providers: tuple[str, ...] = ("cpu",),
    target_providers: tuple[str, ...] = (),
) -> Any:
    """The verdict measured again: the bundle's graphs (``graphs``: name -> verified copy) against
    the torch ``source`` on the rows ``groups``, fed as ``quantize`` fed them, judged by
    ``verdict.judge`` with the bundle's budget. ``recorded`` (the manifest's Verdict) lends its
    rows text and what was tried."""
    import torch

    from edgeformer.budget import measure
    from edgeformer.export.graphs import run_torch
    from edgeformer.quantize.calibration import graph_feeds
    from edgeformer.quantize.mixed import outputs_of
    from edgeformer.runtime.session import make_session
    from edgeformer.verdict import combine, judge, provider_note

    precision = str(manifest.get("precision", "fp32"))
    plans = {plan.name: plan for plan in source.plans}
    sessions = {name: make_session(path, providers, precision=precision) for name, path in graphs.items()}
    provider = provider_note(next(iter(sessions.values())).get_providers()[0], target_providers)
    encoder = _TorchGraph(plans["encoder"]) if "encoder" in plans and "decoder" in plans else None
    judged = bounds(manifest)
    verdicts = []
    with torch.no_grad():
        feeds: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in graphs}
        for rows in groups:
            for name, fs in graph_feeds(manifest, rows, encoder_session=encoder).items():
                feeds[name] += fs
        lengths = sorted({f["input_ids"].shape[1] for fs in feeds.values() for f in fs if "input_ids" in f})
        for name in graphs:
            want = [run_torch(plans[name], f) for f in feeds[name]]
            got = outputs_of(sessions[name], feeds[name])
            measured = measure(want, got, feeds[name], language_model=language_model(manifest, name))
            verdict = judge(measured, judged, precision=precision, rows=recorded.rows, lengths=lengths,
                            provider=provider, tried=recorded.tried)  # fmt: skip
            verdict.misses = [f"{name} {m}" for m in verdict.misses]
            verdicts.append(verdict)
    verdict = combine(verdicts, tried=recorded.tried)
    verdict.rows_file = recorded.rows_file
    unmeasured = [k for k in recorded.bounds if k in judged and k not in verdict.measured]
    if unmeasured:  # rows that measure nothing judge nothing: a miss, not a pass
        verdict.ok = False
        verdict.misses += [f"{k} was judged when written but cannot be measured on these rows" for k in unmeasured]
    return verdict
