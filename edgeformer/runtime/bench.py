"""The device runner: latency and generation speed of a bundle, with onnxruntime and numpy only.

    python -m edgeformer.runtime.bench BUNDLE [--threads 1,2] [--batch 1,4] [--sequence 8,32,128]
        [--prompt 32] [--new-tokens 128] [--iterations 20 | --time-budget 10] [--json F] [--csv F] [--plot F.png]
    python -m edgeformer.runtime.bench limits [--threads 2] [--json F]
    python -m edgeformer.runtime.bench merge A.json B.json ... [--baseline SERIES] [--json F] [--csv F] [--plot F.png]

What one run measures, per thread count (one session each):

- opening: sha256 check of the bundle's files, session creation time, resident memory, size on disk;
- forward cases (batch x sequence): one call of the bundle's first graph (``model``, or ``encoder``)
  on random token ids, after warm-up: every call's latency;
- generation cases (batch x prompt x new tokens; decoders and encoder-decoders): the runtime's own
  ``generate()`` and a bare greedy loop over the same session (past/present fed straight back),
  interleaved run by run, each token's time since the call: time to first token, per-token latency,
  tokens/s, and whether both loops chose the same tokens;
- the machine's limits at the same thread count (``bench_limits``): fp32 and int8 MatMul peak and the
  bandwidth of reading weights, so tokens/s is also reported as a fraction of bandwidth / weight bytes.

Peak RSS is read before the limits run (their matrices would dominate it). Results are a report
(``bench_report``): every raw sample, summaries, the machine, versions and settings.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnxruntime as ort

from edgeformer.errors import EdgeformerError
from edgeformer.runtime import bench_report as report_mod
from edgeformer.runtime.bench_limits import measure_limits
from edgeformer.runtime.bundle import Bundle, Graph, read_bundle
from edgeformer.runtime.errors import BundleFormatError, OptionError
from edgeformer.runtime.loader import load
from edgeformer.runtime.models import DecoderModel, RuntimeModel, Seq2SeqModel

LOOPS = ("runtime", "bare")
DEFAULT_SEQUENCES = (8, 32, 128)
DEFAULT_PROMPT, DEFAULT_NEW_TOKENS = 32, 128
FORWARD_GRAPH = {"encoder": "model", "decoder": "model", "encoder-decoder": "encoder"}
STEP_GRAPH = {"decoder": "model", "encoder-decoder": "decoder"}  # the graph that runs once per new token


# ----- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What to measure. ``None`` sweeps take defaults that fit the model (see ``resolve``)."""

    threads: tuple[int, ...] | None = None  # None: the physical cores this process may use
    batches: tuple[int, ...] = (1,)
    sequences: tuple[int, ...] | None = None  # forward cases; None: 8, 32, 128 up to max_positions
    prompts: tuple[int, ...] | None = None  # generation; None: 32 (a quarter of max_positions if less)
    new_tokens: tuple[int, ...] | None = None  # None: 128, or what fits after the prompt
    warmup: int = 3  # forward calls before timing
    iterations: int | None = 20  # timed forward calls per case (None: until the time budget)
    time_budget: float | None = None  # seconds per case; stops a case early
    gen_warmup: int = 1  # generation runs (per loop) before timing
    gen_runs: int = 3  # timed generation runs per loop and case
    loops: tuple[str, ...] = LOOPS
    forward: bool = True
    generate: bool = True
    spinning: bool = True
    providers: tuple[str, ...] = ("cpu",)  # execution providers of the bundle's sessions (limits: always CPU)
    seed: int = 0


@dataclass(frozen=True)
class Limits:
    """The limits measurement: off, or its sizes."""

    enabled: bool = True
    matmul_size: int = 1024
    bandwidth_mb: int = 256


COUNT_LIMIT = 1 << 20  # any count of a sweep (threads are bounded by the session, sequences by the model)
BATCH_LIMIT = 4096  # a batch of random inputs is allocated whole


