"""Mobile and web targets: static shapes, form (c) fusions, .ort files with parity, the reduced-operator
config and onnxruntime's NNAPI / CoreML usability report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from edgeformer import runtime
from edgeformer.errors import CardError, ExportError
from edgeformer.export import mobile
from edgeformer.export.graphs import make_inputs
from edgeformer.export.source import source_from_card
from edgeformer.export.trace import trace
from edgeformer.fixed_shapes import fixed_source
from edgeformer.fusions.pipeline import fuse_model
from edgeformer.pipeline import export_bundle
from edgeformer.runtime.bundle import stamp_manifest
from edgeformer.runtime.providers import PROVIDERS
from edgeformer.targets import parse_target
from edgeformer.zoo import resolve_card, resolve_target

MOBILE_TARGETS = ("mobile-cpu", "android-nnapi", "ios-coreml", "qnn-int8", "web-wasm")
STATIC = {"batch": 1, "sequence": 128}


@pytest.fixture(scope="module")
def nnapi_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("mobile") / "bert-nnapi"
    source = source_from_card(resolve_card("bert-mini"))
    manifest = export_bundle(source, resolve_target("android-nnapi"), out)
    return out, manifest


def test_targets_parse_with_their_mobile_fields():
    for name in MOBILE_TARGETS:
        target = resolve_target(name)
        assert target.ort_format, name
    for name in ("android-nnapi", "ios-coreml", "qnn-int8"):
        assert dict(resolve_target(name).static_shapes) == STATIC
    assert resolve_target("qnn-int8").quantization == "static"
    assert not resolve_target("mobile-cpu").static_shapes  # decoders with a KV cache go here


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"static_shapes": {"batch": 0}}, "size from 1 to 1,048,576"),
        ({"static_shapes": {"tokens": 8}}, "'tokens' is not one of"),
        ({"ort_format": "yes"}, "ort_format must be true or false"),
        ({"ort_optimization": "max"}, "ort_optimization 'max' is not one of"),
    ],
)
def test_bad_mobile_fields_are_refused_by_name(data, words):
    with pytest.raises(CardError, match=words):
        parse_target({"name": "t", **data})


def test_static_target_refuses_a_decoder_saying_why_and_what_to_do():
    source = source_from_card(resolve_card("gpt-mini"), parity=False, memory_check=False)
    with pytest.raises(ExportError, match=r"KV cache.*--target mobile-cpu"):
        fixed_source(source, resolve_target("android-nnapi"))


def test_nnapi_bundle_holds_ort_config_and_report(nnapi_bundle):
    out, manifest = nnapi_bundle
    graph = manifest["graphs"]["model"]
    assert graph["ort_file"] == "model.ort" and (out / "model.ort").is_file()
    assert {"model.onnx", "model.ort", "required_operators.config"} <= set(manifest["files"])
    # static shapes: in the manifest and in the graph itself
    assert graph["inputs"][0]["shape"] == [1, 128]
    dims = [d.dim_value for d in onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 128]
    assert [c["dims"] for c in manifest["parity"]["cases"]] == [{"batch": 1, "sequence": 128, "total_sequence": 128}]
    # the reduced-operator config names the ops of the .ort graph
    config = (out / "required_operators.config").read_text()
    assert "ai.onnx;" in config and "MatMul" in config and "ReduceMean" in config
    assert "/tmp" not in config and "LayerNormalization" not in config
    mob = manifest["mobile"]
    assert mob["operators"] and mob["static_shapes"] == STATIC
    # the .ort graph passed the same parity check as the .onnx
    assert mob["ort_parity"]["ok"] and mob["ort_parity"]["worst_max_rel"] <= 1e-4
    use = mob["graphs"]["model"]["usability"]
    for ep in ("nnapi", "coreml_mlprogram", "coreml_neuralnetwork"):
        assert {"partitions", "nodes", "supported_nodes", "unsupported_ops", "unsupported_by_dynamic_shape"} <= set(
            use[ep]
        )
    assert use["dynamic_inputs"] == []
    assert use["nnapi"]["partitions"] == 1 and use["nnapi"]["unsupported_ops"] == []
    assert json.loads((out / "manifest.json").read_text())["mobile"] == mob


def test_runtime_loads_the_ort_file_and_matches_the_onnx(nnapi_bundle):
    out, _ = nnapi_bundle
    ids = np.random.default_rng(0).integers(0, 1024, (1, 128))
    from_onnx = runtime.load(out, format="onnx").encode(ids)
    from_ort = runtime.load(out, format="ort").encode(ids)
    for key, value in from_onnx.items():
        np.testing.assert_allclose(from_ort[key], value, atol=1e-5)
    with pytest.raises(runtime.OptionError, match="format must be one of"):
        runtime.load(out, format="tflite")


def test_runtime_pads_and_batches_inputs_to_a_static_bundle(nnapi_bundle, edge_bundle):
    """A ragged batch of 3 on a batch-1 x 128 bundle: padded, run row by row, trimmed back; the
    same outputs as the dynamic-shape fp32 bundle of the same card (same seed)."""
    out, _ = nnapi_bundle
    rows = [[5, 17, 42, 7], [9, 8], list(range(1, 60))]
    static = runtime.load(out).encode(rows)
    dynamic = runtime.load(edge_bundle("bert-mini")).encode(rows)
    assert set(static) == set(dynamic)
    for key, value in dynamic.items():
        assert static[key].shape == value.shape
        np.testing.assert_allclose(static[key], value, rtol=1e-4, atol=1e-4)
    with pytest.raises(runtime.SequenceTooLongError):
        runtime.load(out).encode([list(range(1, 130))])


def test_bundle_without_ort_is_refused_for_format_ort(nnapi_bundle, tmp_path):
    out, _ = nnapi_bundle
    copy = tmp_path / "no-ort"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["graphs"]["model"]["ort_file"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(copy)  # the digest follows the edit
    with pytest.raises(runtime.RuntimeBundleError, match="has no .ort file"):
        runtime.load(copy, format="ort")


@pytest.mark.parametrize("provider", ["nnapi", "coreml", "qnn"])
def test_ort_file_on_the_device_provider(nnapi_bundle, provider):
    if PROVIDERS[provider] not in ort.get_available_providers():
        pytest.skip(
            f"{provider} is not in this onnxruntime build ({', '.join(ort.get_available_providers())}); "
            "the .ort graph is checked on the CPU provider here"
        )
    out, _ = nnapi_bundle
    model = runtime.load(out, providers=(provider,), strict=True, format="ort")
    assert model.provider == provider


def test_form_c_lands_in_fewer_partitions_than_contrib(tmp_path):
    """bert-mini at batch 1, sequence 128: onnxruntime's checker on the contrib-fused graph and on
    form (c) for NNAPI and for CoreML (numbers in docs/mobile-and-web.md)."""
    source = source_from_card(resolve_card("bert-mini"), parity=False, memory_check=False)
    plan = fixed_source(source, resolve_target("android-nnapi")).plans[0]
    traced = mobile.fix_shapes(trace(source.plans[0], 18), STATIC)
    feeds = [make_inputs(plan, plan.cases[0])]
    partitions = {}
    for form in ("contrib", "nnapi", "coreml"):
        model = ir.from_proto(ir.to_proto(traced))
        report = fuse_model(model, form, feeds=feeds, strict=True)  # every pass within 1e-4 of the traced graph
        assert not report.to_dict()["rolled_back"]
        ir.save(model, tmp_path / f"{form}.onnx")
        use = mobile.usability(tmp_path / f"{form}.onnx")
        partitions[form] = {ep: use[ep]["partitions"] for ep in ("nnapi", "coreml_mlprogram")}
    print(partitions)
    assert partitions["nnapi"]["nnapi"] == 1 < partitions["contrib"]["nnapi"]
    assert partitions["coreml"]["coreml_mlprogram"] == 1 < partitions["contrib"]["coreml_mlprogram"]


def test_mobile_cpu_decoder_ort_generates_like_torch(tmp_path):
    source = source_from_card(resolve_card("gpt-mini"), max_sequence=16)
    lines: list[str] = []
    manifest = export_bundle(source, resolve_target("mobile-cpu"), tmp_path / "gpt", log=lines.append)
    after = lines[lines.index("verify: checking the .ort graphs against the torch source (CPU provider) ...") + 1 :]
    checked = next(line for line in after if line.startswith("  model.") and "shapes, worst error" in line)
    assert checked.startswith("  model.ort: "), checked  # the file checked is the .ort
    parity = manifest["mobile"]["ort_parity"]
    assert parity["ok"] and parity["generation"]["identical"]
    assert "com.microsoft;1;" in (tmp_path / "gpt" / "required_operators.config").read_text()
    assert manifest["mobile"]["graphs"]["model"]["usability"]["dynamic_inputs"]  # dynamic shapes, reported


def test_qnn_int8_static_qdq_bundle(tmp_path):
    source = source_from_card(resolve_card("demo-encoder"))
    manifest = export_bundle(source, resolve_target("qnn-int8"), tmp_path / "qnn")
    assert manifest["precision"] == "int8" and manifest["quantization"]["mode"] == "static"
    assert manifest["mobile"]["ort_parity"]["ok"]  # within the int8 budget, on the .ort graph
    config = (tmp_path / "qnn" / "required_operators.config").read_text()
    assert "QuantizeLinear" in config and "DequantizeLinear" in config
    assert manifest["graphs"]["model"]["inputs"][0]["shape"] == [1, 128]


def _tied_head_model(vocab: int = 512, width: int = 64) -> onnx.ModelProto:
    """ids -> Gather(W) -> MatMul(., Transpose(W)): a decoder's tied embedding and LM head, reduced."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((vocab, width), np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["W", "ids"], ["hidden"]),
            helper.make_node("Transpose", ["W"], ["WT"], perm=[1, 0]),
            helper.make_node("MatMul", ["hidden", "WT"], ["logits"]),
        ],
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])],
        [table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_ort_file_stores_a_tied_head_table_once(tmp_path):
    """onnxruntime folded Transpose(W) into a second table: gpt-mini's model.ort was 2.73 MB beside a
    2.24 MB model.onnx. The head is stored as Gemm(transB=1) on W itself; same numbers."""
    onnx.save(_tied_head_model(), tmp_path / "model.onnx")
    onnx_bytes = (tmp_path / "model.onnx").stat().st_size
    mobile.convert_to_ort(tmp_path / "model.onnx", tmp_path / "folded.ort", "basic")
    assert (tmp_path / "folded.ort").stat().st_size > 1.8 * onnx_bytes  # what onnxruntime does alone
    mobile.convert_tied_once(tmp_path / "model.onnx", tmp_path / "model.ort", "basic")
    assert (tmp_path / "model.ort").stat().st_size < 1.1 * onnx_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folded.ort", "model.onnx", "model.ort"]
    ids = np.array([[1, 7, 300], [4, 4, 511]], dtype=np.int64)
    want = ort.InferenceSession(tmp_path / "model.onnx").run(None, {"ids": ids})[0]
    got = ort.InferenceSession(tmp_path / "model.ort").run(None, {"ids": ids})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_untied_transpose_is_left_to_onnxruntime():
    """A Transpose of a weight nothing else reads folds into one table anyway: not rewritten."""
    model = _tied_head_model()
    del model.graph.node[0]
    model.graph.node[-1].input[0] = "ids"
    assert mobile.store_tied_heads_once(model) == 0


def test_package_reads_and_writes_the_typed_manifest(tmp_path):
    """The package stage takes the typed manifest and returns it with its fields set; the result goes
    through the one writer (the conftest hook validates it against the JSON Schema) and reads back equal."""
    from edgeformer.export.manifest_write import file_hashes
    from edgeformer.runtime.manifest import GraphEntry, Manifest, TensorSpec, manifest_text, parse_manifest

    onnx.save(_tied_head_model(vocab=16, width=4), tmp_path / "model.onnx")
    ids, logits = TensorSpec("ids", "int64", ("batch", "sequence")), TensorSpec("logits", "float32", ("batch", 16))
    typed = Manifest(
        name="tiny",
        graphs={"model": GraphEntry("model.onnx", (ids,), (logits,))},
        files=file_hashes(tmp_path, ["model.onnx"]),
        extra={"timings": {"trace": 0.5}},
    )
    packaged, ort_files = mobile.package(tmp_path, typed, resolve_target("mobile-cpu"), lambda _m: None)
    assert ort_files == [tmp_path / "model.ort"]
    assert packaged.graphs["model"].ort_file == "model.ort" and typed.graphs["model"].ort_file is None
    assert packaged.files == typed.files | file_hashes(tmp_path, ["model.ort", "required_operators.config"])
    assert packaged.mobile is not None and packaged.mobile["graphs"]["model"]["ort_bytes"] == (
        (tmp_path / "model.ort").stat().st_size
    )
    assert packaged.mobile["ort_optimization"] == "basic" and packaged.mobile["static_shapes"] == {}
    assert packaged.extra == {"timings": {"trace": 0.5}}  # what the stage does not know is kept
    assert parse_manifest(json.loads(manifest_text(packaged))) == packaged
