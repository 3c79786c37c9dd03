"""What gets traced: per model family, flat-tensor wrappers with Hugging Face input/output names.

encoder          model.onnx   input_ids, attention_mask -> last_hidden_state [, logits | embeddings]
decoder          model.onnx   input_ids, attention_mask, position_ids, past_key_values.{i}.key/value
                              -> logits, present.{i}.key/value       (one graph: prefill and decode)
encoder-decoder  encoder.onnx input_ids, attention_mask -> last_hidden_state, present.{i}.encoder.key/value
                 decoder.onnx input_ids, encoder_attention_mask, past_key_values.{i}.decoder.key/value,
                              past_key_values.{i}.encoder.key/value -> logits, present.{i}.decoder.key/value

The cross-attention keys and values are computed once, by the encoder graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from edgeformer.config import ModelConfig
from edgeformer.nn.models import EncoderDecoderModel, as_encoder_decoder

Dim = str | int


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: int64, float32
    shape: tuple[Dim, ...]
    high: int = 0  # integer inputs that are token ids: values in [0, high)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class GraphPlan:
    """One graph of a bundle: a torch module taking the inputs in order and returning the outputs.

    ``cases`` are the dimension sizes parity is checked at; ``left_pad`` says that padded rows of
    a checked batch are padded on the left (decoder prompts) rather than the right.
    """

    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    cases: list[dict[str, int]] = field(default_factory=list)
    left_pad: bool = False
    sliding_window: dict | None = None  # the manifest's graph entry ``sliding_window`` (local decoders)

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


def _kv_specs(prefix: str, n_layers: int, parts: list[str], cfg: ModelConfig, seq: str) -> list[TensorSpec]:
    shape = ("batch", cfg.n_heads, seq, cfg.head_dim)
    return [TensorSpec(f"{prefix}.{i}.{p}", "float32", shape) for i in range(n_layers) for p in parts]


def _pairs(flat: tuple[Tensor, ...]) -> list[tuple[Tensor, Tensor]]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module, output_keys: list[str]) -> None:
        super().__init__()
        self.model, self.output_keys = model, output_keys

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        out = self.model(input_ids, attention_mask)
        return tuple(out[k] for k in self.output_keys)


class DecoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *past: Tensor
    ) -> tuple[Tensor, ...]:
        out = self.model(input_ids, attention_mask, position_ids, _pairs(past))
        return (out["logits"], *[t for kv in out["present_key_values"] for t in kv])


class Seq2SeqEncoderGraph(nn.Module):
    def __init__(self, model: EncoderDecoderModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        memory = self.model.encode(input_ids, attention_mask)  # (B, S, C)
        return (memory, *[t for kv in self.model.cross_key_values(memory) for t in kv])


class Seq2SeqDecoderGraph(nn.Module):
    def __init__(self, model: EncoderDecoderModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, encoder_attention_mask: Tensor, *caches: Tensor) -> tuple[Tensor, ...]:
        # per layer: self key, self value, cross key, cross value
        past = [(caches[i], caches[i + 1]) for i in range(0, len(caches), 4)]
        cross = [(caches[i + 2], caches[i + 3]) for i in range(0, len(caches), 4)]
        out = self.model.decode(input_ids, cross, encoder_attention_mask, past_key_values=past)
        return (out["logits"], *[t for kv in out["present_key_values"] for t in kv])


def card_cases(cfg: ModelConfig, graph: str, max_sequence: int | None = None) -> list[dict[str, int]]:
    """The shapes a card's graph is checked at: batch 1 at sequence 1, 7 and the card's maximum;
    batch 2 (padding, batching) at the short lengths only, where it costs little; decoders also with
    a cache (one new token after 7, and at batch 1 after max - 1). The full length at batch 2 cost as
    much as every other case together and showed nothing batch 1 and the short batch do not."""
    longest = min(cfg.max_positions, max_sequence or cfg.max_positions)  # a cap keeps huge checks in memory
    short = min(7, longest)
    cases: list[dict[str, int]] = []
    for batch in (1, 2):
        seqs = sorted({1, short, longest} if batch == 1 else {1, short})
        if graph == "model" and cfg.family == "encoder":
            cases += [{"batch": batch, "sequence": s} for s in seqs]
        elif graph == "encoder":
            cases += [{"batch": batch, "encoder_sequence": s} for s in seqs]
        else:
            enc = {"encoder_sequence": short} if graph == "decoder" else {}
            cases += [{"batch": batch, "sequence": s, "past_sequence": 0, **enc} for s in seqs]
            pasts = sorted({min(7, longest - 1), longest - 1} if batch == 1 else {min(7, longest - 1)})
            cases += [{"batch": batch, "sequence": 1, "past_sequence": p, **enc} for p in pasts]
    return cases


PER_PASS_LONGEST = 512  # the longest sequence the per-pass fusion checks run at (each checked pass runs it once)


def _length(case: dict[str, int]) -> int:
    return case.get("sequence", case.get("encoder_sequence", 0))


def fusion_check_cases(plan: GraphPlan) -> list[dict[str, int]]:
    """The shapes each fusion pass is checked at: a short padded batch, the same batch at the plan's
    longest checked length (capped at PER_PASS_LONGEST, so a pass that only breaks long sequences, past
    a window, stride or 64-wide tile, is undone at that pass), and a decode step with a cache."""
    short = [c for c in plan.cases if c.get("batch") == 2 and 1 < _length(c) <= 16]
    full = [c for c in plan.cases if not c.get("past_sequence")]
    cached = [c for c in plan.cases if c.get("past_sequence", 0) > 0]
    longest = max(full, key=_length, default=None)
    dynamic = {d for s in plan.inputs for d in s.shape if isinstance(d, str)}
    if longest is not None and "batch" in dynamic and any(c.get("batch") == 2 for c in plan.cases):
        longest = {**longest, "batch": 2}  # padded: the parity check runs the full length at batch 1 only
    long = [] if longest is None else [longest]
    key = "sequence" if longest is not None and "sequence" in longest else "encoder_sequence"
    if longest is not None and _length(longest) > PER_PASS_LONGEST and key in dynamic:
        long = [{**longest, key: PER_PASS_LONGEST}]
    chosen: list[dict[str, int]] = []
    for case in short[:1] + long + cached[:1]:
        if case not in chosen:
            chosen.append(case)
    return chosen or plan.cases[:1]


def plan_graphs(model: nn.Module, cfg: ModelConfig, max_sequence: int | None = None) -> list[GraphPlan]:
    """The graphs a bundle of this model holds, in the order an app runs them."""
    plans = _card_plans(model, cfg)
    for plan in plans:
        plan.cases = card_cases(cfg, plan.name, max_sequence)
        plan.left_pad = cfg.family == "decoder"
    return plans


def sliding_window(cfg: ModelConfig) -> dict | None:
    """Which self-attention caches of a decoder an app may trim, or None: with local attention a query
    sees the last ``window`` positions (its own included) and the global tokens, so the cache of every
    layer needs only its last window - 1 positions and each row's first ``global_tokens`` real tokens.
    The graph takes them as they are: its band is a distance between cache slots, its global tokens each
    row's first real ones in the mask, and positions come from ``position_ids``."""
    if cfg.family != "decoder" or cfg.attention != "local":
        return None
    return {"window": cfg.window, "global_tokens": cfg.global_tokens, "layers": list(range(cfg.n_layers))}