def _positive(name: str, values: Sequence[int] | None, minimum: int = 1, maximum: int = COUNT_LIMIT) -> None:
    if values is None:
        return
    if len(values) == 0:
        raise OptionError(f"{name} needs at least one value")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not minimum <= v <= maximum:
            raise OptionError(f"{name} values must be integers from {minimum} to {maximum:,}, got {v!r:.40}")


def resolve(settings: Settings, family: str, config: dict[str, Any]) -> Settings:
    """Concrete sweeps for a model of ``family`` and ``config`` (max_positions): defaults filled in
    to fit, and every value checked (a sequence, prompt or prompt + new tokens longer than the
    model takes is an OptionError naming the limit)."""
    for name, option in (("threads", "--threads"), ("sequences", "--sequence")):
        _positive(option, getattr(settings, name))
    _positive("--batch", settings.batches, maximum=BATCH_LIMIT)
    for name, option in (("prompts", "--prompt"), ("new_tokens", "--new-tokens")):  # () once resolved: none
        _positive(option, getattr(settings, name) or None)
    _positive("--warmup", [settings.warmup], 0)
    _positive("--gen-warmup", [settings.gen_warmup], 0)
    _positive("--gen-runs", [settings.gen_runs])
    if settings.iterations is not None:
        _positive("--iterations", [settings.iterations])
    elif settings.time_budget is None:
        raise OptionError("give a number of iterations, a time budget, or both")
    if settings.time_budget is not None and not settings.time_budget > 0:
        raise OptionError(f"--time-budget must be a positive number of seconds, got {settings.time_budget!r}")
    bad = [loop for loop in settings.loops if loop not in LOOPS]
    if bad or not settings.loops:
        raise OptionError(f"--loop takes {' and/or '.join(LOOPS)}, got {','.join(settings.loops) or 'nothing'}")
    max_pos = config.get("max_positions")
    if not isinstance(max_pos, int) or max_pos < 1:
        max_pos = None
    out = settings
    if settings.threads is None:
        out = replace(out, threads=(report_mod.physical_cores(),))
    if settings.sequences is None:
        fit = tuple(s for s in DEFAULT_SEQUENCES if max_pos is None or s <= max_pos)
        out = replace(out, sequences=fit or ((max_pos,) if max_pos is not None else ()))
    elif max_pos is not None and max(settings.sequences) > max_pos:
        raise OptionError(f"--sequence {max(settings.sequences)} is longer than the model's max_positions {max_pos}")
    generates = family in STEP_GRAPH
    if not generates:
        if settings.prompts or settings.new_tokens:
            raise OptionError(f"a {family} bundle does not generate; leave out --prompt and --new-tokens")
        return replace(out, generate=False, prompts=(), new_tokens=())
    if not settings.generate:
        return replace(out, prompts=(), new_tokens=())
    prompts = settings.prompts
    if prompts is None:
        prompts = (DEFAULT_PROMPT if max_pos is None or max_pos > DEFAULT_PROMPT else max(1, max_pos // 4),)
    if max_pos is not None and max(prompts) > max_pos - (family == "decoder"):
        raise OptionError(f"--prompt {max(prompts)} leaves no room in the model's max_positions {max_pos}")
    new = settings.new_tokens
    room = None if max_pos is None else (max_pos - max(prompts) if family == "decoder" else max_pos)
    if new is None:
        new = (DEFAULT_NEW_TOKENS if room is None else min(DEFAULT_NEW_TOKENS, room),)
    elif room is not None and max(new) > room:
        what = f"a {max(prompts)}-token prompt plus " if family == "decoder" else ""
        raise OptionError(
            f"{what}--new-tokens {max(new)} exceeds the model's max_positions {max_pos}; lower --new-tokens"
        )
    return replace(out, prompts=tuple(prompts), new_tokens=tuple(new))


# ----- progress on stderr ----------------------------------------------------------------------------


class Progress:
    """One line per case on stderr; on a terminal it counts the iterations in place."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, prefix: str = "bench") -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.prefix = prefix
        self.text, self.count, self.started, self.shown = "", 0, 0.0, 0.0
        self.total: int | None = None

    def case(self, text: str, total: int | None) -> None:
        self.text, self.total, self.count = text, total, 0
        self.started = self.shown = time.perf_counter()
        if self.enabled and not self.tty:
            self.stream.write(f"[{self.prefix}] {text}\n")
            self.stream.flush()

    def tick(self) -> None:
        self.count += 1
        now = time.perf_counter()
        if self.tty and now - self.shown > 0.1:
            self.shown = now
            of = f"/{self.total}" if self.total else ""
            self.stream.write(f"\r[{self.prefix}] {self.text}: {self.count}{of} ({now - self.started:.1f} s)\033[K")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            took = time.perf_counter() - self.started
            self.stream.write(f"\r[{self.prefix}] {self.text}: {self.count} in {took:.1f} s\033[K\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"[{self.prefix}] {text}\n")
            self.stream.flush()


# ----- timing ------------------------------------------------------------------------------------------


def _clock_runs(iterations: int | None, budget: float | None) -> Iterator[int]:
    """0, 1, 2, ... until ``iterations`` are done or ``budget`` seconds have passed (at least one)."""
    start = time.perf_counter()
    i = 0
    while True:
        yield i
        i += 1
        if iterations is not None and i >= iterations:
            return
        if budget is not None and time.perf_counter() - start >= budget:
            return


def time_calls(
    fn: Callable[[], Any], warmup: int, iterations: int | None, budget: float | None, progress: Progress
) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls; the garbage collector waits."""
    for _ in range(warmup):
        fn()
    samples = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in _clock_runs(iterations, budget):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) / 1e9)
            progress.tick()
    finally:
        if enabled:
            gc.enable()
    return samples


