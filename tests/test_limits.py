"""Limits: a card whose export would not fit in memory is refused before the model is built,
with the estimate; the estimate stays within 1 GB of the peaks measured in docs/performance.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformer import limits
from edgeformer.cli import main
from edgeformer.errors import ResourceError
from edgeformer.zoo import resolve_card

TABLE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"  # the full-size cards, measured
GB = 1e9


def _measured_peaks() -> dict[str, float]:
    """card -> peak RSS in GB, from the table of the full-size cards in docs/performance.md."""
    rows = re.findall(r"^\| ([a-z0-9-]+)(?: \([^)]*\))? \| [\d.]+ s \| ([\d.]+) GB \|", TABLE.read_text(), re.M)
    return {card: float(peak) for card, peak in rows}


def test_the_estimate_matches_the_measured_exports():
    peaks = _measured_peaks()
    assert len(peaks) == 8 and peaks["gpt-xl-2048"] == 23.3
    for card, peak in peaks.items():
        estimate = limits.estimate_export_memory(resolve_card(card).config).total / GB
        assert abs(estimate - peak) <= 1.0, f"{card}: estimated {estimate:.1f} GB, measured {peak} GB"


def test_shorter_checks_and_no_check_need_less():
    cfg = resolve_card("sparse-decoder-base").config
    full = limits.estimate_export_memory(cfg)
    capped = limits.estimate_export_memory(cfg, max_sequence=512)
    unchecked = limits.estimate_export_memory(cfg, parity=False)
    assert full.total > 20 * GB > 5 * GB > capped.total > unchecked.total > limits.BASE_BYTES
    assert capped.sequence == 512 and unchecked.sequence == 0 and unchecked.logits_bytes == 0


def test_refusal_names_the_estimate_the_memory_and_the_ways_out():
    cfg = resolve_card("gpt-xl-2048").config
    with pytest.raises(ResourceError) as err:
        limits.check_export_memory(cfg, name="gpt-xl-2048", available=int(16 * GB))
    message = str(err.value)
    for part in ("gpt-xl-2048 needs about 23.1 GB", "1.32 B parameters x 4 bytes", "16.0 GB available"):
        assert part in message, message
    assert "--max-sequence" in message and "--no-memory-check" in message
    assert limits.check_export_memory(cfg, available=int(24 * GB)).total < 24 * GB


def test_available_memory_reads_meminfo_and_cgroup_limits(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    none = tmp_path / "no-cgroup"
    assert limits.available_memory(meminfo, none) == 20000000 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("8000000000\n")
    (v2 / "memory.current").write_text("3000000000\n")
    assert limits.available_memory(meminfo, v2) == 5_000_000_000  # the container's limit is tighter
    (v2 / "memory.max").write_text("max\n")
    assert limits.available_memory(meminfo, v2) == 20000000 * 1024
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("4000000000\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("1000000000\n")
    assert limits.available_memory(meminfo, v1) == 3_000_000_000
    assert limits.available_memory() > 0  # this machine


def _small_machine(monkeypatch) -> list[str]:
    """A machine with 500 MB available, and a record of every torch model built."""
    import edgeformer.export.source as source_mod

    built = []
    real = source_mod.load_model
    monkeypatch.setattr(limits, "available_memory", lambda *a: int(0.5 * GB))
    monkeypatch.setattr(source_mod, "load_model", lambda card, **kw: built.append(card.name) or real(card, **kw))
    return built


def test_refused_before_the_model_is_built(monkeypatch):
    from edgeformer.export.source import source_from_card

    small_machine = _small_machine(monkeypatch)
    with pytest.raises(ResourceError, match=r"gpt-mini needs about 1\.\d GB .* 500 MB available"):
        source_from_card(resolve_card("gpt-mini"))
    assert small_machine == []
    source_from_card(resolve_card("gpt-mini"), memory_check=False)  # the user knows better
    assert small_machine == ["gpt-mini"]


def test_cli_refuses_and_the_override_goes_ahead(monkeypatch, tmp_path):
    import edgeformer.pipeline as pipeline_mod

    small_machine = _small_machine(monkeypatch)
    exported = []
    monkeypatch.setattr(pipeline_mod, "export_bundle", lambda source, *a, **kw: exported.append(source.name) or {})
    out = str(tmp_path / "out")
    result = CliRunner().invoke(main, ["export", "gpt-mini", "-o", out])
    assert result.exit_code == 1 and "500 MB available; refused before building the model" in result.output
    assert "Traceback" not in result.output and small_machine == [] and exported == []
    result = CliRunner().invoke(main, ["export", "gpt-mini", "-o", out, "--no-memory-check", "--json"])
    assert result.exit_code == 0, result.output
    assert small_machine == ["gpt-mini"] and exported == ["gpt-mini"]


def test_check_refuses_too(edge_bundle, monkeypatch):
    bundle = edge_bundle("gpt-mini")
    small_machine = _small_machine(monkeypatch)
    result = CliRunner().invoke(main, ["check", str(bundle)])
    assert result.exit_code == 1 and "refused before building the model" in result.output
    assert small_machine == []
