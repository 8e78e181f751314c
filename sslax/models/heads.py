"""Heads that sit on a backbone's pooled features."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ProjectionHead(nn.Module):
  """MLP head on pooled features: (Linear -> BN -> ReLU) x (L-1) -> Linear [-> BN].

  Input [B, D_in] -> [B, out_dim]. Params: `dense{i}` (+ `bn{i}`) per hidden layer, `out`
  (+ `out_bn`). Each reference fixes which Linear has a bias and what the last BN learns:

    hidden_bias: a bias on the hidden Linears; None: only where no BN follows. BYOL's haiku
      `MLP` and VICReg's `Projector` keep it before their BN; SimCLR, MoCo v3, SimSiam and
      Barlow Twins do not.
    out_bias: a bias on the output Linear; None: only without a last BN. BYOL, MoCo v3,
      Barlow Twins and VICReg end in a bias-free Linear.
    last_bn: a BatchNorm on the output, with a learned scale (gamma) if `last_bn_scale` and a
      learned shift (beta) if `last_bn_bias`. MoCo v3 and SimSiam: neither (affine=False);
      SimCLR (v1 and v2, `projection_head`): a scale but no centre.
  """

  hidden_dim: int = 2048
  out_dim: int = 128
  num_layers: int = 2
  use_bn: bool = True
  last_bn: bool = False
  hidden_bias: bool | None = None
  out_bias: bool | None = None
  last_bn_scale: bool = False
  last_bn_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    if (self.last_bn_scale or self.last_bn_bias) and not self.last_bn:
      raise ValueError("ProjectionHead: last_bn_scale / last_bn_bias need last_bn=True.")
    hidden_bias = not self.use_bn if self.hidden_bias is None else self.hidden_bias
    out_bias = not self.last_bn if self.out_bias is None else self.out_bias
    norm = lambda **kw: nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, **kw
    )
    for i in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, use_bias=hidden_bias, dtype=self.dtype, name=f"dense{i}")(x)
      if self.use_bn:
        x = norm(name=f"bn{i}")(x)
      x = nn.relu(x)
    x = nn.Dense(self.out_dim, use_bias=out_bias, dtype=self.dtype, name="out")(x)
    if self.last_bn:
      x = norm(use_scale=self.last_bn_scale, use_bias=self.last_bn_bias, name="out_bn")(x)
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