# ----- the two generation loops --------------------------------------------------------------------


def _empty_past(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Zero-length self-attention caches for every past input whose length is symbolic
    (``past_sequence``), as (batch, heads, 0, head_dim) float32."""
    feeds = {}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values.") and not inp.name.endswith((".encoder.key", ".encoder.value")):
            _, heads, _, head_dim = inp.shape
            feeds[inp.name] = np.zeros((batch, heads, 0, head_dim), dtype=np.float32)
    return feeds


def bare_decoder(session: ort.InferenceSession, ids: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list[float]]:
    """The minimal greedy KV-cache loop over a decoder-only graph: (B, new_tokens) tokens and each
    token's time (seconds since the call). Prompts are (B, T) without padding."""
    start = time.perf_counter_ns()
    batch, t = ids.shape
    names = [o.name for o in session.get_outputs()]
    logits_at = names.index("logits")
    past = [(i, "past_key_values." + n[len("present.") :]) for i, n in enumerate(names) if n.startswith("present.")]
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones((batch, t), dtype=np.int64),
        "position_ids": np.tile(np.arange(t, dtype=np.int64), (batch, 1)),
        **_empty_past(session, batch),
    }
    tokens = np.empty((batch, new_tokens), dtype=np.int64)
    times = []
    for step in range(new_tokens):
        outs = session.run(names, feeds)
        tokens[:, step] = outs[logits_at][:, -1].argmax(-1)
        times.append((time.perf_counter_ns() - start) / 1e9)
        total = t + step + 1
        feeds = {
            "input_ids": tokens[:, step : step + 1].copy(),
            "attention_mask": np.ones((batch, total), dtype=np.int64),
            "position_ids": np.full((batch, 1), total - 1, dtype=np.int64),
        }
        feeds.update({name: outs[i] for i, name in past})
    return tokens, times


