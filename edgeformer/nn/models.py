"""Encoder (BERT-like), Decoder (GPT-like) and EncoderDecoder (the paper's), with their heads.

Outputs are dicts with Hugging Face names (``last_hidden_state``, ``logits``, ``embeddings``,
``present_key_values``) so that export can name graph outputs without a translation table.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from edgeformer.config import ModelConfig
from edgeformer.nn.attention import KV
from edgeformer.nn.layers import Block, Embeddings, LMHeadTransform
from edgeformer.nn.masks import PatternLike, SelfMask, cross_attention_mask


class Stack(nn.Module):
    """N identical layers; pre-LN stacks end in a final layer norm (GPT-2's ln_f)."""

    def __init__(self, cfg: ModelConfig, n_layers: int, *, cross: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg, cross=cross) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else None
        self.gradient_checkpointing = cfg.gradient_checkpointing

    def forward(
        self,
        x: Tensor,
        mask: SelfMask | Tensor | None,
        past: list[KV] | None = None,
        cross_kv: list[KV] | None = None,
        cross_mask: Tensor | None = None,
    ) -> tuple[Tensor, list[KV]]:
        presents: list[KV] = []
        for i, layer in enumerate(self.layers):
            layer_past = past[i] if past is not None else None
            layer_cross = cross_kv[i] if cross_kv is not None else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(layer, x, mask, layer_past, layer_cross, cross_mask, use_reentrant=False)
            else:
                x, kv = layer(x, mask, layer_past, layer_cross, cross_mask)
            presents.append(kv)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, presents


def _positions(input_ids: Tensor, past_len: int, attention_mask: Tensor | None) -> Tensor:
    """Position ids: counted over real tokens when a padding mask is given (left padding works)."""
    if attention_mask is None:
        t = input_ids.shape[1]
        return torch.arange(past_len, past_len + t, device=input_ids.device)[None].expand_as(input_ids)
    pos = attention_mask.long().cumsum(-1) - 1  # (B, Tpast + T)
    return pos.clamp(min=0)[:, past_len:]


def pool(hidden: Tensor, attention_mask: Tensor | None, how: str) -> Tensor:
    """(B, T, C) -> (B, C): mean over real tokens, or the first token."""
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    m = attention_mask.to(hidden.dtype)[:, :, None]  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class _Model(nn.Module):
    lm_head: nn.Linear | None  # set by each family (None: no language-model head)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.lm_transform: LMHeadTransform | None = None

    def _lm_head(self) -> nn.Linear:
        head = nn.Linear(self.config.d_model, self.config.vocab_size, bias=self.config.lm_head_bias)
        if self.config.tie_embeddings:
            head.weight = self.embeddings.tokens.weight
        self.lm_transform = LMHeadTransform(self.config) if self.config.lm_head_transform else None
        return head

    def _logits(self, head: nn.Linear, hidden: Tensor) -> Tensor:
        if self.lm_transform is not None:
            hidden = self.lm_transform(hidden)
        return head(hidden)  # (B, T, V)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)


class EncoderModel(_Model):
    """Bidirectional encoder. Heads: none, lm (masked LM), classification, embedding (pooled)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = Stack(cfg, cfg.n_layers)
        self.lm_head = self._lm_head() if cfg.head == "lm" else None
        self.classifier = nn.Linear(cfg.d_model, cfg.num_labels) if cfg.head == "classification" else None
        self.head_dropout = nn.Dropout(cfg.dropout)
        pooled = cfg.head in ("classification", "embedding") and cfg.pooling == "pooler"
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model) if pooled else None
        self._init_weights()

    def _pool(self, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        """(B, T, C) -> (B, C): mean, first token, or BERT's pooler tanh(dense(first token))."""
        if self.pooler is not None:
            return torch.tanh(self.pooler(hidden[:, 0]))
        return pool(hidden, attention_mask, self.config.pooling)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        b, t = input_ids.shape
        x = self.embeddings(input_ids, _positions(input_ids, 0, None))  # (B, T, C)
        mask = SelfMask(t, t, attention_mask, causal=False, device=x.device)
        hidden, _ = self.encoder(x, mask)
        out = {"last_hidden_state": hidden}
        if self.lm_head is not None:
            out["logits"] = self._logits(self.lm_head, hidden)  # (B, T, V)
        elif self.classifier is not None:
            pooled = self._pool(hidden, attention_mask)
            out["logits"] = self.classifier(self.head_dropout(pooled))  # (B, L)
        elif self.config.head == "embedding":
            pooled = self._pool(hidden, attention_mask)  # (B, C)
            out["embeddings"] = F.normalize(pooled, p=2.0, dim=-1) if self.config.normalize_embeddings else pooled
        return out


class DecoderModel(_Model):
    """Causal decoder with a language-model head and a KV cache for incremental decoding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.decoder = Stack(cfg, cfg.n_layers)
        self.lm_head = self._lm_head() if cfg.head != "none" else None
        self._init_weights()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: list[KV] | None = None,
    ) -> dict:
        """input_ids: (B, T); attention_mask: (B, Tpast + T); past_key_values: per layer (B, H, Tpast, D).
        A cache trimmed by ``window_cache`` needs ``position_ids`` (its length no longer counts the tokens)."""
        t = input_ids.shape[1]
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = _positions(input_ids, past_len, attention_mask)
        x = self.embeddings(input_ids, position_ids)  # (B, T, C)
        mask = SelfMask(t, past_len + t, attention_mask, causal=True, device=x.device)
        hidden, presents = self.decoder(x, mask, past_key_values)
        out: dict = {"last_hidden_state": hidden, "present_key_values": presents}
        if self.lm_head is not None:
            out["logits"] = self._logits(self.lm_head, hidden)  # (B, T, V)
        return out


def window_cache(past: list[KV], attention_mask: Tensor, cfg: PatternLike) -> tuple[list[KV], Tensor]:
    """A local decoder's cache cut to what its next queries can see: each row's first ``global_tokens``
    real tokens (slots in front, mask 0 for one still in the window) and the last window - 1 positions.
    ``attention_mask``: (B, Tpast + T), the cache's columns then the next tokens'. The runtime's sliding
    window (runtime/window.py) in torch; a cache no longer than that, or a non-local one, is returned as is."""
    length = past[0][0].shape[2] if past else 0
    g, keep = cfg.global_tokens, cfg.window - 1
    if cfg.attention != "local" or length <= g + keep:
        return past, attention_mask
    cut = length - keep
    columns, trimmed = [attention_mask[:, cut:]], []
    order = None
    if g:
        rank = attention_mask[:, :length].cumsum(-1)  # (B, Tpast)
        is_global = (attention_mask[:, :cut] > 0) & (rank[:, :cut] <= g)  # (B, cut)
        order = torch.argsort((~is_global).to(torch.int8), dim=1, stable=True)[:, :g]  # (B, G): global slots first
        columns.insert(0, is_global.gather(1, order).to(attention_mask.dtype))
    for kv in past:
        parts = [tuple(t[:, :, cut:] for t in kv)]  # (B, H, keep, D)
        if order is not None:
            index = order[:, None, :, None].expand(-1, kv[0].shape[1], -1, kv[0].shape[3])
            parts.insert(0, tuple(t.gather(2, index) for t in kv))  # (B, H, G, D)
        trimmed.append((torch.cat([p[0] for p in parts], 2), torch.cat([p[1] for p in parts], 2)))
    return trimmed, torch.cat(columns, dim=1)


class EncoderDecoderModel(_Model):
    """The paper's Transformer: encoder, causal decoder with cross-attention, shared embeddings
    (with ``share_positions = false`` the decoder has its own positions and embedding norm, BART)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        own = None if cfg.share_positions else Embeddings(cfg, tokens=self.embeddings.tokens)
        self.decoder_embeddings = own  # None: the decoder embeds with self.embeddings
        self.encoder = Stack(cfg, cfg.n_layers)
        self.decoder = Stack(cfg, cfg.decoder_layers, cross=True)
        self.lm_head = self._lm_head() if cfg.head != "none" else None
        self._init_weights()

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        t = input_ids.shape[1]
        x = self.embeddings(input_ids, _positions(input_ids, 0, None))  # (B, S, C)
        mask = SelfMask(t, t, attention_mask, causal=False, device=x.device)
        return self.encoder(x, mask)[0]

    def cross_key_values(self, memory: Tensor) -> list[KV]:
        """Keys and values of the encoder output for every decoder layer, computed once."""
        return [cast(Block, layer).cross_key_values(memory) for layer in self.decoder.layers]  # ModuleList: Modules

    def decode(
        self,
        decoder_input_ids: Tensor,
        cross_kv: list[KV],
        encoder_attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        past_key_values: list[KV] | None = None,
    ) -> dict:
        t = decoder_input_ids.shape[1]
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        positions = _positions(decoder_input_ids, past_len, decoder_attention_mask)
        embeddings = self.decoder_embeddings if self.decoder_embeddings is not None else self.embeddings
        x = embeddings(decoder_input_ids, positions)  # (B, T, C)
        mask = SelfMask(t, past_len + t, decoder_attention_mask, causal=True, device=x.device)
        hidden, presents = self.decoder(
            x, mask, past_key_values, cross_kv, cross_attention_mask(encoder_attention_mask)
        )
        out: dict = {"last_hidden_state": hidden, "present_key_values": presents}
        if self.lm_head is not None:
            out["logits"] = self._logits(self.lm_head, hidden)  # (B, T, V)
        return out

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
    ) -> dict:
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, self.cross_key_values(memory), attention_mask, decoder_attention_mask)


def as_encoder_decoder(model: nn.Module) -> EncoderDecoderModel:
    """``model`` as the EncoderDecoderModel an encoder-decoder card or import builds (TypeError if not)."""
    if not isinstance(model, EncoderDecoderModel):
        raise TypeError(f"an encoder-decoder card's model is an EncoderDecoderModel, got {type(model).__name__}")
    return model


def build_model(cfg: ModelConfig) -> EncoderModel | DecoderModel | EncoderDecoderModel:
    """The torch model a config describes, with fresh weights (call ``torch.manual_seed`` first)."""
    if cfg.family == "encoder":
        return EncoderModel(cfg)
    if cfg.family == "decoder":
        return DecoderModel(cfg)
    return EncoderDecoderModel(cfg)


def lm_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) targets."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)
