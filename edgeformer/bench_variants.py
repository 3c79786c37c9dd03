"""``edgeformer bench``: variants of a model side by side, each measured in a process of its own.

Variants are bundles given as they are, the variants of a model card exported into a cache
directory (``unfused`` is the cpu-fp32 target without fusions; any target name, e.g. ``cpu-fp32``
or ``cpu-int8``, exports that target), and torch eager (the source, rebuilt from the card or from
the first bundle's manifest). Every measurement is a fresh process — the device runner
(``python -m edgeformer.runtime.bench``) for bundles, ``python -m edgeformer.bench_torch`` for
torch — run one at a time, round-robin over the repetitions (A rep 1, B rep 1, ..., A rep 2, ...)
so that all variants share the machine's drift; the machine's limits are measured the same way,
once per repetition. Repetitions of a variant are pooled (every sample kept) and each case is
reported as a ratio to the baseline variant.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgeformer import __version__
from edgeformer.cli_errors import friendly
from edgeformer.cli_types import FiniteFloatRange, count, merge_providers, providers_option, seed_option
from edgeformer.errors import EdgeformerError

if TYPE_CHECKING:  # onnxruntime and numpy are imported when a benchmark runs, not with the CLI
    from edgeformer.runtime import bench

UNFUSED = "unfused"
DEFAULT_TARGETS = (UNFUSED, "cpu-fp32")
OPTIONAL_TARGETS = ("cpu-int8",)  # measured by default once this installation ships the target

Log = Callable[[str], None]


class BenchError(EdgeformerError):
    """A benchmark cannot run as asked: unknown model or variant, or a variant's process failed."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One column of the comparison: an ONNX bundle, or torch eager rebuilt from a bundle or a card."""

    name: str
    kind: str  # "onnx" or "torch"
    bundle: Path | None = None
    card: str | None = None
    weights_seed: int = 0


def default_variants() -> list[str]:
    from edgeformer.zoo import target_names

    have = set(target_names())
    return [*DEFAULT_TARGETS, *(t for t in OPTIONAL_TARGETS if t in have)]


def variant_target(name: str) -> Any:
    """The export target of a card variant: a target name, or ``unfused`` (the unfused-fp32 target:
    cpu-fp32 without fusions)."""
    from edgeformer.zoo import resolve_target, target_names

    if name == UNFUSED:
        if "unfused-fp32" in target_names():
            return resolve_target("unfused-fp32")
        fp32 = resolve_target("cpu-fp32")
        return dataclasses.replace(
            fp32, name="unfused-fp32", fusions="none", description="cpu-fp32 without fusions (benchmarks)"
        )
    return resolve_target(name)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeformer" / "bench"


