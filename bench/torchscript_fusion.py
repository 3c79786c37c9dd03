"""Fusion of graphs from torch.onnx's TorchScript exporter, against onnxruntime's transformer optimizer.

    python bench/torchscript_fusion.py                      # BERT-base and GPT-2-small, S = 16, 128
    python bench/torchscript_fusion.py bert --seq 128 --reps 4
    python bench/torchscript_fusion.py --size tiny --reps 1 --iters 1   # 2 layers, width 64: a smoke run

Most ONNX files of Hugging Face models in the wild come from ``torch.onnx.export(..., dynamo=False)``
(optimum writes them that way). This script makes such a file for a BERT-base and a GPT-2-small
configuration (random weights, random biases as in a trained model; transformers' default sdpa
attention), then fuses it with ``edgeformer fuse``'s pipeline and with onnxruntime's transformer
optimizer (``opt_level=0``, its own fusions only; the session applies onnxruntime's at load for
every variant alike), counts what each fused, checks each against the unfused graph's numbers,
and times the three graphs in one process, call by call in turn (batch 1, 2 threads): per
repetition the median of each, and the median and quartiles of edgeformer's ratio to each other.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIZES = {  # transformers' own defaults are the base sizes
    "base": {"bert": {}, "gpt2": {}},
    "tiny": {
        "bert": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
        "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4},
    },
}


def export(model_type: str, size: str, out: Path) -> dict[str, int]:
    """Write the TorchScript export of the model to ``out``; returns its heads and width."""
    import torch
    import transformers

    torch.manual_seed(0)
    if model_type == "bert":
        config = transformers.BertConfig(**SIZES[size]["bert"])
        model = transformers.BertModel(config)
        heads, width = config.num_attention_heads, config.hidden_size
    else:
        config = transformers.GPT2Config(**SIZES[size]["gpt2"])
        model = transformers.GPT2LMHeadModel(config)
        heads, width = config.n_head, config.n_embd
    torchscript_export(model, out, vocab=1000)
    return {"heads": heads, "width": width}


def torchscript_export(model, out: Path, vocab: int) -> None:  # noqa: ANN001
    """``model``'s (input_ids, attention_mask) -> first output as optimum writes it: TorchScript
    exporter, opset 17, batch and sequence dynamic; biases made random first, as in a trained model
    (a fresh one has them all zero, and one shared zero tensor is not what real graphs hold)."""
    import torch

    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.02)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN202
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=False)[0]

    names = ["input_ids", "attention_mask"]
    example = (torch.randint(0, vocab, (1, 8)), torch.ones(1, 8, dtype=torch.long))
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    torch.onnx.export(
        Wrapped(), example, str(out), input_names=names, output_names=["out"], dynamic_axes=dynamic,
        opset_version=17, dynamo=False,
    )  # fmt: skip


def counts(path: Path) -> dict[str, int]:
    """Fused ops in the graph at ``path``, by the fusion report's kinds."""
    import onnx

    from edgeformer.fusions.pipeline import ATTENTION_OPS, GELU_OPS, NORM_OPS

    ops = Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
    kinds = {"attention": ATTENTION_OPS, "layer_norm": NORM_OPS, "gelu": GELU_OPS}
    return {kind: sum(ops[o] for o in types) for kind, types in kinds.items()}


