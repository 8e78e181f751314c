"""Text transformer of the image-text methods (CLIP's text tower, Radford et al. 2021, sec. 2.4).

Token ids [B, L] -> embedding + learned positions -> `depth` pre-LayerNorm blocks (multi-head
self-attention, causal like CLIP or bidirectional; GELU MLP) -> LayerNorm -> pooled [B, width]:
at the end-of-text token (CLIP) or the mean over the non-padding tokens.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslax.data import text as text_lib

POOLINGS = ("eot", "mean")


class TextBlock(nn.Module):
  width: int
  heads: int
  mlp_ratio: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype)(y, y, mask=mask)
    x = x + y
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.Dense(self.mlp_ratio * self.width, dtype=self.dtype)(y)
    y = nn.Dense(self.width, dtype=self.dtype)(nn.gelu(y))
    return x + y


class TextTransformer(nn.Module):
  """tokens int32 [B, L] (ids of `sslax.data.text`) -> features [B, width] float32."""

  vocab_size: int = text_lib.VOCAB_SIZE
  context_length: int = 77
  width: int = 512
  depth: int = 12
  heads: int = 8
  causal: bool = True
  pooling: str = "eot"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, train: bool = True):
    del train  # no dropout / batch statistics
    b, length = tokens.shape
    if length > self.context_length:
      raise ValueError(
        f"tokens have length {length} > context_length {self.context_length}; "
        f"cut them with sslax.data.text.fit_context."
      )
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling={self.pooling!r}; choose one of {POOLINGS}.")
    x = nn.Embed(
      self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02), name="token_embed"
    )(tokens)
    pos = self.param("pos_embed", nn.initializers.normal(0.01), (self.context_length, self.width))
    x = (x + pos[:length]).astype(self.dtype)
    valid = tokens != text_lib.PAD  # [B, L]
    # Padding keys are masked out; with a causal mask every real query still sees itself.
    mask = nn.make_attention_mask(jnp.ones_like(valid), valid)
    if self.causal:
      mask = nn.combine_masks(mask, nn.make_causal_mask(tokens))
    for i in range(self.depth):
      x = TextBlock(self.width, self.heads, dtype=self.dtype, name=f"block{i}")(x, mask)
    x = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x).astype(jnp.float32)
    if self.pooling == "eot":
      # The first EOT (the last token kept if a caption was cut without one).
      has_eot = jnp.any(tokens == text_lib.EOT, axis=1)
      where = jnp.where(has_eot, jnp.argmax(tokens == text_lib.EOT, axis=1), length - 1)
      return x[jnp.arange(b), where]
    weights = valid.astype(jnp.float32)[..., None]
    return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
