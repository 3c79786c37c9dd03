"""The Transformer family in torch: attention, layers, models, checkpoints and training."""

from edgeformer.nn.attention import MultiHeadAttention, scaled_dot_product_attention
from edgeformer.nn.models import DecoderModel, EncoderDecoderModel, EncoderModel, build_model

__all__ = [
    "DecoderModel",
    "EncoderDecoderModel",
    "EncoderModel",
    "MultiHeadAttention",
    "build_model",
    "scaled_dot_product_attention",
]
