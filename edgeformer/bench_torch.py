"""The torch eager variant of ``edgeformer bench``: the source model, measured like a bundle.

    python -m edgeformer.bench_torch (--bundle DIR | --card CARD [--weights-seed S]) [settings] --json OUT

The model is rebuilt from a bundle's manifest (its card, checkpoint verified by sha256, or seed) or
from a card; the cases, inputs and report are those of ``edgeformer.runtime.bench`` (same options,
same per-case random inputs, same schema), so runs compare row by row. Forward cases call what the
bundle's first graph computes (encoder: hidden states and head; decoder: a prefill with its KV
cache; encoder-decoder: the encoder and the cross-attention keys/values). Generation is the greedy
KV-cache loop of ``edgeformer.parity.torch_greedy``, timed per token (loop ``torch``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeformer.errors import EdgeformerError
from edgeformer.runtime import bench
from edgeformer.runtime import bench_report as report_mod


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
        return lambda: model.cross_key_values(model.encode(ids, mask))  # type: ignore[operator]
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
        cross = model.cross_key_values(model.encode(ids))  # type: ignore[operator]
        nxt = torch.full((ids.shape[0], 1), start_token, dtype=torch.long)
        past = None
        for _ in range(new_tokens):
            out = model.decode(nxt, cross, past_key_values=past)  # type: ignore[operator]
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
    settings: bench.Settings,
    *,
    weights_seed: int = 0,
    label: str | None = None,
    progress: bench.Progress | None = None,
) -> dict[str, Any]:
    """One run of the torch eager source (variant ``torch``), in the schema of the device runner."""
    progress = progress or bench.Progress(enabled=False)
    rss_start = report_mod.current_rss_bytes()
    t0 = time.perf_counter()
    source = rebuild(bundle, card, weights_seed)
    create_s = time.perf_counter() - t0
    if source.config is None:
        raise EdgeformerError("torch eager runs need a model card's family; a user's own module is not supported")
    cfg = source.config.to_dict()
    family, model = source.config.family, source.model.eval()
    settings = bench.resolve(settings, family, cfg)
    graph = bench.FORWARD_GRAPH[family]
    start_token, vocab = max(source.config.bos_token_id, 0), int(cfg["vocab_size"])
    cases: list[dict[str, Any]] = []
    with torch.inference_mode():
        for threads in settings.threads or ():
            torch.set_num_threads(threads)
            for batch in settings.batches if settings.forward else ():
                for seq in settings.sequences or ():
                    ids = torch.from_numpy(bench.forward_ids(settings.seed, vocab, batch, seq))
                    fn = forward_fn(model, family, ids)
                    progress.case(f"torch {threads} thr {graph} batch {batch} seq {seq}", settings.iterations)
                    samples = bench.time_calls(fn, settings.warmup, settings.iterations, settings.time_budget, progress)
                    progress.done()
                    case = {"kind": "forward", "graph": graph, "threads": threads, "batch": batch, "sequence": seq}
                    summary = report_mod.forward_summary(samples, batch, seq)
                    cases.append({**case, "samples_s": samples, "summary": summary})
            for batch in settings.batches if settings.generate else ():
                for prompt in settings.prompts or ():
                    for new in settings.new_tokens or ():
                        cases.append(
                            _generation_case(
                                model, family, settings, threads, batch, prompt, new, start_token, vocab, progress
                            )
                        )
    params = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return {
        "label": label or report_mod.machine()["hostname"],
        "variant": "torch",
        "machine": report_mod.machine(),
        "versions": report_mod.versions(torch=torch.__version__, torch_threads=str(torch.get_num_threads())),
        "settings": asdict(settings) | {"limits": asdict(bench.Limits(enabled=False))},
        "model": {
            "name": source.name,
            "path": str(bundle.resolve()) if bundle else None,
            "family": family,
            "precision": "fp32",
            "target": None,
            "runtime": "torch eager",
            "size_bytes": params,
            "graph_bytes": {},
            "weight_bytes": params,
            "config": {k: cfg.get(k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions")},
        },
        "session": {"verify_s": None, "threads": list(settings.threads or ()), "create_s": [create_s]},
        "memory": {"rss_before_load_bytes": rss_start, "peak_rss_bytes": report_mod.peak_rss_bytes()},
        "limits": {},
        "cases": cases,
    }


def _generation_case(
    model: torch.nn.Module,
    family: str,
    settings: bench.Settings,
    threads: int,
    batch: int,
    prompt: int,
    new: int,
    start_token: int,
    vocab_size: int,
    progress: bench.Progress,
) -> dict[str, Any]:
    ids = bench.prompt_ids(settings.seed, vocab_size, batch, prompt)
    progress.case(f"torch {threads} thr generate batch {batch} prompt {prompt} + {new} tokens", settings.gen_runs)
    for _ in range(settings.gen_warmup):
        torch_generate(model, family, ids, new, start_token)
    runs, tokens = [], None
    gc.collect()
    for _ in bench._clock_runs(settings.gen_runs, settings.time_budget):
        got, times = torch_generate(model, family, ids, new, start_token)
        runs.append({"token_s": times})
        tokens = tokens if tokens is not None else got.tolist()
        progress.tick()
    progress.done()
    case = {"kind": "generate", "loop": "torch", "threads": threads, "batch": batch, "prompt": prompt}
    case.update({"new_tokens": new, "runs": runs, "tokens": tokens})
    return {**case, "summary": report_mod.generation_summary(runs, batch)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeformer.bench_torch", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="rebuild the source from this bundle's manifest")
    source.add_argument("--card", help="a model card name or .toml")
    parser.add_argument("--weights-seed", type=int, default=0, help="seed of random weights (cards without one)")
    bench.add_settings_options(parser)
    bench.add_output_options(parser)
    args = parser.parse_args(argv)
    try:
        run = run_torch(
            args.bundle,
            args.card,
            bench.settings_from_args(args),
            weights_seed=args.weights_seed,
            label=args.label,
            progress=bench.Progress(enabled=not args.quiet, prefix="bench torch"),
        )
        report = report_mod.new_report([run])
        report_mod.write_outputs(report, json_path=args.json, csv_path=args.csv, plot_path=args.plot)
        if args.json is None:
            print(report_mod.table(report))
    except EdgeformerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
