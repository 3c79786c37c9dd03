"""`check` judges a quantized bundle's verdict again, on the rows it was judged on (issue 19:
"one function decides, on the same rows and shapes, for export, quantize and check").

Before: `check` ran the budget's cosine on random inputs and trusted the verdict the manifest
recorded. Now the held-out rows travel in the bundle (verdict_rows.npz, covered by manifest.sha256)
and `check` runs the graphs and the torch source on them through `verdict.judge`.

The reference differs: export/quantize compare with the fp32 graphs, check with the torch source
those graphs equal within 1e-4 of each output's scale. On these cards the metrics agree to the 6
decimals the manifest records them with: asserted with rel_tol 1e-6 and abs_tol 1e-6 (one unit of
the last recorded decimal).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from edgeformer.cli import main
from edgeformer.errors import BundleError
from edgeformer.quantize.verdict_rows import ROWS_FILE, parse_rows
from edgeformer.runtime.bundle import stamp_manifest


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    """gpt-mini exported to cpu-int8 (fp32 stage checked against torch, quantized, judged)."""
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_card, resolve_target

    out = tmp_path_factory.mktemp("int8") / "gpt-mini-cpu-int8"
    export_bundle(source_from_card(resolve_card("gpt-mini")), resolve_target("cpu-int8"), out)
    return out


@pytest.fixture(scope="module")
def int8_judged_by_top1(tmp_path_factory, edge_bundle):
    """gpt-mini quantized with a validation file whose rows the int8 graph agrees on (top-1 1.0),
    so the whole budget is judged (cosine, top1, perplexity), not only cosine as on random rows."""
    from edgeformer.quantize.stage import quantize_bundle

    root = tmp_path_factory.mktemp("top1")
    rng = np.random.default_rng(0)
    np.savez(root / "cal.npz", input_ids=rng.integers(0, 256, (8, 64)))
    np.savez(root / "valid.npz", input_ids=np.full((4, 64), 5))
    out = root / "q"
    quantize_bundle(edge_bundle("gpt-mini"), out, calibration_file=root / "cal.npz",
                    validation_file=root / "valid.npz", samples=8)  # fmt: skip
    return out


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle, manifest):
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    stamp_manifest(bundle)


def test_check_re_measures_the_values_the_export_recorded(int8_export):
    manifest = _manifest(int8_export)
    recorded = manifest["quantization"]["verdict"]
    assert recorded["rows_file"] == ROWS_FILE and ROWS_FILE in manifest["files"]  # covered by manifest.sha256
    digest = hashlib.sha256((int8_export / ROWS_FILE).read_bytes()).hexdigest()
    assert manifest["files"][ROWS_FILE] == digest

    result = CliRunner().invoke(main, ["check", str(int8_export), "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    again = report["rejudged_verdict"]
    assert again["ok"] and again["rows"] == recorded["rows"] and again["lengths"] == recorded["lengths"]
    assert again["bounds"] == recorded["bounds"]
    assert set(again["measured"]) == set(recorded["measured"]), (again, recorded)
    for name, value in recorded["measured"].items():
        assert math.isclose(again["measured"][name], value, rel_tol=1e-6, abs_tol=1e-6), (name, again, recorded)

    said = CliRunner().invoke(main, ["check", str(int8_export), "--steps", "2"])
    assert said.exit_code == 0, said.output
    assert f"verdict re-measured on the bundle's {ROWS_FILE}: budget met (int8 budget cosine >= 0.99)" in said.output
    cosine = recorded["measured"]["cosine"]
    assert f"re-measured / recorded when written (met): cosine {cosine:.6g} / {cosine:.6g}" in said.output


def test_edited_rows_get_a_re_measured_verdict_not_the_recorded_one(tmp_path, int8_judged_by_top1):
    """Rows of one repeated token (top-1 1.0 when written) replaced by random tokens, the manifest
    restamped: check measures the new rows (top-1 about 0.96 < 0.99) and exits 1."""
    bundle = tmp_path / "edited"
    shutil.copytree(int8_judged_by_top1, bundle)
    manifest = _manifest(bundle)
    assert manifest["quantization"]["verdict"]["measured"]["top1"] == 1.0
    assert set(manifest["quantization"]["verdict"]["bounds"]) == {"cosine", "top1", "perplexity"}
    rng = np.random.default_rng(7)
    np.savez_compressed(bundle / ROWS_FILE, input_ids_0=rng.integers(0, 256, (8, 128)),
                        attention_mask_0=np.ones((8, 128), dtype=np.int64))  # fmt: skip
    manifest["files"][ROWS_FILE] = hashlib.sha256((bundle / ROWS_FILE).read_bytes()).hexdigest()
    _write_manifest(bundle, manifest)

    result = CliRunner().invoke(main, ["check", str(bundle), "--steps", "2"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "the verdict re-measured by check misses and the miss was not accepted" in said, said
    assert "budget NOT met: model top1 0.9" in said and "< 0.99" in said, said
    assert "re-measured / recorded when written (met): cosine" in said and "top1 0.9" in said
    assert "/ 1, perplexity" in said  # the recorded top-1, beside the re-measured one
    assert "Traceback" not in result.output


def test_a_bundle_without_verdict_rows_still_checks_with_a_note(tmp_path, int8_export):
    bundle = tmp_path / "old"
    shutil.copytree(int8_export, bundle)
    manifest = _manifest(bundle)
    (bundle / ROWS_FILE).unlink()
    del manifest["files"][ROWS_FILE]
    del manifest["quantization"]["verdict"]["rows_file"]
    _write_manifest(bundle, manifest)

    result = CliRunner().invoke(main, ["check", str(bundle), "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "recorded verdict (not re-measured: this bundle carries no verdict rows" in result.output
    assert "re-measured on the bundle's" not in result.output


def test_a_rows_file_named_elsewhere_is_refused(tmp_path, int8_export):
    """The verdict names its rows file: only verdict_rows.npz, listed with its sha256, is read."""
    bundle = tmp_path / "renamed"
    shutil.copytree(int8_export, bundle)
    manifest = _manifest(bundle)
    manifest["quantization"]["verdict"]["rows_file"] = "model.onnx"
    _write_manifest(bundle, manifest)
    result = CliRunner().invoke(main, ["check", str(bundle), "--steps", "2"])
    assert result.exit_code == 1 and "rows_file must be 'verdict_rows.npz'" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _claiming(shape) -> bytes:
    """An .npz whose input_ids header claims ``shape`` while holding a few bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for key in ("input_ids_0", "attention_mask_0"):
            member = io.BytesIO()
            np.lib.format.write_array_header_1_0(member, {"descr": "<i8", "fortran_order": False, "shape": shape})
            z.writestr(f"{key}.npy", member.getvalue() + b"\0" * 16)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (_npz(input_ids_0=np.array([object()]), attention_mask_0=np.ones((1, 1))), "integer array, got object"),
        (_claiming((1 << 30, 4)), "more than 1,048,576 tokens"),
        (_npz(input_ids_0=np.full((2, 4), 300), attention_mask_0=np.ones((2, 4), int)), "must lie in [0, 256)"),
        (_npz(input_ids_0=np.ones((2, 4), int), attention_mask_0=np.zeros((2, 4), int)), "one real token in each"),
        (_npz(input_ids_0=np.ones((2, 4), int)), "attention_mask_<i> pairs"),
        (_npz(input_ids_0=np.ones((2, 4), np.float32), attention_mask_0=np.ones((2, 4), int)), "2-D integer array"),
        (_npz(input_ids_0=np.ones((2, 200), int), attention_mask_0=np.ones((2, 200), int)), "at most 128 tokens"),
        (b"PK\x03\x04 not a zip", "not a readable .npz"),
    ],
    ids=["pickle", "huge-header", "vocab", "no-real-token", "no-mask", "floats", "too-long", "not-zip"],
)
def test_hostile_rows_are_typed_errors(data, said):
    with pytest.raises(BundleError) as caught:
        parse_rows(data, "b/verdict_rows.npz", vocab=256, max_positions=128)
    assert said in str(caught.value)


def test_rows_of_two_lengths_come_back_as_written(tmp_path):
    from edgeformer.quantize.calibration import Rows
    from edgeformer.quantize.verdict_rows import write_rows

    rng = np.random.default_rng(0)
    groups = [Rows(rng.integers(0, 256, (3, 8)), np.ones((3, 8), np.int64), "a"),
              Rows(rng.integers(0, 256, (2, 16)), np.ones((2, 16), np.int64), "b")]  # fmt: skip
    groups[0].mask[0, 5:] = 0
    assert write_rows(tmp_path, groups) == ROWS_FILE
    back = parse_rows((tmp_path / ROWS_FILE).read_bytes(), "x", vocab=256, max_positions=128)
    for was, now in zip(groups, back, strict=True):
        assert np.array_equal(was.ids, now.ids) and np.array_equal(was.mask, now.mask) and now.ids.dtype == np.int64
