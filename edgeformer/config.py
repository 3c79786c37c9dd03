"""Model cards: the ModelConfig dataclass, TOML loading and validation.

A model card is one TOML file. Top-level keys describe the card (name, description, checkpoint,
metrics); the ``[model]`` table is the architecture and maps one-to-one onto ``ModelConfig``::

    name = "bert-mini"
    description = "Edge-sized BERT-like encoder used by the tests."

    [model]
    family = "encoder"
    vocab_size = 256
    d_model = 128
    n_heads = 8
    n_layers = 2

Every mistake is reported as a ``CardError`` whose message names the offending key.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeformer import safe_read
from edgeformer.budget import BUDGET_METRICS, budget_problem
from edgeformer.errors import CardError
from edgeformer.numbers import finite_number

FAMILIES = ("encoder", "decoder", "encoder-decoder")
POSITIONS = ("sinusoidal", "learned")
ATTENTION = ("global", "local", "sparse")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh")  # gelu is exact (erf); gelu_tanh is GPT-2's "gelu_new"
NORMS = ("pre", "post")
HEADS = ("none", "lm", "classification", "embedding")
POOLING = ("mean", "cls", "pooler")  # pooler: tanh(dense(first token)), BERT's pooler


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one Transformer. Defaults follow "Attention Is All You Need" (base)."""

    family: str
    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    n_decoder_layers: int = 0  # encoder-decoder only; 0 means "same as n_layers"
    d_ff: int = 0  # 0 means 4 * d_model
    max_positions: int = 512
    positions: str = "sinusoidal"
    attention: str = "global"
    window: int = 0  # local: a query sees keys at distance < window
    sparse_stride: int = 0  # sparse: local band of `stride` plus every stride-th earlier key
    global_tokens: int = 0  # sparse/local: the first N positions see and are seen by all
    activation: str = "relu"
    norm: str = "post"
    layer_norm_eps: float = 1e-5
    embedding_norm: bool = False  # LayerNorm after embeddings (BERT); pre-LN stacks end in a final norm
    scale_embeddings: bool = False  # token embeddings times sqrt(d_model) (the paper; BART's scale_embedding)
    position_offset: int = 0  # learned table has max_positions + offset rows; position p reads row p + offset (BART: 2)
    type_vocab_size: int = 0  # token-type (segment) embeddings; every token gets type 0 (BERT: 2)
    share_positions: bool = True  # encoder-decoder: False gives the decoder its own positions and embedding norm
    dropout: float = 0.1
    attention_dropout: float = 0.0
    tie_embeddings: bool = True
    head: str = "none"
    num_labels: int = 0
    pooling: str = "mean"
    normalize_embeddings: bool = False  # embedding head: L2-normalized (sentence-transformers' Normalize)
    lm_head_transform: bool = False  # dense, activation, layer norm before the LM projection (BERT's MLM head)
    lm_head_bias: bool = False  # a bias on the LM projection (BERT's MLM head, BART's final_logits_bias)
    pad_token_id: int = 0
    bos_token_id: int = -1
    eos_token_id: int = -1
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        validate(self)

    @property
    def ffn_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers or self.n_layers

    @property
    def is_causal(self) -> bool:
        return self.family == "decoder"

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise CardError(f"[model].{key}: {message}")


# Upper bounds on every count: several times the largest published models (d_model 16384, 126
# layers, vocabularies of 256k, contexts of 1M), so a card is refused in microseconds rather than
# after minutes of allocation. The memory estimate (edgeformer.limits) then judges the machine.
COUNT_LIMITS = {
    "vocab_size": 1 << 24,
    "d_model": 1 << 16,
    "n_heads": 1 << 12,
    "n_layers": 1 << 10,
    "n_decoder_layers": 1 << 10,
    "d_ff": 1 << 18,
    "max_positions": 1 << 20,
    "window": 1 << 20,
    "sparse_stride": 1 << 20,
    "global_tokens": 1 << 20,
    "num_labels": 1 << 20,
    "position_offset": 1 << 16,
    "type_vocab_size": 1 << 16,
}
POSITIVE_COUNTS = ("vocab_size", "d_model", "n_heads", "n_layers", "max_positions")


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: object) -> bool:
    """A finite int or float (not a bool): NaN, the infinities and integers too large for a float
    fail every range check."""
    return finite_number(value)


def _check_counts(cfg: ModelConfig) -> None:
    for key, limit in COUNT_LIMITS.items():
        value = getattr(cfg, key)
        low = 1 if key in POSITIVE_COUNTS else 0
        _check(
            _integer(value) and low <= value <= limit,
            key,
            f"must be an integer from {low} to {limit:,}, got {value!r:.40}",
        )


