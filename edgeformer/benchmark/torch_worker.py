"""The torch eager variant of ``edgeformer bench``: the source model, measured like a bundle.

A job of the worker process (``worker``: ``{"kind": "torch", ...}``). The model is rebuilt from a
bundle's manifest (its card, checkpoint verified by sha256, or seed) or from a card; the cases,
inputs and report are those of the device runner (same settings, same per-case random inputs,
same schema), so runs compare row by row. Forward cases call what the
bundle's first graph computes (encoder: hidden states and head; decoder: a prefill with its KV
cache; encoder-decoder: the encoder and the cross-attention keys/values). Generation is the greedy
KV-cache loop of ``edgeformer.parity.torch_greedy``, timed per token (loop ``torch``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeformer.benchmark import stats
from edgeformer.benchmark.loops import forward_ids, prompt_ids
from edgeformer.benchmark.options import FORWARD_GRAPH, Limits, Settings
from edgeformer.benchmark.settings import resolve
from edgeformer.benchmark.timing import Progress, clock_runs, time_calls
from edgeformer.errors import EdgeformerError
from edgeformer.nn.models import as_encoder_decoder


def rebuild(bundle: Path | None, card: str | None, seed: int) -> Any:
    """The torch source: from a bundle's manifest, or from a card (random weights from ``seed``
    when it has no checkpoint)."""
    from edgeformer.export.manifest_read import read_manifest
    from edgeformer.export.rebuild import rebuild_source
    from edgeformer.export.source import source_from_card
    from edgeformer.zoo import resolve_card

    if bundle is not None:
        return rebuild_source(read_manifest(bundle, verify=False))
    return source_from_card(resolve_card(card or ""), seed=seed)


def forward_fn(model: torch.nn.Module, family: str, ids: torch.Tensor) -> Callable[[], Any]:
    mask = torch.ones_like(ids)
    if family == "encoder-decoder":
        seq2seq = as_encoder_decoder(model)
        return lambda: seq2seq.cross_key_values(seq2seq.encode(ids, mask))
    return lambda: model(ids, mask)


def torch_generate(
    model: torch.nn.Module, family: str, ids_np: np.ndarray, new_tokens: int, start_token: int
) -> tuple[np.ndarray, list[float]]:
    """Greedy tokens (B, new_tokens) through the model's KV cache, and each token's time (seconds
    since the call); no forward pass after the last token."""
    start = time.perf_counter_ns()
    ids = torch.from_numpy(ids_np)
    tokens, times = [], []
    if family == "encoder-decoder":
        seq2seq = as_encoder_decoder(model)
        cross = seq2seq.cross_key_values(seq2seq.encode(ids))
        nxt = torch.full((ids.shape[0], 1), start_token, dtype=torch.long)
        past = None
        for _ in range(new_tokens):
            out = seq2seq.decode(nxt, cross, past_key_values=past)
            nxt, past = out["logits"][:, -1:].argmax(-1), out["present_key_values"]
            tokens.append(nxt)
            times.append((time.perf_counter_ns() - start) / 1e9)
    else:
        out = model(ids)
        for step in range(new_tokens):
            nxt = out["logits"][:, -1:].argmax(-1)
            tokens.append(nxt)
            times.append((time.perf_counter_ns() - start) / 1e9)
            if step < new_tokens - 1:
                out = model(nxt, past_key_values=out["present_key_values"])
    return torch.cat(tokens, dim=1).numpy(), times


def run_torch(
    bundle: Path | None,
    card: str | None,
    settings: Settings,
    *,
    weights_seed: int = 0,
    label: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One run of the torch eager source (variant ``torch``), in the schema of the device runner."""
    progress = progress or Progress(enabled=False)
    rss_start = stats.current_rss_bytes()
    t0 = time.perf_counter()
    source = rebuild(bundle, card, weights_seed)
    create_s = time.perf_counter() - t0
    if source.config is None:
        raise EdgeformerError("torch eager runs need a model card's family; a user's own module is not supported")
    cfg = source.config.to_dict()
    family, model = source.config.family, source.model.eval()
    settings = resolve(settings, family, cfg)
    start_token, vocab = max(source.config.bos_token_id, 0), int(cfg["vocab_size"])
    cases: list[dict[str, Any]] = []
    with torch.inference_mode():
        for threads in settings.threads or ():
            torch.set_num_threads(threads)
            cases += _forward_cases(model, family, settings, threads, vocab, progress)
            for batch in settings.batches if settings.generate else ():
                for prompt in settings.prompts or ():
                    for new in settings.new_tokens or ():
                        case = (batch, prompt, new)
                        cases.append(
                            _generation_case(model, family, settings, threads, case, start_token, vocab, progress)
                        )
    params = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return {
        "label": label or stats.machine()["hostname"],
        "variant": "torch",
        "machine": stats.machine(),
        "versions": stats.versions(torch=torch.__version__, torch_threads=str(torch.get_num_threads())),
        "settings": asdict(settings) | {"limits": asdict(Limits(enabled=False))},
        "model": _model_info(source, bundle, cfg, params),
        "session": {"verify_s": None, "threads": list(settings.threads or ()), "create_s": [create_s]},
        "memory": {"rss_before_load_bytes": rss_start, "peak_rss_bytes": stats.peak_rss_bytes()},
        "limits": {},
        "cases": cases,
    }