def bare_seq2seq(
    encoder: ort.InferenceSession, decoder: ort.InferenceSession, ids: np.ndarray, start_token: int, new_tokens: int
) -> tuple[np.ndarray, list[float]]:
    """The minimal greedy loop of an encoder-decoder: the encoder (and its cross keys/values) once,
    then one decoder call per token with the self-attention cache fed back."""
    start = time.perf_counter_ns()
    batch = ids.shape[0]
    mask = np.ones(ids.shape, dtype=np.int64)
    enc_names = [o.name for o in encoder.get_outputs()]
    enc = encoder.run(enc_names, {"input_ids": ids, "attention_mask": mask})
    cross = {
        "past_key_values." + n[len("present.") :]: v
        for n, v in zip(enc_names, enc, strict=True)
        if n.startswith("present.")
    }
    names = [o.name for o in decoder.get_outputs()]
    logits_at = names.index("logits")
    past = [(i, "past_key_values." + n[len("present.") :]) for i, n in enumerate(names) if n.startswith("present.")]
    feeds = {
        "input_ids": np.full((batch, 1), start_token, dtype=np.int64),
        "encoder_attention_mask": mask,
        **cross,
        **_empty_past(decoder, batch),
    }
    tokens = np.empty((batch, new_tokens), dtype=np.int64)
    times = []
    for step in range(new_tokens):
        outs = decoder.run(names, feeds)
        tokens[:, step] = outs[logits_at][:, -1].argmax(-1)
        times.append((time.perf_counter_ns() - start) / 1e9)
        feeds["input_ids"] = tokens[:, step : step + 1].copy()
        feeds.update({name: outs[i] for i, name in past})
    return tokens, times


def runtime_generate(model: RuntimeModel, ids: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list[float]]:
    """Greedy ``model.generate`` (exactly ``new_tokens``, no stop tokens) and each step's time:
    when the batch's last row got its token (rows of a step come in order)."""
    assert isinstance(model, DecoderModel | Seq2SeqModel)
    stamps: list[int] = []
    start = time.perf_counter_ns()
    out = model.generate(ids, new_tokens, stop_tokens=(), callback=lambda _step: stamps.append(time.perf_counter_ns()))
    batch = ids.shape[0]
    return np.asarray(out, dtype=np.int64), [(t - start) / 1e9 for t in stamps[batch - 1 :: batch]]


def bare_generate(model: RuntimeModel, ids: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list[float]]:
    """The bare loop over the model's own sessions."""
    if isinstance(model, Seq2SeqModel):
        return bare_seq2seq(model.sessions["encoder"], model.sessions["decoder"], ids, model.start_token, new_tokens)
    return bare_decoder(model.sessions["model"], ids, new_tokens)


# ----- inputs -------------------------------------------------------------------------------------------


def case_rng(seed: int, *case: int) -> np.random.Generator:
    """The random generator of one case: the same inputs for every variant and process."""
    return np.random.default_rng([seed, *case])


def prompt_ids(seed: int, vocab_size: int, batch: int, prompt: int) -> np.ndarray:
    """(batch, prompt) random token ids of a generation case, identical in every variant."""
    return case_rng(seed, 1, batch, prompt).integers(0, vocab_size, (batch, prompt), dtype=np.int64)


def forward_ids(seed: int, vocab_size: int, batch: int, sequence: int) -> np.ndarray:
    """(batch, sequence) random token ids of a forward case, identical in every variant."""
    return case_rng(seed, 0, batch, sequence).integers(0, vocab_size, (batch, sequence), dtype=np.int64)