def validate(cfg: ModelConfig) -> None:
    """Refuse an impossible architecture with a message naming the key."""
    for key, choices in (
        ("family", FAMILIES),
        ("positions", POSITIONS),
        ("attention", ATTENTION),
        ("activation", ACTIVATIONS),
        ("norm", NORMS),
        ("head", HEADS),
        ("pooling", POOLING),
    ):
        value = getattr(cfg, key)
        _check(value in choices, key, f"{value!r} is not one of {', '.join(choices)}")
    _check_counts(cfg)
    _check(
        cfg.d_model % cfg.n_heads == 0,
        "n_heads",
        f"{cfg.n_heads} heads do not divide d_model = {cfg.d_model}",
    )
    for key in ("dropout", "attention_dropout"):
        value = getattr(cfg, key)
        _check(_real(value) and 0.0 <= value < 1.0, key, f"must be a number in [0, 1), got {value!r:.40}")
    _check(
        _real(cfg.layer_norm_eps) and 0.0 < cfg.layer_norm_eps < 1.0,
        "layer_norm_eps",
        f"must be a finite number with 0 < eps < 1 (1e-5 or 1e-12 are usual), got {cfg.layer_norm_eps!r:.40}",
    )
    if cfg.attention == "local":
        _check(cfg.window >= 1, "window", f"local attention needs window >= 1, got {cfg.window}")
    if cfg.attention == "sparse":
        _check(
            cfg.sparse_stride >= 1,
            "sparse_stride",
            f"sparse attention needs sparse_stride >= 1, got {cfg.sparse_stride}",
        )
    _check(
        cfg.global_tokens < cfg.max_positions,
        "global_tokens",
        f"{cfg.global_tokens} global tokens do not fit in max_positions = {cfg.max_positions}",
    )
    if cfg.head == "classification":
        _check(cfg.num_labels >= 2, "num_labels", f"a classification head needs num_labels >= 2, got {cfg.num_labels}")
    if cfg.family == "decoder":
        _check(cfg.head in ("none", "lm"), "head", f"a decoder takes head 'lm' or 'none', got {cfg.head!r}")
    if cfg.family == "encoder-decoder":
        _check(cfg.head in ("none", "lm"), "head", f"an encoder-decoder takes head 'lm' or 'none', got {cfg.head!r}")
    else:
        _check(cfg.n_decoder_layers == 0, "n_decoder_layers", "only an encoder-decoder has separate decoder layers")
        _check(cfg.share_positions, "share_positions", "only an encoder-decoder has separate decoder positions")
    if cfg.normalize_embeddings:
        _check(cfg.head == "embedding", "normalize_embeddings", f"needs head 'embedding', got {cfg.head!r}")
    for key in ("lm_head_transform", "lm_head_bias"):
        if getattr(cfg, key):
            _check(cfg.head == "lm", key, f"needs head 'lm', got {cfg.head!r}")
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(cfg, key)
        _check(
            _integer(value) and -1 <= value < cfg.vocab_size,
            key,
            f"{value!r:.40} is outside the vocabulary (size {cfg.vocab_size})",
        )


CARD_KEYS = {"name", "description", "checkpoint", "checkpoint_sha256", "tokenizer", "metrics", "training", "model"}
MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}
_TYPE_OF: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}
_TYPES = {f.name: _TYPE_OF[str(f.type)] for f in dataclasses.fields(ModelConfig)}


@dataclass(frozen=True)
class ModelCard:
    """A named model: its architecture plus where its weights live and what it scored."""

    name: str
    config: ModelConfig
    description: str = ""
    checkpoint: Path | None = None
    checkpoint_sha256: str = ""
    tokenizer: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


MAX_NAME_CHARS = 100


def check_card_name(name: object, where: str = "card") -> str:
    """A card's name chooses default output paths (``./<name>-<target>``, ``./<name>.toml``): it
    must be a plain name, not a path. Refuses (CardError, naming the rule) an empty name, ``.`` and
    ``..``, a name with ``/``, ``\\``, NUL or another control character, or one over 100 characters."""
    if not isinstance(name, str) or not name:
        raise CardError(f"{where}: key 'name' is missing or not a string")
    shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
    if len(name) > MAX_NAME_CHARS:
        raise CardError(f"{where}: name {shown} is {len(name)} characters; a name has at most {MAX_NAME_CHARS}")
    if name in (".", ".."):
        raise CardError(f"{where}: name {shown} is not a name; choose a plain name like 'my-model'")
    if "/" in name or "\\" in name:
        raise CardError(f"{where}: name {shown} contains a path separator; a name is not a path (use e.g. 'my-model')")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise CardError(f"{where}: name {shown} contains a control character (NUL, newline...); use a plain name")
    return name


