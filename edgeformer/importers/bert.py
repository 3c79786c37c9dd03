"""BERT (``model_type = "bert"``): BertModel, BertForMaskedLM, BertForSequenceClassification, and
the BertModel of a sentence-transformers directory.

The mapping: post-LN encoder (``norm = "post"``), learned positions, token-type embeddings (every
token of type 0: the graph takes ``input_ids`` and ``attention_mask`` only), a layer norm after the
embeddings, ``layer_norm_eps`` from config.json (1e-12). Heads: BertModel's pooler
``tanh(dense(h[:, 0]))`` is the embedding head with ``pooling = "pooler"``; the masked-LM head is
``lm_head_transform`` (dense, activation, layer norm) then the tied projection with a bias; the
sequence classifier is the pooler then ``classifier``. A sentence-transformers directory replaces
the pooler by its mean or CLS pooling and, when it has a Normalize module, L2-normalizes.
"""

from __future__ import annotations

from edgeformer.config import ModelConfig
from edgeformer.errors import ModelImportError
from edgeformer.importers.common import HFConfig, Naming, WeightMap, activation

MODEL_TYPES = ("bert",)
ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForPreTraining")
DEFAULT_ARCHITECTURE = "BertModel"

_NSP = (r"cls\.seq_relationship\..*", "the next-sentence head of pretraining is not part of this model")


def _gamma_beta(name: str) -> str:
    """TF-era checkpoints call layer-norm weight and bias ``gamma`` and ``beta``."""
    if name.endswith("LayerNorm.gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith("LayerNorm.beta"):
        return name[: -len("beta")] + "bias"
    return name


NAMING = Naming("bert.", ("cls.", "classifier."), _gamma_beta)


def config(
    hf: HFConfig, architecture: str, names: set[str], pooling: str | None = None, normalize: bool = False
) -> ModelConfig:
    """``pooling`` is a sentence-transformers directory's mean or cls pooling (None otherwise)."""
    hf.refuse("is_decoder", True, "edgeformer's encoder is bidirectional (BERT as a decoder is not imported)")
    hf.refuse("add_cross_attention", True, "an encoder with cross-attention has no edgeformer form")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ModelImportError(
            f"{hf.path}: position_embedding_type = {hf.get('position_embedding_type')!r} is not supported; "
            "edgeformer imports absolute learned positions"
        )
    vocab = hf.int("vocab_size")
    head, num_labels, cfg_pooling = "none", 0, "mean"
    if pooling is not None:
        head, cfg_pooling = "embedding", pooling
    elif architecture in ("BertForMaskedLM", "BertForPreTraining"):
        head = "lm"
    elif architecture == "BertForSequenceClassification":
        num_labels = hf.int("num_labels", len(hf.get("id2label", {})) or 2)
        if num_labels < 2:
            raise ModelImportError(
                f"{hf.path}: num_labels = {num_labels} (a regression head) is not supported; "
                "edgeformer's classification head needs at least 2 labels"
            )
        head, cfg_pooling = "classification", "pooler"
    elif "pooler.dense.weight" in names:  # BertModel with its pooler: pooler_output is the embedding
        head, cfg_pooling = "embedding", "pooler"
    return ModelConfig(
        family="encoder",
        vocab_size=vocab,
        d_model=hf.int("hidden_size"),
        n_heads=hf.int("num_attention_heads"),
        n_layers=hf.int("num_hidden_layers"),
        d_ff=hf.int("intermediate_size"),
        max_positions=hf.int("max_position_embeddings"),
        positions="learned",
        activation=activation(hf, "hidden_act"),
        norm="post",
        layer_norm_eps=hf.float("layer_norm_eps", 1e-12),
        embedding_norm=True,
        type_vocab_size=hf.int("type_vocab_size", 2),
        dropout=0.0,
        attention_dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        head=head,
        num_labels=num_labels,
        pooling=cfg_pooling,
        normalize_embeddings=normalize,
        lm_head_transform=head == "lm",
        lm_head_bias=head == "lm",
        pad_token_id=max(hf.token_id("pad_token_id", vocab), 0),
    )


def weights(cfg: ModelConfig, architecture: str) -> WeightMap:
    c, f, v = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    w = WeightMap(NAMING)
    w.tensor("embeddings.tokens.weight", "embeddings.word_embeddings.weight", (v, c))
    w.tensor("embeddings.positions.embedding.weight", "embeddings.position_embeddings.weight", (cfg.max_positions, c))
    w.tensor("embeddings.token_types.weight", "embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, c))
    w.norm("embeddings.norm", "embeddings.LayerNorm", c)
    for i in range(cfg.n_layers):
        ours, theirs = f"encoder.layers.{i}", f"encoder.layer.{i}"
        for proj, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            w.linear(f"{ours}.self_attn.{proj}", f"{theirs}.attention.self.{name}", c, c)
        w.linear(f"{ours}.self_attn.out_proj", f"{theirs}.attention.output.dense", c, c)
        w.norm(f"{ours}.self_norm", f"{theirs}.attention.output.LayerNorm", c)
        w.linear(f"{ours}.ffn.fc1", f"{theirs}.intermediate.dense", f, c)
        w.linear(f"{ours}.ffn.fc2", f"{theirs}.output.dense", c, f)
        w.norm(f"{ours}.ffn_norm", f"{theirs}.output.LayerNorm", c)
    if cfg.head in ("embedding", "classification") and cfg.pooling == "pooler":
        w.linear("pooler", "pooler.dense", c, c)
    else:
        w.ignore.append((r"pooler\.dense\..*", f"the pooler is not used ({cfg.head} head, {cfg.pooling} pooling)"))
    if cfg.head == "lm":
        w.linear("lm_transform.dense", "cls.predictions.transform.dense", c, c)
        w.norm("lm_transform.norm", "cls.predictions.transform.LayerNorm", c)
        w.tensor("lm_head.bias", "cls.predictions.bias", (v,))
        if not cfg.tie_embeddings:
            w.tensor("lm_head.weight", "cls.predictions.decoder.weight", (v, c))
        else:
            why = "tied to the word embeddings (Hugging Face ties it on load too)"
            w.ignore.append((r"cls\.predictions\.decoder\.weight", why))
        w.ignore.append((r"cls\.predictions\.decoder\.bias", "the same tensor as cls.predictions.bias"))
        w.ignore.append(_NSP)
    if cfg.head == "classification":
        w.linear("classifier", "classifier", cfg.num_labels, c)
    w.ignore.append((r"embeddings\.position_ids", "a buffer of 0..max_positions-1 (older checkpoints)"))
    return w
