"""Heads that sit on a backbone's pooled features."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ProjectionHead(nn.Module):
  """MLP projection head g(.) of SimCLR: (Linear -> BN -> ReLU) x (L-1) -> Linear [-> BN].

  SimCLR v1 uses 2 layers; v2 uses 3 and a BN on the output. Input [B, D_in] -> [B, out_dim].
  """

  hidden_dim: int = 2048
  out_dim: int = 128
  num_layers: int = 2
  use_bn: bool = True
  last_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    norm = lambda **kw: nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, **kw
    )
    for i in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, use_bias=not self.use_bn, dtype=self.dtype, name=f"dense{i}")(x)
      if self.use_bn:
        x = norm(name=f"bn{i}")(x)
      x = nn.relu(x)
    x = nn.Dense(self.out_dim, use_bias=not self.last_bn, dtype=self.dtype, name="out")(x)
    if self.last_bn:
      x = norm(use_scale=False, use_bias=False, name="out_bn")(x)
    return x.astype(jnp.float32)


class BackboneWithHead(nn.Module):
  """images [B, H, W, C] -> (backbone features [B, F], head(features) [B, D]).

  The network of SimCLR and of MoCo's query/key encoders; `backbone` is what evaluation and
  export use.
  """

  backbone: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = True):
    features = self.backbone(x, train=train)
    return features, self.head(features, train=train)