def parse_card(data: dict[str, Any], *, source: str = "<card>", base_dir: Path | None = None) -> ModelCard:
    unknown = sorted(set(data) - CARD_KEYS)
    if unknown:
        raise CardError(f"{source}: unknown key {unknown[0]!r}; a card takes {', '.join(sorted(CARD_KEYS))}")
    check_card_name(data.get("name"), source)
    model = data.get("model")
    if not isinstance(model, dict):
        raise CardError(f"{source}: the [model] table is missing")
    unknown = sorted(set(model) - MODEL_KEYS)
    if unknown:
        raise CardError(f"{source}: unknown key [model].{unknown[0]}; known keys: {', '.join(sorted(MODEL_KEYS))}")
    for key in ("family", "vocab_size", "d_model", "n_heads", "n_layers"):
        if key not in model:
            raise CardError(f"{source}: required key [model].{key} is missing")
    for key, value in model.items():
        expected = _TYPES[key]
        if isinstance(value, bool) and expected is not bool:
            raise CardError(f"{source}: [model].{key} must be {_type_name(expected)}, got {value!r}")
        if not isinstance(value, expected):
            raise CardError(f"{source}: [model].{key} must be {_type_name(expected)}, got {value!r}")
    try:
        config = ModelConfig(**model)
    except CardError as exc:
        raise CardError(f"{source}: {exc}") from None
    for key in ("metrics", "training"):
        if key in data and not isinstance(data[key], dict):
            raise CardError(f"{source}: [{key}] must be a table")
    checkpoint = data.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise CardError(f"{source}: key 'checkpoint' must be a path string")
    return ModelCard(
        name=data["name"],
        config=config,
        description=str(data.get("description", "")),
        checkpoint=(base_dir / checkpoint if base_dir else Path(checkpoint)) if checkpoint else None,
        checkpoint_sha256=str(data.get("checkpoint_sha256", "")),
        tokenizer=str(data.get("tokenizer", "")),
        metrics=dict(data.get("metrics", {})),
        training=dict(data.get("training", {})),
    )


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return "a number"
    return {int: "an integer", str: "a string", bool: "true or false"}.get(expected, expected.__name__)


CARD_BYTES = 4 << 20  # a card or target is a few kilobytes; a file claiming to be one may not be larger


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    """A card or target file as TOML data, through safe_read: special files, huge files, deep
    nesting, unusable names (too long, NUL) and OSErrors all become a CardError naming the file."""
    return safe_read.read_toml(path, what=what, error=CardError, max_bytes=CARD_BYTES)


