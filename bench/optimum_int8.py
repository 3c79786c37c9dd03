"""optimum's O2 + dynamic per-channel int8 of edgeformer's own unfused fp32 export, as a bundle (issue #21).

The demo encoder cannot be written as a Hugging Face ``BertModel`` exactly: it is pre-LN with a final
LayerNorm (BERT is post-LN), has no LayerNorm after the embeddings, no token-type embeddings, and its
classifier reads the [CLS] row without BERT's tanh pooler. So optimum is handed what a user would hand
it: edgeformer's unfused fp32 ONNX export (``torch.onnx.export`` of the torch model, no fusions), in a
directory with a ``config.json`` (a ``BertConfig`` of the same width, heads and depth: the metadata
optimum's optimizer reads to pick the BERT fusions and their head count). In optimum's own venv
(``--optimum-python``, never edgeformer's), a child process runs

  ORTOptimizer + AutoOptimizationConfig.O2()                        (onnxruntime.transformers, model_type bert)
  ORTQuantizer + AutoQuantizationConfig.<arch>(is_static=False, per_channel=True)

and the int8 graph becomes a bundle derived from the unfused one (same runtime, inputs and outputs).

optimum's BERT fusions do not find attention in that graph (its padding mask is a Where, not BERT's
additive mask), where on a Hugging Face BertModel export its O2 fuses every layer's Attention. So a
second, latency-only variant shows what optimum reaches on its home ground: ``optimum-bert-int8``, a
BertModel of the same width, heads, depth and vocabulary (random weights: no accuracy is judged),
optimum's own export + O2 + dynamic per-channel int8 (onnxruntime's quantize_dynamic with optimum's
settings: ORTQuantizer stops on the fused Attention's outputs, whose type shape inference leaves
unknown), its token types fed as zeros and a logits output added (the [CLS] row times a 128 x labels
matrix), so that it takes and gives what the demo encoder's bundle does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ARCHES = ("avx512_vnni", "avx512", "avx2", "arm64")
LATENCY_ONLY = ("optimum-bert-int8",)  # variants whose weights are not the encoder's

OPTIMUM_SCRIPT = """
import json, shutil, sys
from collections import Counter
from pathlib import Path

import onnx
from transformers import BertConfig
from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

graph, out, bert, arch = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
src, opt, q = out / "source", out / "o2", out / "o2-int8"
for d in (src, opt, q):
    shutil.rmtree(d, ignore_errors=True)
