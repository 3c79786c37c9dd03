"""Shared by the property-based tests: hypothesis settings, the outcome rule, and a count of the
cases tried (printed at the end of the run by conftest's terminal summary)."""

from __future__ import annotations

import json
import os
import shutil
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from edgeformer.errors import EdgeformerError
from edgeformer.io import sha256_file
from edgeformer.runtime.bundle import stamp_manifest

CASES: Counter[str] = Counter()  # test name -> examples run
PASSED: Counter[str] = Counter()  # test name -> examples that returned (the rest raised a typed error)


def fuzz(examples: int) -> settings:
    """``examples`` generated cases (times ``EDGEFORMER_FUZZ_SCALE``, for longer runs by hand), no
    deadline (first calls load sessions), no example database written into the checkout."""
    return settings(
        max_examples=max(1, int(examples * float(os.environ.get("EDGEFORMER_FUZZ_SCALE", "1")))),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


def outcome(
    name: str, call: Callable[[], Any], allowed: type[BaseException] | tuple[type[BaseException], ...] = EdgeformerError
) -> Any:
    """Run one generated case: it must return or raise one of ``allowed`` (the library's typed
    errors); anything else fails the test with the traceback. Returns the result or the error."""
    CASES[name] += 1
    try:
        result = call()
    except allowed as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: nothing untyped may escape
        raise AssertionError(
            f"{name}: untyped {type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
        ) from exc
    PASSED[name] += 1
    return result


def with_word_tokenizer(bundle: Path, dest: Path) -> Path | None:
    """A copy of a decoder bundle that takes text through a Hugging Face tokenizer.json (words
    w0 ... w999 are ids 0 ... 999), or None without the optional tokenizers library."""
    try:
        import tokenizers
    except ImportError:
        return None
    shutil.copytree(bundle, dest)
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(1000)}, unk_token="w0"))
    words.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    words.save(str(dest / "tokenizer.json"))
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["tokenizer"] = "tokenizer.json"
    manifest["files"]["tokenizer.json"] = sha256_file(dest / "tokenizer.json")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(dest)  # the digest follows the edit
    return dest
