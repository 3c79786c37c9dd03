"""The device runner: latency and generation speed of a bundle, with onnxruntime and numpy only.

What one run measures, per thread count (one session each):

- opening: sha256 check of the bundle's files, session creation time, resident memory, size on disk;
- forward cases (batch x sequence): one call of the bundle's first graph (``model``, or ``encoder``)
  on random token ids, after warm-up: every call's latency;
- generation cases (batch x prompt x new tokens; decoders and encoder-decoders): the runtime's own
  ``generate()`` and a bare greedy loop over the same session (``loops``), interleaved run by run,
  each token's time since the call: time to first token, per-token latency, tokens/s, and whether
  both loops chose the same tokens;
- the machine's limits at the same thread count (``limits``): fp32 and int8 MatMul peak and the
  bandwidth of reading weights, so tokens/s is also reported as a fraction of bandwidth / weight bytes.

Peak RSS is read before the limits run (their matrices would dominate it). A run is a dict of the
report's schema (``report``): every raw sample, summaries, the machine, versions and settings. The
command line is ``device`` (``python -m edgeformer.runtime.bench``).
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeformer.benchmark import stats
from edgeformer.benchmark.limits import measure_limits
from edgeformer.benchmark.loops import bare_generate, forward_feeds, prompt_ids, runtime_generate
from edgeformer.benchmark.options import FORWARD_GRAPH, STEP_GRAPH, Limits, Settings
from edgeformer.benchmark.settings import positive, resolve
from edgeformer.benchmark.timing import Progress, clock_runs, time_calls
from edgeformer.runtime.bundle import Bundle, read_bundle
from edgeformer.runtime.errors import BundleFormatError
from edgeformer.runtime.loader import load
from edgeformer.runtime.models import DecoderModel, RuntimeModel, Seq2SeqModel


def model_info(bundle: Bundle) -> dict[str, Any]:
    """Size on disk of the bundle and of each graph (with its external data), and the bytes of
    weights read per generated token by the graph that runs once per token: the manifest's
    ``weights_read_bytes`` (tables only gathered from count as rows, float16-stored weights at the
    float32 they are widened to), or for a bundle written before that field, the graph's size."""
    files = {name: (bundle.path / name).stat().st_size for name in bundle.manifest.get("files", {})}
    graphs = {}
    for name, graph in bundle.graphs.items():
        graphs[name] = sum(size for f, size in files.items() if f in (graph.path.name, graph.path.name + ".data"))
    step = STEP_GRAPH.get(bundle.family) or FORWARD_GRAPH.get(bundle.family, "")
    entry = bundle.manifest.get("graphs", {}).get(step) or {}
    read = entry.get("weights_read_bytes")
    measured = isinstance(read, int) and not isinstance(read, bool) and read > 0
    return {
        "name": bundle.name,
        "path": str(bundle.path.resolve()),
        "family": bundle.family,
        "precision": bundle.manifest.get("precision"),
        "target": (bundle.manifest.get("target") or {}).get("name"),
        "runtime": "onnxruntime",
        "size_bytes": sum(files.values()),
        "graph_bytes": graphs,
        "weight_bytes": read if measured else graphs.get(step),
        "weight_bytes_from": "manifest weights_read_bytes" if measured else "graph file size",
        "config": {k: bundle.config.get(k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions")},
    }


# ----- one run ------------------------------------------------------------------------------------------


def _forward_cases(model: RuntimeModel, threads: int, settings: Settings, progress: Progress) -> list[dict[str, Any]]:
    graph_name = FORWARD_GRAPH.get(model.family, next(iter(model.bundle.graphs)))
    graph, session = model.bundle.graphs[graph_name], model.sessions[graph_name]
    cases = []
    for batch in settings.batches:
        for seq in settings.sequences or ():
            feeds = forward_feeds(graph, model.config, batch, seq, settings.seed)
            progress.case(f"{threads} thr {graph_name} batch {batch} seq {seq}", settings.iterations)
            samples = time_calls(
                functools.partial(session.run, None, feeds),
                settings.warmup,
                settings.iterations,
                settings.time_budget,
                progress,
            )
            progress.done()
            case = {"kind": "forward", "graph": graph_name, "threads": threads, "batch": batch, "sequence": seq}
            cases.append({**case, "samples_s": samples, "summary": stats.forward_summary(samples, batch, seq)})
    return cases


def _generation_cases(
    model: RuntimeModel, threads: int, settings: Settings, progress: Progress
) -> list[dict[str, Any]]:
    loops = {"runtime": runtime_generate, "bare": bare_generate}
    cases = []
    for batch in settings.batches:
        for prompt in settings.prompts or ():
            for new in settings.new_tokens or ():
                ids = prompt_ids(settings.seed, model.vocab_size, batch, prompt)
                what = f"{threads} thr generate batch {batch} prompt {prompt} + {new} tokens"
                progress.case(what, settings.gen_runs * len(settings.loops))
                for _ in range(settings.gen_warmup):
                    for loop in settings.loops:
                        loops[loop](model, ids, new)
                runs: dict[str, list[dict[str, Any]]] = {loop: [] for loop in settings.loops}
                tokens: dict[str, list] = {}
                gc.collect()
                for _ in clock_runs(settings.gen_runs, settings.time_budget):
                    for loop in settings.loops:  # interleaved: both loops share the machine's drift
                        got, times = loops[loop](model, ids, new)
                        runs[loop].append({"token_s": times})
                        tokens.setdefault(loop, got.tolist())
                        progress.tick()
                progress.done()
                agree = len({str(t) for t in tokens.values()}) == 1
                for loop in settings.loops:
                    case = {"kind": "generate", "loop": loop, "threads": threads, "batch": batch}
                    case.update({"prompt": prompt, "new_tokens": new, "runs": runs[loop], "tokens": tokens[loop]})
                    case["loops_agree"] = agree
                    cases.append({**case, "summary": stats.generation_summary(runs[loop], batch)})
    return cases


def run_bundle(
    bundle_dir: str | Path,
    settings: Settings | None = None,
    *,
    limits: Limits | None = None,
    label: str | None = None,
    variant: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure one bundle: returns one run (see ``report``) with every raw sample."""
    progress = progress or Progress(enabled=False)
    limits = limits or Limits()
    rss_start = stats.current_rss_bytes()
    t0 = time.perf_counter()
    bundle = read_bundle(bundle_dir, verify=True)
    verify_s = time.perf_counter() - t0
    if bundle.family != "custom" and not bundle.config:
        raise BundleFormatError(f"{bundle.path}: the manifest has no config to size the inputs from")
    settings = resolve(settings or Settings(), bundle.family, bundle.config)
    cases: list[dict[str, Any]] = []
    session: dict[str, Any] = {"verify_s": verify_s, "threads": [], "create_s": [], "rss_after_create_bytes": []}
    for threads in settings.threads or ():
        progress.note(f"opening {bundle.path.name} with {threads} threads")
        t0 = time.perf_counter()
        # strict: a provider that is missing or fails is an error, not a silent CPU run; verified
        # again, as an app's load is: the sessions run the bytes that were hashed (create_s includes it)
        model = load(bundle.path, settings.providers, strict=True, threads=threads, spinning=settings.spinning)
        session["create_s"].append(time.perf_counter() - t0)
        session["threads"].append(threads)
        session["rss_after_create_bytes"].append(stats.current_rss_bytes())
        session["providers"] = model.providers
        if settings.forward:
            cases += _forward_cases(model, threads, settings, progress)
        if settings.generate and isinstance(model, DecoderModel | Seq2SeqModel):
            cases += _generation_cases(model, threads, settings, progress)
        del model
        gc.collect()
    memory = {"rss_before_load_bytes": rss_start, "peak_rss_bytes": stats.peak_rss_bytes()}
    found = _limits(settings.threads or (), limits, settings.spinning, progress) if limits.enabled else {}
    return {
        "label": label or stats.machine()["hostname"],
        "variant": variant or bundle.path.resolve().name,
        "machine": stats.machine(),
        "versions": stats.versions(),
        "settings": asdict(settings) | {"limits": asdict(limits)},
        "model": model_info(bundle),
        "session": session,
        "memory": memory,
        "limits": found,
        "cases": cases,
    }


def limits_run(
    threads: Sequence[int],
    limits: Limits,
    *,
    spinning: bool = True,
    label: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """A run holding only the machine's limits (variant ``limits``)."""
    progress = progress or Progress(enabled=False)
    positive("--threads", threads)
    found = _limits(threads, limits, spinning, progress)
    return {
        "label": label or stats.machine()["hostname"],
        "variant": "limits",
        "machine": stats.machine(),
        "versions": stats.versions(),
        "settings": {"threads": list(threads), "spinning": spinning, "limits": asdict(limits)},
        "model": None,
        "session": None,
        "memory": None,
        "limits": found,
        "cases": [],
    }


def _limits(threads: Sequence[int], limits: Limits, spinning: bool, progress: Progress) -> dict[str, Any]:
    return {
        str(t): measure_limits(
            t, matmul_size=limits.matmul_size, bandwidth_mb=limits.bandwidth_mb, spinning=spinning, log=progress.note
        )
        for t in threads
    }
