"""BART (``model_type = "bart"``): BartForConditionalGeneration, the encoder-decoder family.

Why BART rather than T5 or Marian: BART is edgeformer's encoder-decoder as it stands — post-LN
layers, learned absolute positions, exact GELU, biased projections, tied embeddings — plus four
options: positions read two rows further (``position_offset = 2``), a layer norm after the
embeddings, separate position tables for encoder and decoder (``share_positions = false``) and a
bias on the LM head (``final_logits_bias``). T5 needs relative position buckets added to every
attention score, RMS norm and unscaled attention: a different attention module, not options.
Marian would fit too (sinusoidal positions, but in Hugging Face's non-interleaved sin|cos layout,
and swish activation) and is left for a later importer.

Decoding starts from ``decoder_start_token_id`` (BART: 2, ``</s>``); edgeformer's encoder-decoder
starts from ``bos_token_id``, so that is where the start token goes.
"""

from __future__ import annotations

import torch

from edgeformer.config import ModelConfig
from edgeformer.errors import ModelImportError
from edgeformer.importers.common import HFConfig, Naming, Take, WeightMap, activation

MODEL_TYPES = ("bart",)
ARCHITECTURES = ("BartForConditionalGeneration",)
DEFAULT_ARCHITECTURE = "BartForConditionalGeneration"
POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding.offset


NAMING = Naming("model.", ("lm_head.", "final_logits_bias"))


def _same(hf: HFConfig, encoder_key: str, decoder_key: str) -> int:
    enc, dec = hf.int(encoder_key), hf.int(decoder_key)
    if enc != dec:
        raise ModelImportError(
            f"{hf.path}: {encoder_key} = {enc} but {decoder_key} = {dec}; edgeformer's encoder and decoder "
            "layers have the same width"
        )
    return enc


def config(hf: HFConfig, architecture: str, names: set[str]) -> ModelConfig:
    for key in ("normalize_before", "add_final_layer_norm"):  # mBART-style pre-LN configs
        hf.refuse(key, True, "BART is post-LN; a pre-LN variant (mBART) is not imported")
    vocab = hf.int("vocab_size")
    start = hf.token_id("decoder_start_token_id", vocab)
    if start < 0:
        raise ModelImportError(f"{hf.path}: decoder_start_token_id is missing; decoding needs a start token")
    return ModelConfig(
        family="encoder-decoder",
        vocab_size=vocab,
        d_model=hf.int("d_model"),
        n_heads=_same(hf, "encoder_attention_heads", "decoder_attention_heads"),
        n_layers=hf.int("encoder_layers"),
        n_decoder_layers=hf.int("decoder_layers"),
        d_ff=_same(hf, "encoder_ffn_dim", "decoder_ffn_dim"),
        max_positions=hf.int("max_position_embeddings"),
        positions="learned",
        position_offset=POSITION_OFFSET,
        share_positions=False,
        scale_embeddings=bool(hf.get("scale_embedding", False)),
        activation=activation(hf, "activation_function"),
        norm="post",
        layer_norm_eps=1e-5,  # BART's nn.LayerNorm default; config.json has no key for it
        embedding_norm=True,
        dropout=0.0,
        attention_dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        head="lm",
        lm_head_bias=True,
        pad_token_id=max(hf.token_id("pad_token_id", vocab), 0),
        bos_token_id=start,
        eos_token_id=hf.token_id("eos_token_id", vocab),
    )


def _attention(w: WeightMap, ours: str, theirs: str, c: int) -> None:
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        w.linear(f"{ours}.{proj}", f"{theirs}.{proj}", c, c)


def weights(cfg: ModelConfig, architecture: str) -> WeightMap:
    c, f, v = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    rows = cfg.max_positions + cfg.position_offset
    w = WeightMap(NAMING)
    w.tensor("embeddings.tokens.weight", "shared.weight", (v, c))
    for ours, side in (("embeddings", "encoder"), ("decoder_embeddings", "decoder")):
        w.tensor(f"{ours}.positions.embedding.weight", f"{side}.embed_positions.weight", (rows, c))
        w.norm(f"{ours}.norm", f"{side}.layernorm_embedding", c)
        w.ignore.append((rf"{side}\.embed_tokens\.weight", "tied to shared.weight (Hugging Face ties it on load too)"))
    for side, n_layers in (("encoder", cfg.n_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n_layers):
            ours, theirs = f"{side}.layers.{i}", f"{side}.layers.{i}"
            _attention(w, f"{ours}.self_attn", f"{theirs}.self_attn", c)
            w.norm(f"{ours}.self_norm", f"{theirs}.self_attn_layer_norm", c)
            if side == "decoder":
                _attention(w, f"{ours}.cross_attn", f"{theirs}.encoder_attn", c)
                w.norm(f"{ours}.cross_norm", f"{theirs}.encoder_attn_layer_norm", c)
            w.linear(f"{ours}.ffn.fc1", f"{theirs}.fc1", f, c)
            w.linear(f"{ours}.ffn.fc2", f"{theirs}.fc2", c, f)
            w.norm(f"{ours}.ffn_norm", f"{theirs}.final_layer_norm", c)
    # final_logits_bias is a (1, V) buffer; Hugging Face fills it with zeros when a checkpoint lacks it
    w.takes["lm_head.bias"] = Take("final_logits_bias", (1, v), lambda t: t.reshape(v), lambda: torch.zeros(v))
    if not cfg.tie_embeddings:
        w.tensor("lm_head.weight", "lm_head.weight", (v, c))
    else:
        w.ignore.append((r"lm_head\.weight", "tied to shared.weight (Hugging Face ties it on load too)"))
    return w