def _model_info(source: Any, bundle: Path | None, cfg: dict[str, Any], params: int) -> dict[str, Any]:
    return {
        "name": source.name,
        "path": str(bundle.resolve()) if bundle else None,
        "family": source.config.family,
        "precision": "fp32",
        "target": None,
        "runtime": "torch eager",
        "size_bytes": params,
        "graph_bytes": {},
        "weight_bytes": params,
        "config": {k: cfg.get(k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions")},
    }


def _forward_cases(
    model: torch.nn.Module, family: str, settings: Settings, threads: int, vocab: int, progress: Progress
) -> list[dict[str, Any]]:
    graph, cases = FORWARD_GRAPH[family], []
    for batch in settings.batches if settings.forward else ():
        for seq in settings.sequences or ():
            ids = torch.from_numpy(forward_ids(settings.seed, vocab, batch, seq))
            fn = forward_fn(model, family, ids)
            progress.case(f"torch {threads} thr {graph} batch {batch} seq {seq}", settings.iterations)
            samples = time_calls(fn, settings.warmup, settings.iterations, settings.time_budget, progress)
            progress.done()
            case = {"kind": "forward", "graph": graph, "threads": threads, "batch": batch, "sequence": seq}
            cases.append({**case, "samples_s": samples, "summary": stats.forward_summary(samples, batch, seq)})
    return cases


def _generation_case(
    model: torch.nn.Module,
    family: str,
    settings: Settings,
    threads: int,
    case_size: tuple[int, int, int],
    start_token: int,
    vocab_size: int,
    progress: Progress,
) -> dict[str, Any]:
    batch, prompt, new = case_size
    ids = prompt_ids(settings.seed, vocab_size, batch, prompt)
    progress.case(f"torch {threads} thr generate batch {batch} prompt {prompt} + {new} tokens", settings.gen_runs)
    for _ in range(settings.gen_warmup):
        torch_generate(model, family, ids, new, start_token)
    runs, tokens = [], None
    gc.collect()
    for _ in clock_runs(settings.gen_runs, settings.time_budget):
        got, times = torch_generate(model, family, ids, new, start_token)
        runs.append({"token_s": times})
        tokens = tokens if tokens is not None else got.tolist()
        progress.tick()
    progress.done()
    case = {"kind": "generate", "loop": "torch", "threads": threads, "batch": batch, "prompt": prompt}
    case.update({"new_tokens": new, "runs": runs, "tokens": tokens})
    return {**case, "summary": stats.generation_summary(runs, batch)}
