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
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ARCHES = ("avx512_vnni", "avx512", "avx2", "arm64")

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
print(json.dumps({"int8": str(path), "o2_ops": ops(opt / "model_optimized.onnx"), "int8_ops": ops(path)}))
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
        "intermediate_size": cfg.d_ff,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_positions,
        "hidden_act": cfg.activation,
    }


def optimum_int8_bundle(
    card: Any, unfused: Path, work: Path, *, python: str, arch: str = "avx512_vnni", log: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]]:
    """optimum's O2 + dynamic per-channel int8 of ``unfused``'s graph, as a bundle under ``work``;
    with the op counts of optimum's O2 graph and of its int8 graph (what its fusions found)."""
    from baselines import derived_bundle

    out = work / f"{unfused.name}-optimum-{arch}"
    log(f"{card.name}: optimum O2 + dynamic per-channel int8 ({arch}) of edgeformer's unfused export ...")
    command = [python, "-c", OPTIMUM_SCRIPT, str(unfused / "model.onnx"), str(out)]
    command += [json.dumps(bert_config_of(card.config)), arch]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"optimum failed (exit {done.returncode}): {tail}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    how = "edgeformer's unfused export + optimum ORTOptimizer O2"
    how += f" + ORTQuantizer {arch}(is_static=False, per_channel=True)"
    bundle = derived_bundle(
        unfused, work / f"{card.name}-optimum-int8", Path(found["int8"]), name="optimum-int8", precision="int8", how=how
    )
    return bundle, {"arch": arch, "o2_ops": found["o2_ops"], "int8_ops": found["int8_ops"]}