def load_card(path: str | Path) -> ModelCard:
    """Load and validate one card file (after finishing or undoing an import that a kill
    interrupted beside it: ``io.repair_groups``)."""
    from edgeformer.io import repair_groups

    path = Path(path)
    repair_groups(path.parent)
    data = _read_toml(path, "card")
    card = parse_card(data, source=str(path), base_dir=path.parent)
    return dataclasses.replace(card, path=path)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON's string escapes are TOML's; TOML also wants DEL escaped
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def render_card(card: ModelCard) -> str:
    """The card as TOML, [model] holding only the keys that differ from the defaults."""
    lines = [f"name = {_toml_value(card.name)}"]
    if card.description:
        lines.append(f"description = {_toml_value(card.description)}")
    if card.checkpoint is not None:
        lines.append(f"checkpoint = {_toml_value(card.checkpoint.name)}")
    if card.checkpoint_sha256:
        lines.append(f"checkpoint_sha256 = {_toml_value(card.checkpoint_sha256)}")
    if card.tokenizer:
        lines.append(f"tokenizer = {_toml_value(card.tokenizer)}")
    model = card.config.to_dict()
    required = ("family", "vocab_size", "d_model", "n_heads", "n_layers")
    tables = {
        "model": {k: v for k, v in model.items() if k in required or v != _DEFAULTS[k]},
        "training": card.training,
        "metrics": card.metrics,
    }
    for table, values in tables.items():
        if values:
            lines += ["", f"[{table}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


# ----- deployment targets (export/*.toml) ---------------------------------------------------------

PRECISIONS = ("fp32", "int8", "fp16", "int4")
QUANTIZATION_MODES = ("dynamic", "static")
REDUCED_PRECISIONS = ("int8", "int4", "fp16")  # PRECISIONS less fp32, in the order `edgeformer quantize` lists them
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # static int8: activations to ranges
TARGET_KEYS = {
    "name", "description", "precision", "opset", "providers", "fusions", "quantization", "budget",
    "static_shapes", "ort_format", "ort_optimization",
}  # fmt: skip
# the bundle dimensions a static-shape target may fix (edgeformer.export.graphs)
STATIC_SIZE_LIMIT = 1 << 20  # a fixed batch or sequence size; more would not fit any device
STATIC_DIMS = ("batch", "sequence", "encoder_sequence", "past_sequence", "total_sequence")
ORT_OPTIMIZATIONS = ("basic", "extended", "all")  # onnxruntime's levels for the saved .ort graph
FUSION_FORMS = ("none", "contrib", "standard", "nnapi", "coreml", "qnn")
FUSED_FORMS = tuple(f for f in FUSION_FORMS if f != "none")  # what `edgeformer fuse --form` produces


@dataclass(frozen=True)
class Target:
    """Where a bundle is meant to run: precision, ONNX opset, execution providers, fusion form."""

    name: str
    description: str = ""
    precision: str = "fp32"
    opset: int = 18
    providers: tuple[str, ...] = ("cpu",)
    fusions: str = "none"
    quantization: str = "dynamic"  # int8 only: dynamic, or static (QDQ, needs calibration data)
    budget: tuple[tuple[str, float], ...] = ()  # accuracy budget of a reduced precision, e.g. cosine 0.999
    static_shapes: tuple[tuple[str, int], ...] = ()  # dimension name -> fixed size (NNAPI, CoreML, QNN)
    ort_format: bool = False  # also write <graph>.ort and required_operators.config (onnxruntime mobile/web)
    ort_optimization: str = "basic"  # onnxruntime's optimization level baked into the .ort graph
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["providers"] = list(self.providers)
        d["budget"] = dict(self.budget)
        d["static_shapes"] = dict(self.static_shapes)
        d.pop("path")
        return d


def parse_target(data: dict[str, Any], *, source: str = "<target>") -> Target:
    unknown = sorted(set(data) - TARGET_KEYS)
    if unknown:
        raise CardError(f"{source}: unknown key {unknown[0]!r}; a target takes {', '.join(sorted(TARGET_KEYS))}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise CardError(f"{source}: key 'name' is missing or not a string")
    precision = data.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise CardError(f"{source}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    opset = data.get("opset", 18)
    if isinstance(opset, bool) or not isinstance(opset, int) or not 17 <= opset <= 23:
        raise CardError(f"{source}: opset must be an integer from 17 to 23, got {opset!r}")
    providers = data.get("providers", ["cpu"])
    if not isinstance(providers, list) or not providers or not all(isinstance(p, str) for p in providers):
        raise CardError(f"{source}: providers must be a non-empty list of names, got {providers!r}")
    fusions = data.get("fusions", "none")
    if fusions not in FUSION_FORMS:
        raise CardError(f"{source}: fusions {fusions!r} is not one of {', '.join(FUSION_FORMS)}")
    quantization = data.get("quantization", "dynamic")
    if quantization not in QUANTIZATION_MODES:
        raise CardError(f"{source}: quantization {quantization!r} is not one of {', '.join(QUANTIZATION_MODES)}")
    budget = data.get("budget", {})
    if not isinstance(budget, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in budget.values()
    ):
        raise CardError(f"{source}: budget must be a table of metric = number, got {budget!r}")
    unknown_metrics = sorted(set(budget) - set(BUDGET_METRICS))
    if unknown_metrics:
        raise CardError(f"{source}: budget metric {unknown_metrics[0]!r} is not one of {', '.join(BUDGET_METRICS)}")
    problems = [p for p in (budget_problem(k, v) for k, v in budget.items()) if p]
    if problems:
        raise CardError(f"{source}: budget {problems[0]}")
    static = data.get("static_shapes", {})
    if not isinstance(static, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= STATIC_SIZE_LIMIT for v in static.values()
    ):
        raise CardError(
            f"{source}: static_shapes must be a table of dimension = size from 1 to {STATIC_SIZE_LIMIT:,}, "
            f"got {static!r:.80}"
        )
    unknown_dims = sorted(set(static) - set(STATIC_DIMS))
    if unknown_dims:
        raise CardError(f"{source}: static_shapes dimension {unknown_dims[0]!r} is not one of {', '.join(STATIC_DIMS)}")
    ort_format = data.get("ort_format", False)
    if not isinstance(ort_format, bool):
        raise CardError(f"{source}: ort_format must be true or false, got {ort_format!r:.40}")
    ort_optimization = data.get("ort_optimization", "basic")
    if ort_optimization not in ORT_OPTIMIZATIONS:
        raise CardError(
            f"{source}: ort_optimization {ort_optimization!r:.40} is not one of {', '.join(ORT_OPTIMIZATIONS)}"
        )
    return Target(
        name=data["name"],
        description=str(data.get("description", "")),
        precision=precision,
        opset=opset,
        providers=tuple(providers),
        fusions=fusions,
        quantization=quantization,
        budget=tuple(sorted((k, float(v)) for k, v in budget.items())),
        static_shapes=tuple(static.items()),
        ort_format=ort_format,
        ort_optimization=ort_optimization,
    )


def load_target(path: str | Path) -> Target:
    path = Path(path)
    data = _read_toml(path, "target")
    return dataclasses.replace(parse_target(data, source=str(path)), path=path)
