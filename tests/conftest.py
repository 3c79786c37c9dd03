import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from edgeformer.zoo import resolve_card  # noqa: E402

EDGE_CARDS = ["bert-mini", "gpt-mini", "transformer-mini", "local-mini", "sparse-mini"]


@pytest.fixture(autouse=True, scope="session")
def _manifests_follow_the_schema():
    """Every manifest written in this session is validated against the JSON Schema (schema_check.py)."""
    import schema_check

    from edgeformer.runtime import manifest

    manifest.WRITE_CHECKS.append(schema_check.check)
    yield
    manifest.WRITE_CHECKS.remove(schema_check.check)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def card_config(name: str, **changes):
    cfg = resolve_card(name).config
    return cfg.replace(dropout=0.0, attention_dropout=0.0, **changes)


@pytest.fixture(scope="session")
def edge_bundle(tmp_path_factory):
    """Read-only bundles of edge cards (cpu-fp32, no parity check), exported once per test session
    on first use: card name -> directory. Copy one before changing it."""
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_target

    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("edge-bundles")

    def get(card: str) -> Path:
        if card not in made:
            source = source_from_card(resolve_card(card))
            export_bundle(source, resolve_target("cpu-fp32"), root / card, check=False)
            made[card] = root / card
        return made[card]

    return get


@pytest.fixture(scope="session")
def local_decoder_bundle(tmp_path_factory):
    """Tiny local decoders (window 4, vocab 64, cpu-fp32, no parity check) by number of global tokens,
    exported once per session on first use: global_tokens -> (export source, directory). Read-only."""
    import dataclasses

    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_target

    made: dict[int, tuple] = {}
    root = tmp_path_factory.mktemp("local-decoders")

    def get(global_tokens: int) -> tuple:
        if global_tokens not in made:
            card = resolve_card("sparse-mini")
            config = card.config.replace(
                vocab_size=64, d_model=32, n_heads=2, max_positions=64, attention="local", window=4,
                global_tokens=global_tokens, dropout=0.0, attention_dropout=0.0,
            )  # fmt: skip
            card = dataclasses.replace(card, name=f"local-window-{global_tokens}", config=config)
            source = source_from_card(card)
            export_bundle(source, resolve_target("cpu-fp32"), root / card.name, check=False)
            made[global_tokens] = (source, root / card.name)
        return made[global_tokens]

    return get


def pytest_terminal_summary(terminalreporter):
    """How many generated cases the property-based tests (tests/props.py) ran."""
    props = sys.modules.get("props")
    if props is not None and props.CASES:
        counts = ", ".join(f"{name} {n} ({props.PASSED[name]} ok)" for name, n in sorted(props.CASES.items()))
        total = sum(props.CASES.values())
        terminalreporter.write_line(f"property-based cases: {total:,} generated ({len(props.CASES)} kinds: {counts})")
    schema_check = sys.modules.get("schema_check")
    if schema_check is not None and schema_check.CHECKED["manifests"]:
        terminalreporter.write_line(f"manifests validated against the JSON Schema: {schema_check.CHECKED['manifests']}")