def forward_feeds(graph: Graph, config: dict[str, Any], batch: int, sequence: int, seed: int = 0):
    """Feeds for one call of a graph: random token ids, all-ones masks, positions 0..T-1, empty
    caches; other inputs (a user's own module) ones for integers and standard normal for floats."""
    vocab = v if isinstance(v := config.get("vocab_size"), int) else 2
    rng = case_rng(seed, 2, batch, sequence)
    feeds = {}
    for spec in graph.inputs:
        past = spec.name.startswith("past_key_values.")
        dims = []
        for d in spec.shape:
            if isinstance(d, int):
                dims.append(d)
            elif d == "batch":
                dims.append(batch)
            elif d == "past_sequence":
                dims.append(0)
            else:
                dims.append(sequence)
        dtype = np.dtype(spec.dtype)
        if spec.name == "input_ids" and len(dims) == 2:
            feeds[spec.name] = forward_ids(seed, vocab, *dims).astype(dtype)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.broadcast_to(np.arange(dims[-1], dtype=dtype), dims).copy()
        elif past:
            feeds[spec.name] = np.zeros(dims, dtype=dtype)
        elif dtype.kind in "iub":
            feeds[spec.name] = np.ones(dims, dtype=dtype)
        else:
            feeds[spec.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


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
            cases.append({**case, "samples_s": samples, "summary": report_mod.forward_summary(samples, batch, seq)})
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
                for _ in _clock_runs(settings.gen_runs, settings.time_budget):
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
                    cases.append({**case, "summary": report_mod.generation_summary(runs[loop], batch)})
    return cases


def run_bundle(
    bundle_dir: str | Path,
    settings: Settings = Settings(),
    *,
    limits: Limits = Limits(),
    label: str | None = None,
    variant: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure one bundle: returns one run (see ``bench_report``) with every raw sample."""
    progress = progress or Progress(enabled=False)
    rss_start = report_mod.current_rss_bytes()
    t0 = time.perf_counter()
    bundle = read_bundle(bundle_dir, verify=True)
    verify_s = time.perf_counter() - t0
    if bundle.family != "custom" and not bundle.config:
        raise BundleFormatError(f"{bundle.path}: the manifest has no config to size the inputs from")
    settings = resolve(settings, bundle.family, bundle.config)
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
        session["rss_after_create_bytes"].append(report_mod.current_rss_bytes())
        session["providers"] = model.providers
        if settings.forward:
            cases += _forward_cases(model, threads, settings, progress)
        if settings.generate and isinstance(model, DecoderModel | Seq2SeqModel):
            cases += _generation_cases(model, threads, settings, progress)
        del model
        gc.collect()
    memory = {"rss_before_load_bytes": rss_start, "peak_rss_bytes": report_mod.peak_rss_bytes()}
    found = {}
    if limits.enabled:
        for threads in settings.threads or ():
            found[str(threads)] = measure_limits(
                threads,
                matmul_size=limits.matmul_size,
                bandwidth_mb=limits.bandwidth_mb,
                spinning=settings.spinning,
                log=progress.note,
            )
    return {
        "label": label or report_mod.machine()["hostname"],
        "variant": variant or bundle.path.resolve().name,
        "machine": report_mod.machine(),
        "versions": report_mod.versions(),
        "settings": asdict(settings) | {"limits": asdict(limits)},
        "model": model_info(bundle),
        "session": session,
        "memory": memory,
        "limits": found,
        "cases": cases,
    }


def limits_run(
    threads: Sequence[int], limits: Limits, *, spinning: bool = True, label: str | None = None, progress=None
) -> dict[str, Any]:
    """A run holding only the machine's limits (variant ``limits``)."""
    progress = progress or Progress(enabled=False)
    _positive("--threads", threads)
    found = {
        str(t): measure_limits(
            t, matmul_size=limits.matmul_size, bandwidth_mb=limits.bandwidth_mb, spinning=spinning, log=progress.note
        )
        for t in threads
    }
    return {
        "label": label or report_mod.machine()["hostname"],
        "variant": "limits",
        "machine": report_mod.machine(),
        "versions": report_mod.versions(),
        "settings": {"threads": list(threads), "spinning": spinning, "limits": asdict(limits)},
        "model": None,
        "session": None,
        "memory": None,
        "limits": found,
        "cases": [],
    }


# ----- command line ------------------------------------------------------------------------------------


def int_list(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4); anything else is an argparse error naming the bad value."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not an integer (give a comma-separated list)") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
        values.append(value)
    return tuple(values)


def _loops(text: str) -> tuple[str, ...]:
    loops = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in loops if p not in LOOPS]
    if bad or not loops:
        raise argparse.ArgumentTypeError(f"loops are {' and '.join(LOOPS)}, got {text!r}")
    return loops