src.mkdir(parents=True)
shutil.copyfile(graph, src / "model.onnx")
BertConfig(**bert).save_pretrained(src)
ORTOptimizer.from_pretrained(src, file_names=["model.onnx"]).optimize(AutoOptimizationConfig.O2(), save_dir=opt)
config = getattr(AutoQuantizationConfig, arch)(is_static=False, per_channel=True)
ORTQuantizer.from_pretrained(opt, file_name="model_optimized.onnx").quantize(save_dir=q, quantization_config=config)
(path,) = q.glob("*.onnx")
ops = lambda p: dict(Counter(n.op_type for n in onnx.load(str(p), load_external_data=False).graph.node))
found = {"int8": str(path), "o2_ops": ops(opt / "model_optimized.onnx"), "int8_ops": ops(path)}
if len(sys.argv) > 5:  # a latency reference: a BertModel of the same size, optimum's own export, O2, int8
    import numpy as np, torch
    from onnx import helper, numpy_helper
    from optimum.exporters.onnx import main_export
    from transformers import BertModel

    torch.manual_seed(0)
    hf, bq = out / "bert", out / "bert-o2-int8"
    BertModel(BertConfig(**bert)).eval().save_pretrained(hf / "model")
    main_export(str(hf / "model"), output=str(hf / "onnx"), task="feature-extraction")
    ORTOptimizer.from_pretrained(hf / "onnx").optimize(AutoOptimizationConfig.O2(), save_dir=hf / "o2")
    # ORTQuantizer stops on the fused Attention's outputs (no type from shape inference); onnxruntime's
    # quantize_dynamic with the settings of optimum's dynamic per-channel config, told they are float:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bq.mkdir(parents=True, exist_ok=True)
    qpath = bq / "model_quantized.onnx"
    quantize_dynamic(str(hf / "o2" / "model_optimized.onnx"), str(qpath), per_channel=True, reduce_range=False,
                     weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    m = onnx.load(str(qpath))
    g = m.graph  # the bundle's interface: token types are zeros; logits from the first row, as the classifier reads
    kept = [i for i in g.input if i.name != "token_type_ids"]
    del g.input[:]
    g.input.extend(kept)
    g.node.insert(0, helper.make_node("Shape", ["input_ids"], ["tt_shape"]))
    zero = helper.make_tensor("tt_zero", onnx.TensorProto.INT64, [1], [0])
    g.node.insert(1, helper.make_node("ConstantOfShape", ["tt_shape"], ["token_type_ids"], value=zero))
    labels = sys.argv[5]
    w = np.random.default_rng(0).standard_normal((bert["hidden_size"], int(labels))).astype(np.float32)
    g.initializer.extend([numpy_helper.from_array(w, "cls_w"), numpy_helper.from_array(np.array(0, np.int64), "cls_i")])
    g.node.extend([helper.make_node("Gather", ["last_hidden_state", "cls_i"], ["cls_row"], axis=1),
                   helper.make_node("MatMul", ["cls_row", "cls_w"], ["logits"])])
    kept = [o for o in g.output if o.name == "last_hidden_state"]
    del g.output[:]
    g.output.extend(kept + [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", int(labels)])])
    onnx.checker.check_model(m)
    onnx.save(m, str(out / "bert-reference-int8.onnx"))
    found["bert_int8"] = str(out / "bert-reference-int8.onnx")
    found["bert_o2_ops"] = ops(hf / "o2" / "model_optimized.onnx")
print(json.dumps(found))
"""


def optimum_available(python: str | None) -> bool:
    """Whether ``python`` exists and imports optimum's ONNX Runtime optimizer and quantizer."""
    if not python or not Path(python).exists():
        return False
    probe = [python, "-c", "import optimum.onnxruntime, onnxruntime.transformers"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def bert_config_of(cfg: Any) -> dict[str, Any]:
    """The BertConfig values optimum's optimizer reads (model_type bert, width, heads, depth)."""
    return {
        "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.n_heads,
        "num_hidden_layers": cfg.n_layers,
        "intermediate_size": cfg.ffn_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_positions,
        "hidden_act": cfg.activation,
    }


def optimum_bundles(
    card: Any,
    unfused: Path,
    work: Path,
    *,
    python: str,
    arch: str = "avx512_vnni",
    bert_reference: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """``optimum-int8``: optimum's O2 + dynamic per-channel int8 of ``unfused``'s graph, as a bundle under
    ``work``; with ``bert_reference`` also ``optimum-bert-int8`` (see the module docstring: latency only).
    With the op counts of the O2 graphs (what optimum's fusions found)."""
    from baselines import derived_bundle

    out = work / f"{unfused.name}-optimum-{arch}"
    log(f"{card.name}: optimum O2 + dynamic per-channel int8 ({arch}) of edgeformer's unfused export ...")
    command = [python, "-c", OPTIMUM_SCRIPT, str(unfused / "model.onnx"), str(out)]
    command += [json.dumps(bert_config_of(card.config)), arch]
    command += [str(card.config.num_labels)] if bert_reference else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"optimum failed (exit {done.returncode}): {tail}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    how = f"edgeformer's unfused export + optimum ORTOptimizer O2 + ORTQuantizer {arch}(dynamic, per_channel)"
    graphs = {"optimum-int8": (Path(found["int8"]), how)}
    if bert_reference:
        how = "latency reference: a BertModel of the same size (random weights), optimum's export + O2 + dynamic int8"
        graphs["optimum-bert-int8"] = (Path(found["bert_int8"]), how)
    bundles = {
        name: derived_bundle(unfused, work / f"{card.name}-{name}", path, name=name, precision="int8", how=what)
        for name, (path, what) in graphs.items()
    }
    return bundles, {"arch": arch} | {k: v for k, v in found.items() if k.endswith("_ops")}