def bench_model(model_type: str, args: argparse.Namespace, work: Path, log) -> dict:  # noqa: ANN001
    import numpy as np
    from fusion_headroom import measure, paired_ratio
    from onnxruntime.transformers import optimizer

    from edgeformer.fusions.standalone import fuse_file

    unfused = work / f"{model_type}-{args.size}-torchscript.onnx"
    log(f"{model_type}: TorchScript export ({args.size}) ...")
    shape = export(model_type, args.size, unfused)
    paths = {
        "unfused": unfused,
        "ort-optimizer": unfused.with_suffix(".ort.onnx"),
        "edgeformer": unfused.with_suffix(".ef.onnx"),
    }
    log(f"{model_type}: onnxruntime's transformer optimizer ...")
    theirs = optimizer.optimize_model(
        str(unfused), model_type=model_type, num_heads=shape["heads"], hidden_size=shape["width"], opt_level=0
    )
    theirs.save_model_to_file(str(paths["ort-optimizer"]))
    log(f"{model_type}: edgeformer fuse ...")
    report = fuse_file(unfused, paths["edgeformer"], log=lambda _m: None)
    result: dict = {
        "model": model_type,
        "size": args.size,
        "fused": {name: counts(paths[name]) for name in ("ort-optimizer", "edgeformer")},
        "edgeformer_coverage": report.coverage,
        "median_ms": {},
        "ratio": {},
        "ratio_quartiles": {},
        "max_rel_error": {},
    }
    rng = np.random.default_rng(0)
    for s in args.seq:
        feeds = {
            "input_ids": rng.integers(0, 1000, (1, s), dtype=np.int64),
            "attention_mask": np.ones((1, s), dtype=np.int64),
        }
        log(f"  {model_type} S={s}: {args.reps} x {args.iters} calls per variant ...")
        outs: dict = {}
        per_rep = measure({name: str(p) for name, p in paths.items()}, feeds, args.reps, args.iters, args.threads, outs)
        scale = float(np.abs(outs["unfused"]).max())
        result["max_rel_error"][s] = {
            name: float(np.abs(o - outs["unfused"]).max()) / scale for name, o in outs.items()
        }
        result["median_ms"][s] = {name: round(statistics.median(t) * 1e3, 3) for name, t in per_rep.items()}
        result["ratio"][s], result["ratio_quartiles"][s] = {}, {}
        for other in ("unfused", "ort-optimizer"):
            result["ratio"][s][other], result["ratio_quartiles"][s][other] = paired_ratio(
                per_rep["edgeformer"], per_rep[other]
            )
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="bert, gpt2 (default: both)")
    parser.add_argument("--size", choices=list(SIZES), default="base")
    parser.add_argument("--seq", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--reps", type=int, default=8, help="repetitions per shape (one paired ratio each)")
    parser.add_argument("--iters", type=int, default=4, help="calls per variant per repetition")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="directory for the graphs (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    args.models = args.models or ["bert", "gpt2"]
    if set(args.models) - {"bert", "gpt2"}:
        parser.error(f"models are bert and gpt2, not {', '.join(sorted(set(args.models) - {'bert', 'gpt2'}))}")
    if args.reps < 1 or args.iters < 1 or args.threads < 1 or min(args.seq) < 1:
        parser.error("--reps, --iters, --threads and --seq must be at least 1")

    from fusion_headroom import ratio_cells, write_results

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []
    print(f"batch 1, {args.threads} threads, {args.reps} repetitions x {args.iters} calls per variant and shape")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for model_type in args.models:
            result = bench_model(model_type, args, work, log)
            results.append(result)
            print(f"\n{model_type} ({args.size}), TorchScript export; fused ops (attention, layer norm, GELU):")
            for name, fused in result["fused"].items():
                print(f"  {name:<15}{fused['attention']:>4}{fused['layer_norm']:>4}{fused['gelu']:>4}")
            print("  " + " " * 28 + "".join(f"S={s:<18}" for s in args.seq))
            for name in ("unfused", "ort-optimizer", "edgeformer"):
                row = "".join(f"{result['median_ms'][s][name]:<20.2f}" for s in args.seq)
                print(f"  {name + ', ms':<28}{row}")
            for other in ("unfused", "ort-optimizer"):
                print(f"  {'edgeformer / ' + other:<28}{ratio_cells(result, args.seq, other)}")
            worst = max(max(e.values()) for e in result["max_rel_error"].values())
            print(f"  worst error against the unfused graph: {worst:.1e} of the output scale")
    if args.json:
        write_results(args, results)
    return results


if __name__ == "__main__":
    main()