@functools.cache
def code_digest() -> str:
    """A digest of edgeformer's own source: a cached bundle from other code is exported anew."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def cached_export(card: Any, variant: Any, cache_dir: Path, *, seed: int, check: bool, log: Log) -> Path:
    """The bundle of ``card`` for ``variant`` (a variant name, or a Target), exported once into
    ``cache_dir``: its directory name carries a digest of the card, target, seed, checkpoint and
    edgeformer's version and source, so any change exports anew. A cached bundle is reused after
    its sha256 check."""
    from edgeformer.config import render_card
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.runtime.bundle import read_bundle
    from edgeformer.runtime.errors import RuntimeBundleError

    target = variant_target(variant) if isinstance(variant, str) else variant
    variant = variant if isinstance(variant, str) else target.name
    recipe = {
        "card": render_card(card),
        "target": target.to_dict(),
        "seed": seed,
        "checkpoint": card.checkpoint_sha256 if card.checkpoint else None,
        "edgeformer": __version__,
        "code": code_digest(),
        "check": check,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_dir / f"{card.name}-{variant}-{digest}"
    if out.is_dir():
        try:
            read_bundle(out, verify=True)
            log(f"{variant}: cached bundle {out}")
            return out
        except RuntimeBundleError as exc:
            log(f"{variant}: cached bundle unusable ({exc}); exporting again")
    log(f"{variant}: exporting {card.name} for target {target.name} into {out}")
    export_bundle(source_from_card(card, seed=seed), target, out, force=True, check=check, log=lambda m: log("  " + m))
    return out


def _is_bundle_arg(text: str) -> bool:
    path = Path(text)
    return path.is_dir() or (not text.endswith(".toml") and ("/" in text or os.sep in text))


def _user_source(bundle: Path) -> bool:
    """Whether a bundle's torch source is a user's factory (never imported because a bundle names it)."""
    from edgeformer.runtime.bundle import read_bundle

    source = read_bundle(bundle, verify=False).manifest.get("source")
    return isinstance(source, dict) and source.get("kind") == "factory"


def plan_variants(
    models: Sequence[str],
    *,
    variants: Sequence[str] | None = None,
    with_torch: bool = True,
    cache_dir: Path | None = None,
    check: bool = True,
    seed: int = 0,
    log: Log = lambda _m: None,
) -> list[Variant]:
    """The variants of the command line: bundles as given; for a card (at most one), its variants
    exported into the cache; torch eager first when ``with_torch``."""
    from edgeformer.runtime.bundle import read_bundle
    from edgeformer.runtime.errors import RuntimeBundleError
    from edgeformer.zoo import resolve_card

    if not models:
        raise BenchError("give a bundle directory or a model card to benchmark")
    bundles: list[Path] = []
    cards = []
    for text in models:
        if _is_bundle_arg(text):
            try:
                read_bundle(text, verify=False)
            except RuntimeBundleError as exc:
                raise BenchError(str(exc)) from None
            bundles.append(Path(text))
        else:
            try:
                cards.append(resolve_card(text))
            except EdgeformerError as exc:
                raise BenchError(f"{text!r} is neither a bundle directory nor a model card: {exc}") from None
    if len(cards) > 1:
        raise BenchError(f"benchmark one model card at a time (got {', '.join(c.name for c in cards)})")
    if variants is not None and not cards:
        raise BenchError("--variants chooses what to export for a model CARD; bundles are measured as given")
    out: list[Variant] = []
    if with_torch:
        if cards:
            out.append(Variant("torch", "torch", card=str(cards[0].path or cards[0].name), weights_seed=seed))
        elif _user_source(bundles[0]):
            log(f"torch eager left out: {bundles[0]}'s torch source is user code, which a bundle cannot make bench run")
        else:
            out.append(Variant("torch", "torch", bundle=bundles[0]))
    if cards:
        names = list(variants) if variants is not None else default_variants()
        if not names:
            raise BenchError("--variants is empty")
        for name in dict.fromkeys(names):
            if name == "torch":
                raise BenchError("torch eager is included unless --no-torch; leave it out of --variants")
            try:
                variant_target(name)
            except EdgeformerError as exc:
                raise BenchError(f"variant {name!r}: {exc} ({UNFUSED!r} is cpu-fp32 without fusions)") from None
        cache = cache_dir or cache_root()
        for name in dict.fromkeys(names):
            path = cached_export(cards[0], name, cache, seed=seed, check=check, log=log)
            out.append(Variant(name, "onnx", bundle=path))
    taken = {v.name for v in out}
    for path in bundles:
        name = path.resolve().name
        i = 2
        while name in taken:
            name, i = f"{path.resolve().name}#{i}", i + 1
        taken.add(name)
        out.append(Variant(name, "onnx", bundle=path))
    return out


def _family_and_config(variant: Variant) -> tuple[str, dict[str, Any]]:
    if variant.bundle is not None:
        from edgeformer.runtime.bundle import read_bundle

        b = read_bundle(variant.bundle, verify=False)
        return b.family, b.config
    from edgeformer.zoo import resolve_card

    cfg = resolve_card(variant.card or "").config
    return cfg.family, cfg.to_dict()


def resolve_for_all(variants: Sequence[Variant], settings: bench.Settings) -> bench.Settings:
    """Concrete sweeps that every variant takes: resolved for the first, checked against the others."""
    from edgeformer.runtime import bench

    family, config = _family_and_config(variants[0])
    concrete = bench.resolve(settings, family, config)
    for v in variants[1:]:
        other_family, other_config = _family_and_config(v)
        if other_family != family:
            raise BenchError(f"variants must be of one family: {variants[0].name} is {family}, {v.name} {other_family}")
        bench.resolve(concrete, other_family, other_config)
    return concrete


# ----- measuring: one process per variant and repetition --------------------------------------------


def _worker(argv: list[str], what: str, tmp: Path) -> dict[str, Any]:
    from edgeformer.runtime import bench_report as report_mod

    out = tmp / f"{len(list(tmp.iterdir()))}.json"
    # -P: the worker's sys.path does not start with the working directory (it may be a bundle, or any
    # folder holding a module named like one edgeformer imports); this edgeformer is found through
    # PYTHONPATH instead, the folder it was imported from
    cmd = [sys.executable, "-P", "-m", *argv, "--quiet", "--json", str(out)]
    home = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise BenchError(f"{what} failed (exit status {done.returncode}):\n{tail}")
    return report_mod.read_report(out)["runs"][0]


def variant_argv(variant: Variant, settings: bench.Settings, label: str) -> list[str]:
    from edgeformer.runtime import bench

    common = [*bench.settings_argv(settings), "--label", label]
    if variant.kind == "torch":
        source = ["--bundle", str(variant.bundle)] if variant.bundle else ["--card", str(variant.card)]
        return ["edgeformer.bench_torch", *source, "--weights-seed", str(variant.weights_seed), *common]
    return ["edgeformer.runtime.bench", str(variant.bundle), *common, "--variant", variant.name, "--no-limits"]


def limits_argv(settings: bench.Settings, limits: bench.Limits, label: str) -> list[str]:
    argv = ["edgeformer.runtime.bench", "limits", "--threads", ",".join(map(str, settings.threads or ()))]
    argv += ["--limits-matmul", str(limits.matmul_size), "--limits-mb", str(limits.bandwidth_mb), "--label", label]
    return argv + ([] if settings.spinning else ["--no-spinning"])


def combine(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One run from the repetitions of a variant: samples pooled case by case, summaries recomputed,
    session times and peak memory of every process kept."""
    from edgeformer.runtime import bench_report as report_mod

    first = copy.deepcopy(runs[0])
    keys = [report_mod.case_key(c) for c in first["cases"]]
    for other in runs[1:]:
        if [report_mod.case_key(c) for c in other["cases"]] != keys:
            raise BenchError(f"repetitions of {first['variant']} measured different cases; cannot pool them")
    for i, case in enumerate(first["cases"]):
        # each repetition's own figure, for ratios paired within a repetition (see bench_report.rows)
        summaries = [r["cases"][i]["summary"] for r in runs]
        forward = case["kind"] == "forward"
        case["per_repetition"] = [x["latency_s"]["p50"] if forward else x["tokens_per_s"] for x in summaries]
        if case["kind"] == "forward":
            case["samples_s"] = [s for r in runs for s in r["cases"][i]["samples_s"]]
            case["summary"] = report_mod.forward_summary(case["samples_s"], case["batch"], case["sequence"])
        else:
            case["runs"] = [g for r in runs for g in r["cases"][i]["runs"]]
            if "loops_agree" in case:
                case["loops_agree"] = all(r["cases"][i]["loops_agree"] for r in runs)
            case["summary"] = report_mod.generation_summary(case["runs"], case["batch"])
    first["repetitions"] = len(runs)
    first["session"]["create_s"] = [s for r in runs for s in r["session"]["create_s"]]
    peaks = [r["memory"]["peak_rss_bytes"] for r in runs]
    first["memory"]["peak_rss_bytes_per_process"] = peaks
    first["memory"]["peak_rss_bytes"] = max((p for p in peaks if p is not None), default=None)
    return first


