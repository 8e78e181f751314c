"""MAE's lightweight decoder: visible latents + mask tokens -> pixels of every patch."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslax.models.vit import Encoder, sincos_2d


class MAEDecoder(nn.Module):
  """latent [B, P + K, D_enc] (P = num_prefix_tokens: class token, registers) -> predictions
  [B, N, p*p*C].

  Projects the encoder's visible tokens to the decoder width, appends a shared learned mask
  token for each of the N - K masked patches, unshuffles with `restore_ids`, adds fixed 2D
  sin-cos position embeddings of its own, and runs `depth` transformer blocks. The prefix
  tokens (the class token and registers the encoder has) take part in attention and are dropped
  from the output.
  """

  width: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_dim: int = 0  # 0 = 4 * width
  num_prefix_tokens: int = 1  # encoder tokens before the patches (class token, registers)
  remat_policy: str = "none"
  attention: str = "xla"  # vit.ATTENTIONS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latent, restore_ids, grid: tuple[int, int], patch_dim: int):
    """latent [B, P + K, D]; restore_ids [B, N] int; grid (h, w) patches with h * w = N;
    patch_dim = p * p * C pixels per patch."""
    x = nn.Dense(
      self.width, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="embed"
    )(latent)
    first = self.num_prefix_tokens
    prefix, visible = x[:, :first], x[:, first:]
    b, k, _ = visible.shape
    n = restore_ids.shape[1]
    mask_token = self.param(
      "mask_token", nn.initializers.normal(0.02), (1, 1, self.width), jnp.float32
    )
    tokens = jnp.concatenate(
      [visible, jnp.broadcast_to(mask_token.astype(x.dtype), (b, n - k, self.width))], axis=1
    )
    tokens = jnp.take_along_axis(tokens, restore_ids[:, :, None], axis=1)  # image order
    tokens = tokens + jnp.asarray(sincos_2d(*grid, self.width))[None].astype(x.dtype)
    x = jnp.concatenate([prefix, tokens], axis=1)
    x = Encoder(
      self.depth,
      self.num_heads,
      self.mlp_dim or 4 * self.width,
      dtype=self.dtype,
      remat_policy=self.remat_policy,
      attention=self.attention,
      name="blocks",
    )(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    pred = nn.Dense(
      patch_dim, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="pred"
    )(x[:, first:])
    return pred.astype(jnp.float32)