def _card_plans(model: nn.Module, cfg: ModelConfig) -> list[GraphPlan]:
    ids = TensorSpec("input_ids", "int64", ("batch", "sequence"), high=cfg.vocab_size)
    mask = TensorSpec("attention_mask", "int64", ("batch", "sequence"))
    hidden = TensorSpec("last_hidden_state", "float32", ("batch", "sequence", cfg.d_model))
    if cfg.family == "encoder":
        outputs = [hidden]
        if cfg.head == "lm":
            outputs.append(TensorSpec("logits", "float32", ("batch", "sequence", cfg.vocab_size)))
        elif cfg.head == "classification":
            outputs.append(TensorSpec("logits", "float32", ("batch", cfg.num_labels)))
        elif cfg.head == "embedding":
            outputs.append(TensorSpec("embeddings", "float32", ("batch", cfg.d_model)))
        module = EncoderGraph(model, [o.name for o in outputs])
        return [GraphPlan("model", module, [ids, mask], outputs)]
    if cfg.head != "lm":
        raise ValueError("export of decoders needs the language-model head (head = 'lm')")
    logits = TensorSpec("logits", "float32", ("batch", "sequence", cfg.vocab_size))
    if cfg.family == "decoder":
        inputs = [
            ids,
            TensorSpec("attention_mask", "int64", ("batch", "total_sequence")),
            TensorSpec("position_ids", "int64", ("batch", "sequence")),
            *_kv_specs("past_key_values", cfg.n_layers, ["key", "value"], cfg, "past_sequence"),
        ]
        outputs = [logits, *_kv_specs("present", cfg.n_layers, ["key", "value"], cfg, "total_sequence")]
        return [GraphPlan("model", DecoderGraph(model), inputs, outputs, sliding_window=sliding_window(cfg))]
    model = as_encoder_decoder(model)
    enc_hidden = TensorSpec("last_hidden_state", "float32", ("batch", "encoder_sequence", cfg.d_model))
    encoder = GraphPlan(
        "encoder",
        Seq2SeqEncoderGraph(model),
        [
            TensorSpec("input_ids", "int64", ("batch", "encoder_sequence"), high=cfg.vocab_size),
            TensorSpec("attention_mask", "int64", ("batch", "encoder_sequence")),
        ],
        [
            enc_hidden,
            *_kv_specs("present", cfg.decoder_layers, ["encoder.key", "encoder.value"], cfg, "encoder_sequence"),
        ],
    )
    caches = []
    for i in range(cfg.decoder_layers):
        caches += _kv_specs("past_key_values", 1, ["decoder.key", "decoder.value"], cfg, "past_sequence")
        caches += _kv_specs("past_key_values", 1, ["encoder.key", "encoder.value"], cfg, "encoder_sequence")
        caches[-4:] = [TensorSpec(s.name.replace(".0.", f".{i}.", 1), s.dtype, s.shape) for s in caches[-4:]]
    decoder = GraphPlan(
        "decoder",
        Seq2SeqDecoderGraph(model),
        [ids, TensorSpec("encoder_attention_mask", "int64", ("batch", "encoder_sequence")), *caches],
        [logits, *_kv_specs("present", cfg.decoder_layers, ["decoder.key", "decoder.value"], cfg, "total_sequence")],
    )
    return [encoder, decoder]