def _names(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one execution provider, e.g. cpu")
    return names


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _input_seed(text: str) -> int:
    value = _count(0)(text)
    if value >= 2**64:
        raise argparse.ArgumentTypeError(f"{text} is above 2**64-1")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by the device runner and the torch worker (``edgeformer bench``)."""
    add = parser.add_argument
    add("--threads", type=int_list, help="intra-op thread counts to sweep, e.g. 1,2 (default: physical cores)")
    add("--batch", type=int_list, default=(1,), help="batch sizes to sweep (default 1)")
    add("--sequence", type=int_list, help="forward-pass sequence lengths (default 8,32,128 up to max_positions)")
    add("--prompt", type=int_list, help="generation prompt lengths (default 32)")
    add("--new-tokens", type=int_list, help="tokens to generate (default 128, or what fits)")
    add("--warmup", type=_count(0), default=3, help="untimed forward calls per case (default 3)")
    add("--iterations", type=_count(1), help="timed forward calls per case (default 20, or unbounded with a budget)")
    add("--time-budget", type=_positive_float, help="seconds per case; a case stops when it is spent")
    add("--gen-warmup", type=_count(0), default=1, help="untimed generation runs per loop and case (default 1)")
    add("--gen-runs", type=_count(1), default=3, help="timed generation runs per loop and case (default 3)")
    add("--loop", type=_loops, default=LOOPS, help="generation loops: runtime,bare (default both)")
    add("--no-forward", action="store_true", help="skip the forward cases")
    add("--no-generate", action="store_true", help="skip the generation cases")
    add("--no-spinning", action="store_true", help="idle intra-op threads sleep instead of spinning")
    add("--providers", type=_names, default=("cpu",), help="execution providers, e.g. xnnpack,cpu (default cpu)")
    add(
        "--input-seed",
        dest="seed",
        type=_input_seed,
        default=0,
        help="seed of the random inputs, 0 to 2**64-1 (default 0)",
    )
    add("--seed", dest="seed", type=_input_seed, help=argparse.SUPPRESS)  # its old name; --seed seeds weights elsewhere
    add("--label", help="name of this run in reports (default: the host name)")
    add("--variant", help="name of this variant in reports (default: the bundle directory's name)")
    add("--quiet", action="store_true", help="no progress on stderr")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write the report (every sample) as JSON")
    parser.add_argument("--csv", type=Path, help="write one line per case as CSV")
    parser.add_argument("--plot", type=Path, help="write a PNG: latency against sequence length, tokens/s")


def add_limits_options(parser: argparse.ArgumentParser, *, switch: bool = True) -> None:
    if switch:
        parser.add_argument("--no-limits", action="store_true", help="skip measuring the machine's limits")
    parser.add_argument("--limits-matmul", type=_count(16), default=1024, help="N of the N x N MatMuls (default 1024)")
    parser.add_argument(
        "--limits-mb", type=_count(1), default=256, help="MB of fp32 weights the bandwidth test reads (default 256)"
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    iterations = args.iterations if args.iterations is not None else (None if args.time_budget else 20)
    return Settings(
        threads=args.threads,
        batches=args.batch,
        sequences=args.sequence,
        prompts=args.prompt,
        new_tokens=args.new_tokens,
        warmup=args.warmup,
        iterations=iterations,
        time_budget=args.time_budget,
        gen_warmup=args.gen_warmup,
        gen_runs=args.gen_runs,
        loops=args.loop,
        forward=not args.no_forward,
        generate=not args.no_generate,
        spinning=not args.no_spinning,
        providers=args.providers,
        seed=args.seed,
    )


def settings_argv(settings: Settings) -> list[str]:
    """The command-line options that give ``settings`` back (``settings_from_args``): how
    ``edgeformer bench`` hands one set of resolved sweeps to every variant's process."""

    def join(values: Sequence[int]) -> str:
        return ",".join(str(v) for v in values)

    argv = ["--batch", join(settings.batches), "--warmup", str(settings.warmup), "--input-seed", str(settings.seed)]
    argv += ["--gen-warmup", str(settings.gen_warmup), "--gen-runs", str(settings.gen_runs)]
    argv += ["--loop", ",".join(settings.loops), "--providers", ",".join(settings.providers)]
    for option, values in (
        ("--threads", settings.threads),
        ("--sequence", settings.sequences),
        ("--prompt", settings.prompts),
        ("--new-tokens", settings.new_tokens),
    ):
        if values:
            argv += [option, join(values)]
    if settings.iterations is not None:
        argv += ["--iterations", str(settings.iterations)]
    if settings.time_budget is not None:
        argv += ["--time-budget", repr(settings.time_budget)]
    flags = (("--no-forward", settings.forward), ("--no-generate", settings.generate))
    argv += [flag for flag, on in (*flags, ("--no-spinning", settings.spinning)) if not on]
    return argv


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(not getattr(args, "no_limits", False), args.limits_matmul, args.limits_mb)


def _parser(command: str) -> argparse.ArgumentParser:
    prog = "python -m edgeformer.runtime.bench"
    if command == "merge":
        p = argparse.ArgumentParser(
            prog=f"{prog} merge", description="Merge benchmark reports (devices, runs) into one comparison report."
        )
        p.add_argument("reports", nargs="+", type=Path, help="report JSON files")
        p.add_argument("--baseline", help="series the others are compared with (label/variant when labels differ)")
        add_output_options(p)
        return p
    if command == "limits":
        p = argparse.ArgumentParser(
            prog=f"{prog} limits", description="Measure fp32/int8 MatMul peak and weight bandwidth."
        )
        p.add_argument("--threads", type=int_list, help="thread counts (default: physical cores)")
        p.add_argument("--no-spinning", action="store_true", help="idle intra-op threads sleep instead of spinning")
        p.add_argument("--label", help="name of this run (default: the host name)")
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")
        add_limits_options(p, switch=False)
        add_output_options(p)
        return p
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark an edgeformer bundle with onnxruntime and numpy only "
        "(subcommands: `limits`, `merge`; a bundle directory named like one: ./merge).",
    )
    p.add_argument("bundle", type=Path, help="bundle directory (from `edgeformer export`)")
    add_settings_options(p)
    add_limits_options(p)
    add_output_options(p)
    return p