def best_limits(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The limits of several processes: per thread count and measure, the best figure, all samples,
    and each process's own figure (``per_repetition``, in the order of the runs)."""
    out: dict[str, Any] = {}
    for run in runs:
        for threads, found in run["limits"].items():
            for name, lim in found.items():
                unit = next(k for k in ("gflops", "gops", "gbs") if k in lim)
                have = out.setdefault(threads, {}).get(name)
                if have is None:
                    out[threads][name] = copy.deepcopy(lim) | {"per_repetition": [lim[unit]]}
                else:
                    have["samples_s"] += lim["samples_s"]
                    have[unit] = max(have[unit], lim[unit])
                    have["per_repetition"].append(lim[unit])
    return out


def measure(
    variants: Sequence[Variant],
    settings: bench.Settings,
    *,
    repeats: int = 3,
    limits: bench.Limits | None = None,
    label: str | None = None,
    log: Log = lambda _m: None,
) -> list[dict[str, Any]]:
    """Round-robin over repetitions: each variant (and the limits) in a fresh process, one at a
    time. Returns one pooled run per variant, each carrying the limits measured in this run."""
    from edgeformer.runtime import bench
    from edgeformer.runtime import bench_report as report_mod

    limits = limits or bench.Limits()
    if repeats < 1:
        raise BenchError(f"--repeats must be at least 1, got {repeats}")
    label = label or report_mod.machine()["hostname"]
    per_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    limit_runs = []
    with tempfile.TemporaryDirectory(prefix="edgeformer-bench-") as tmp:
        for rep in range(repeats):
            if limits.enabled:
                t0 = time.perf_counter()
                limit_runs.append(_worker(limits_argv(settings, limits, label), "measuring the limits", Path(tmp)))
                log(f"rep {rep + 1}/{repeats}: limits ({time.perf_counter() - t0:.1f} s)")
            for v in variants:
                t0 = time.perf_counter()
                per_variant[v.name].append(_worker(variant_argv(v, settings, label), f"variant {v.name}", Path(tmp)))
                log(f"rep {rep + 1}/{repeats}: {v.name} ({time.perf_counter() - t0:.1f} s)")
    found = best_limits(limit_runs)
    runs = []
    for v in variants:
        run = combine(per_variant[v.name])
        run["variant"] = v.name
        run["limits"] = found
        run["limits_measured"] = "in separate processes, once per repetition (best of all)" if found else None
        runs.append(run)
    return runs


# ----- the command ------------------------------------------------------------------------------------


def _click_list(value: str | None, option: str) -> tuple[int, ...] | None:
    import argparse

    from edgeformer.runtime import bench

    if value is None:
        return None
    try:
        return bench.int_list(value)
    except argparse.ArgumentTypeError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _legacy_json_file(
    models: tuple[str, ...], as_json: bool, json_path: Path | None
) -> tuple[tuple[str, ...], bool, Path | None]:
    """``--json FILE`` from before ``--json`` meant stdout: click reads FILE as one more model, and no
    bundle or card is a .json file, so it is taken as the report file (``-o FILE``), with a note."""
    legacy = [m for m in models if m.endswith(".json")]
    if not as_json or not legacy:
        return models, as_json, json_path
    if json_path is not None or len(legacy) > 1 or len(legacy) == len(models):
        raise click.UsageError(
            f"{legacy[0]}: --json prints the report to stdout and takes no file; write it with -o {legacy[0]}"
        )
    note = f"note: --json FILE is deprecated (--json now prints to stdout); writing {legacy[0]} as -o does"
    click.echo(note, err=True)
    return tuple(m for m in models if m != legacy[0]), False, Path(legacy[0])


@click.command(name="bench")
@click.argument("models", nargs=-1, required=True, metavar="BUNDLE|CARD [BUNDLE...]")
@click.option(
    "--variants",
    help="For a CARD: what to export and measure, comma-separated target names; 'unfused' is cpu-fp32 "
    f"without fusions. [default: {','.join(DEFAULT_TARGETS)}, plus cpu-int8 where it exists]",
)
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True, help="Include torch eager.")
@click.option("--baseline", help="Variant the others are compared with. [default: torch, else the first]")
@click.option(
    "--repeats", type=count(1, 1000), default=3, show_default=True, help="Processes per variant, interleaved."
)
@click.option("--threads", help="Intra-op thread counts, e.g. 1,2. [default: physical cores]")
@click.option("--batch", default="1", show_default=True, help="Batch sizes.")
@click.option("--sequence", help="Forward sequence lengths. [default: 8,32,128 up to max_positions]")
@click.option("--prompt", help="Generation prompt lengths. [default: 32]")
@click.option("--new-tokens", help="Tokens to generate. [default: 128, or what fits]")
@click.option("--warmup", type=count(0, 10**6), default=3, show_default=True, help="Untimed forward calls.")
@click.option("--iterations", type=count(1, 10**7), help="Timed forward calls per case and process. [default: 20]")
@click.option(
    "--time-budget", type=FiniteFloatRange(min=0, min_open=True, max=86400), help="Seconds per case and process."
)
@click.option("--gen-warmup", type=count(0, 10**6), default=1, show_default=True, help="Untimed generations.")
@click.option("--gen-runs", type=count(1, 10**6), default=3, show_default=True, help="Timed generations.")
@click.option("--loop", default="runtime,bare", show_default=True, help="ONNX generation loops: runtime, bare.")
@click.option("--forward/--no-forward", default=True, show_default=True, help="Measure forward passes.")
@click.option("--generate/--no-generate", default=True, show_default=True, help="Measure generation (decoders).")
@click.option("--spinning/--no-spinning", default=True, show_default=True, help="Intra-op threads spin when idle.")
@providers_option("Where the ONNX variants run.", default="cpu")
@click.option("--limits/--no-limits", default=True, show_default=True, help="Measure MatMul peak and bandwidth.")
@click.option("--limits-matmul", type=count(16, 16384), default=1024, show_default=True, help="N of N x N.")
@click.option("--limits-mb", type=count(1, 1 << 16), default=256, show_default=True, help="MB read per GEMV.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Where a CARD's variants go.")
@click.option("--check/--no-check", default=True, show_default=True, help="Check parity when exporting.")
@seed_option()
@click.option("--label", help="Name of this machine in reports. [default: host name]")
@click.option("--json", "as_json", is_flag=True, help="Print the report (every sample) as JSON instead of the table.")
@click.option(
    "-o",
    "--output",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report (every sample) as JSON to this file.",
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write one line per case.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG.")
@friendly
def bench_command(
    models: tuple[str, ...],
    variants: str | None,
    with_torch: bool,
    baseline: str | None,
    repeats: int,
    threads: str | None,
    batch: str,
    sequence: str | None,
    prompt: str | None,
    new_tokens: str | None,
    warmup: int,
    iterations: int | None,
    time_budget: float | None,
    gen_warmup: int,
    gen_runs: int,
    loop: str,
    forward: bool,
    generate: bool,
    spinning: bool,
    providers: tuple[str, ...] | None,
    provider_alias: tuple[str, ...] | None,
    limits: bool,
    limits_matmul: int,
    limits_mb: int,
    cache_dir: Path | None,
    check: bool,
    seed: int,
    label: str | None,
    as_json: bool,
    json_path: Path | None,
    csv_path: Path | None,
    plot_path: Path | None,
) -> None:
    """Benchmark variants of a model side by side: torch eager and ONNX bundles.

    Give bundle directories (measured as they are; torch eager is rebuilt from the first one's
    manifest), or one model CARD, whose variants are exported into a cache directory (see
    --variants). Each variant runs in a process of its own, one at a time, round-robin over
    --repeats; the table gives each case per variant and its speedup against --baseline, the
    machine's measured limits, and tokens/s as a fraction of the weight-bandwidth limit.
    """
    from edgeformer.runtime import bench
    from edgeformer.runtime import bench_report as report_mod

    def log(msg: str) -> None:
        click.echo(f"[bench] {msg}", err=True)

    models, as_json, json_path = _legacy_json_file(models, as_json, json_path)
    loops = tuple(p.strip() for p in loop.split(",") if p.strip())
    settings = bench.Settings(
        threads=_click_list(threads, "--threads"),
        batches=_click_list(batch, "--batch") or (1,),
        sequences=_click_list(sequence, "--sequence"),
        prompts=_click_list(prompt, "--prompt"),
        new_tokens=_click_list(new_tokens, "--new-tokens"),
        warmup=warmup,
        iterations=iterations if iterations is not None else (None if time_budget else 20),
        time_budget=time_budget,
        gen_warmup=gen_warmup,
        gen_runs=gen_runs,
        loops=loops,
        forward=forward,
        generate=generate,
        spinning=spinning,
        providers=merge_providers(providers, provider_alias) or ("cpu",),
    )
    wanted = [p.strip() for p in variants.split(",") if p.strip()] if variants is not None else None
    planned = plan_variants(
        models, variants=wanted, with_torch=with_torch, cache_dir=cache_dir, check=check, seed=seed, log=log
    )
    names = [v.name for v in planned]
    base = baseline or names[0]
    if base not in names:
        raise BenchError(f"--baseline {base!r} is not a variant; variants: {', '.join(names)}")
    concrete = resolve_for_all(planned, settings)
    if plot_path is not None:
        report_mod.plot_available()
    log(f"variants: {', '.join(names)}; {repeats} repetitions, round-robin")
    runs = measure(
        planned, concrete, repeats=repeats, limits=bench.Limits(limits, limits_matmul, limits_mb), label=label, log=log
    )
    report = report_mod.new_report(runs, baseline=base)
    report_mod.write_outputs(report, json_path=json_path, csv_path=csv_path, plot_path=plot_path)
    if as_json:
        click.echo(report_mod.to_json(report))
        return
    click.echo(report_mod.table(report))
    for path in (json_path, csv_path, plot_path):
        if path is not None:
            click.echo(f"wrote {path}")