def derived_dims(dims: dict[str, int]) -> dict[str, int]:
    out = dict(dims)
    out["total_sequence"] = out.get("past_sequence", 0) + out.get("sequence", 0)
    return out


def make_inputs(plan: GraphPlan, dims: dict[str, int], seed: int = 0, pad: bool = True) -> dict[str, np.ndarray]:
    """Random inputs of the given dimension sizes. With ``pad`` and batch > 1, the last row is padded
    (right-padded for encoders, left-padded for decoder prompts), so masks are exercised."""
    rng = np.random.default_rng(seed)
    dims = derived_dims(dims)
    out: dict[str, np.ndarray] = {}
    for spec in plan.inputs:
        shape = tuple(d if isinstance(d, int) else dims[d] for d in spec.shape)
        if spec.high:
            out[spec.name] = rng.integers(0, spec.high, shape, dtype=np.int64)
        elif spec.dtype == "int64" and "mask" in spec.name:
            mask = np.ones(shape, dtype=np.int64)
            if pad and shape[0] > 1 and shape[1] > 2:
                if plan.left_pad:
                    mask[-1, : shape[1] // 3] = 0  # left padding of the last prompt
                else:
                    mask[-1, shape[1] - shape[1] // 3 :] = 0  # right padding
            out[spec.name] = mask
        elif spec.name == "position_ids" and "attention_mask" in out:
            mask = out["attention_mask"]
            pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
            out[spec.name] = pos[:, mask.shape[1] - shape[1] :].astype(np.int64)
        elif spec.dtype.startswith("int"):
            out[spec.name] = np.zeros(shape, dtype=spec.dtype)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return out


@torch.no_grad()
def run_torch(plan: GraphPlan, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    args = [torch.from_numpy(inputs[s.name]) for s in plan.inputs]
    outs = plan.module(*args)
    return {spec.name: t.detach().numpy() for spec, t in zip(plan.outputs, outs, strict=True)}