def _finish(report: dict[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    report_mod.write_outputs(report, json_path=args.json, csv_path=args.csv, plot_path=args.plot)
    out.write(report_mod.table(report) + "\n")
    for what in ("json", "csv", "plot"):
        if getattr(args, what) is not None:
            out.write(f"wrote {getattr(args, what)}\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The command line; returns the exit status (1 for a clear error, 2 for a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    command = argv[0] if argv and argv[0] in ("merge", "limits") else "bundle"
    parser = _parser(command)
    args = parser.parse_args(argv[1:] if command != "bundle" else argv)
    try:
        if args.plot is not None:
            report_mod.plot_available()
        if command == "merge":
            report = report_mod.merge([report_mod.read_report(p) for p in args.reports], baseline=args.baseline)
        elif command == "limits":
            threads = args.threads or (report_mod.physical_cores(),)
            progress = Progress(enabled=not args.quiet)
            run = limits_run(
                threads, limits_from_args(args), spinning=not args.no_spinning, label=args.label, progress=progress
            )
            report = report_mod.new_report([run])
        else:
            progress = Progress(enabled=not args.quiet)
            run = run_bundle(
                args.bundle,
                settings_from_args(args),
                limits=limits_from_args(args),
                label=args.label,
                variant=args.variant,
                progress=progress,
            )
            report = report_mod.new_report([run])
        _finish(report, args, out)
    except EdgeformerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
