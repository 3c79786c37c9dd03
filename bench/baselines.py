"""The peers' variants as bundles, so ``edgeformer bench`` measures them like edgeformer's own.

toolchain-fp32   torch.onnx.export (edgeformer's unfused export) + onnxruntime.transformers optimize_model
toolchain-int8   toolchain-fp32 + onnxruntime.quantization.quantize_dynamic(per_channel=True)
qdyn-int8        quantize_dynamic(per_channel=True) of edgeformer's fused fp32 graph

A derived bundle is the source bundle with its model.onnx replaced (hashes and target updated), so
the runtime, the generation loops and the inputs are the same for every variant.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

ORT_MODEL_TYPE = {"encoder": "bert", "decoder": "gpt2"}


def derived_bundle(src: Path, out: Path, model_path: Path, *, name: str, precision: str, how: str) -> Path:
    """A bundle that is ``src`` with its model.onnx replaced (manifest hashes and target updated)."""
    from edgeformer.export.manifest_read import read_manifest
    from edgeformer.export.manifest_write import file_hashes, write_manifest

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = read_manifest(src)
    shutil.copyfile(model_path, out / "model.onnx")
    manifest["files"] = file_hashes(out, ["model.onnx"])
    manifest["precision"] = precision
    manifest["target"] = dict(manifest.get("target", {}), name=name, precision=precision, description=how)
    manifest.pop("parity", None)
    manifest.pop("fusion", None)
    write_manifest(out, manifest)
    return out


def quantize_dynamic_per_channel(src: Path, out: Path) -> Path:
    """onnxruntime's quantize_dynamic with per_channel=True, its other settings left at their defaults."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not out.is_file():
        quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out


def toolchain_variants(
    card: Any, unfused: Path, fused: Path, work: Path, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """toolchain-fp32, toolchain-int8 and qdyn-int8 as bundles under ``work``. Their graphs are
    made once per source bundle (whose directory name carries a digest of card, target and code)."""
    from onnxruntime.transformers import optimizer

    cfg = card.config
    opt = work / f"{unfused.name}-ort-optimized.onnx"
    if not opt.is_file():
        log(f"{card.name}: onnxruntime transformer optimizer on the plain export ...")
        model = optimizer.optimize_model(
            str(unfused / "model.onnx"),
            model_type=ORT_MODEL_TYPE[cfg.family],
            num_heads=cfg.n_heads,
            hidden_size=cfg.d_model,
        )
        model.save_model_to_file(str(opt))
    how = "torch.onnx.export + onnxruntime.transformers.optimizer.optimize_model"
    graphs = {
        "toolchain-fp32": (opt, "fp32", how),
        "toolchain-int8": (
            quantize_dynamic_per_channel(opt, work / f"{unfused.name}-ort-optimized-qdyn.onnx"),
            "int8",
            how + " + quantize_dynamic(per_channel=True)",
        ),
        "qdyn-int8": (
            quantize_dynamic_per_channel(fused / "model.onnx", work / f"{fused.name}-qdyn.onnx"),
            "int8",
            "edgeformer's fused fp32 graph + quantize_dynamic(per_channel=True)",
        ),
    }
    return {
        name: derived_bundle(unfused, work / f"{card.name}-{name}", path, name=name, precision=precision, how=what)
        for name, (path, precision, what) in graphs.items()
    }
