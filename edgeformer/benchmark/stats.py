"""Benchmark statistics and the machine: sample summaries, CPU, cores, memory, versions, RSS.

Standard library and numpy only (the device runner imports it).
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeformer.runtime.errors import OptionError

PERCENTILES = (50, 90, 99)


# ----- statistics -----------------------------------------------------------------------------------


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """n, min, max, mean, stdev (sample, ddof=1; 0 for one sample) and p50/p90/p99 (numpy's linear
    interpolation between closest ranks) of samples in seconds."""
    if len(samples) == 0:
        raise OptionError("no samples to summarize")
    a = np.asarray(samples, dtype=np.float64)
    out: dict[str, float | int] = {"n": int(a.size), "min": float(a.min()), "max": float(a.max())}
    out["mean"] = float(a.mean())
    out["stdev"] = float(a.std(ddof=1)) if a.size > 1 else 0.0
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    return out


def forward_summary(samples: Sequence[float], batch: int, sequence: int) -> dict[str, Any]:
    """Latency statistics of one graph call, and throughput (sequences and tokens per second at the mean)."""
    s = summarize(samples)
    return {
        "latency_s": s,
        "sequences_per_s": batch / s["mean"],
        "tokens_per_s": batch * sequence / s["mean"],
    }


def generation_summary(runs: Sequence[dict[str, Any]], batch: int) -> dict[str, Any]:
    """From each run's token times (``token_s``: seconds from the call to each new token): time to
    first token, per-token latency (the gaps after the first token), decode tokens/s per sequence
    (median over runs of (N - 1) / (t_N - t_1)), end-to-end tokens/s (N / t_N), and aggregate
    tokens/s (decode tokens/s times the batch)."""
    ttft, total, gaps, decode_tps, e2e_tps = [], [], [], [], []
    for run in runs:
        times = np.asarray(run["token_s"], dtype=np.float64)
        ttft.append(float(times[0]))
        total.append(float(times[-1]))
        e2e_tps.append(times.size / times[-1])
        if times.size > 1:
            gaps.extend(np.diff(times).tolist())
            decode_tps.append((times.size - 1) / (times[-1] - times[0]))
    tps = float(np.median(decode_tps)) if decode_tps else None
    return {
        "ttft_s": summarize(ttft),
        "total_s": summarize(total),
        "per_token_s": summarize(gaps) if gaps else None,
        "tokens_per_s": tps,
        "e2e_tokens_per_s": float(np.median(e2e_tps)),
        "aggregate_tokens_per_s": tps * batch if tps is not None else None,
    }


# ----- the machine and the software ---------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo, plus machine-wide fields (ARM boards list
    Hardware/Model at the end) and the number of distinct (physical id, core id) pairs."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    cores = set()
    for block in text.split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
                fields.setdefault(key.strip(), value.strip())
        if "core id" in entry:
            cores.add((entry.get("physical id", "0"), entry["core id"]))
    fields["_physical_cores"] = str(len(cores)) if cores else ""
    return fields


def physical_cores() -> int:
    """Cores this process may use, counting each physical core once (what onnxruntime uses by default)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    physical = _cpuinfo().get("_physical_cores", "")
    return max(1, min(usable, int(physical))) if physical else max(1, usable)


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict[str, Any]:
    """CPU model, cores, instruction-set flags, memory and OS of this machine."""
    info = _cpuinfo()
    cpu = info.get("model name") or info.get("Model") or info.get("Hardware") or platform.processor() or "unknown"
    flags = (info.get("flags") or info.get("Features") or "").split()
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "physical_cores": physical_cores(),
        "flags": sorted(flags),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "system": platform.system(),
    }


def versions(**extra: str) -> dict[str, str]:
    """Versions of what measured: edgeformer, onnxruntime (and its providers), numpy, Python."""
    import onnxruntime as ort

    from edgeformer import __version__

    return {
        "edgeformer": __version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ",".join(ort.get_available_providers()),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        **extra,
    }


def current_rss_bytes() -> int | None:
    return _proc_status_kb("VmRSS")


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size: /proc (Linux, Android) or getrusage elsewhere."""
    peak = _proc_status_kb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, KiB elsewhere


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
