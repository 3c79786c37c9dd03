"""GPT-2 (``model_type = "gpt2"``): GPT2LMHeadModel, and GPT2Model with the tied head it implies.

The mapping: pre-LN decoder (``norm = "pre"``, so the stack ends in ``ln_f``), learned positions,
tanh-approximated GELU (``gelu_new``), ``layer_norm_epsilon``, LM head tied to ``wte``. GPT-2's
Conv1D stores weights as (in, out): they are transposed into nn.Linear's (out, in), and the fused
``c_attn`` projection is split into query, key and value.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from edgeformer.config import ModelConfig
from edgeformer.importers.common import HFConfig, Naming, Take, WeightMap, activation

MODEL_TYPES = ("gpt2",)
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
DEFAULT_ARCHITECTURE = "GPT2LMHeadModel"


NAMING = Naming("transformer.", ("lm_head.",))


def config(hf: HFConfig, architecture: str, names: set[str]) -> ModelConfig:
    hf.refuse("scale_attn_weights", False, "edgeformer's attention always scales scores by 1/sqrt(head_dim)")
    hf.refuse("scale_attn_by_inverse_layer_idx", True, "edgeformer's attention has no per-layer score scale")
    hf.refuse("add_cross_attention", True, "a GPT-2 with cross-attention has no edgeformer form")
    vocab = hf.int("vocab_size")
    d = hf.int("n_embd")
    eos = hf.token_id("eos_token_id", vocab)
    pad = hf.token_id("pad_token_id", vocab)
    return ModelConfig(
        family="decoder",
        vocab_size=vocab,
        d_model=d,
        n_heads=hf.int("n_head"),
        n_layers=hf.int("n_layer"),
        d_ff=hf.int("n_inner", 4 * d),
        max_positions=hf.int("n_positions"),
        positions="learned",
        activation=activation(hf, "activation_function"),
        norm="pre",
        layer_norm_eps=hf.float("layer_norm_epsilon", 1e-5),
        dropout=0.0,
        attention_dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)) or architecture == "GPT2Model",
        head="lm",
        pad_token_id=pad if pad >= 0 else max(eos, 0),  # padding is masked; any id in the vocabulary does
        bos_token_id=hf.token_id("bos_token_id", vocab),
        eos_token_id=eos,
    )


def _transposed(t: Tensor) -> Tensor:
    return t.t()


def _part(i: int, c: int, *, weight: bool) -> Callable[[Tensor], Tensor]:
    """Query (0), key (1) or value (2) of c_attn: columns i*c .. (i+1)*c of (c, 3c), as (out, in)."""
    if weight:
        return lambda t: t[:, i * c : (i + 1) * c].t()
    return lambda t: t[i * c : (i + 1) * c]


def weights(cfg: ModelConfig, architecture: str) -> WeightMap:
    c, f, v = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    w = WeightMap(NAMING)
    w.tensor("embeddings.tokens.weight", "wte.weight", (v, c))
    w.tensor("embeddings.positions.embedding.weight", "wpe.weight", (cfg.max_positions, c))
    for i in range(cfg.n_layers):
        ours, theirs = f"decoder.layers.{i}", f"h.{i}"
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            w.takes[f"{ours}.self_attn.{proj}.weight"] = Take(
                f"{theirs}.attn.c_attn.weight", (c, 3 * c), _part(j, c, weight=True)
            )
            w.takes[f"{ours}.self_attn.{proj}.bias"] = Take(
                f"{theirs}.attn.c_attn.bias", (3 * c,), _part(j, c, weight=False)
            )
        for ours_name, theirs_name, d_in, d_out in (
            ("self_attn.out_proj", "attn.c_proj", c, c),
            ("ffn.fc1", "mlp.c_fc", c, f),
            ("ffn.fc2", "mlp.c_proj", f, c),
        ):
            w.takes[f"{ours}.{ours_name}.weight"] = Take(f"{theirs}.{theirs_name}.weight", (d_in, d_out), _transposed)
            w.takes[f"{ours}.{ours_name}.bias"] = Take(f"{theirs}.{theirs_name}.bias", (d_out,))
        w.norm(f"{ours}.self_norm", f"{theirs}.ln_1", c)
        w.norm(f"{ours}.ffn_norm", f"{theirs}.ln_2", c)
    w.norm("decoder.final_norm", "ln_f", c)
    if not cfg.tie_embeddings:
        w.tensor("lm_head.weight", "lm_head.weight", (v, c))
    else:
        w.ignore.append((r"lm_head\.weight", "tied to wte (Hugging Face ties it on load too)"))
    w.ignore.append((r"h\.\d+\.attn\.(bias|masked_bias)", "the causal-mask buffers of older checkpoints"))
    return w
