"""DINO's projection head: MLP -> bottleneck -> L2-normalise -> weight-normalised prototypes."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslax.losses.common import l2_normalize


class WeightNormDense(nn.Module):
  """x [N, D] -> x @ (g V / ||V||) [N, K]: a bias-free weight-normalised Dense.

  Weight normalisation (Salimans & Kingma 2016): each of the K columns is its direction V / ||V||
  times a gain g. DINO's `norm_last_layer=True` (train_gain=False) fixes g to 1: only the
  direction is trained, and the forward pass normalises, so the gradient is the true gradient
  w.r.t. V. train_gain=True (`norm_last_layer=False`) trains g too, a `gain` param of shape
  [1, K] starting at 1: 2-D like the reference's weight_g [K, 1], so weight decay applies to
  it as there. The name of this module in DINOHead, `last_layer`, is what DINO freezes during
  the first epoch (direction and gain).
  """

  features: int
  train_gain: bool = False

  @nn.compact
  def __call__(self, x):
    direction = self.param(
      "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32
    )
    out = x.astype(jnp.float32) @ l2_normalize(direction, axis=0)
    if self.train_gain:
      out = out * self.param("gain", nn.initializers.ones, (1, self.features), jnp.float32)
    return out


class DINOHead(nn.Module):
  """features [N, F] -> logits [N, out_dim] over DINO's prototypes.

  (Dense -> GELU) x (num_layers - 1) -> Dense to `bottleneck_dim` -> L2-normalise ->
  WeightNormDense(out_dim) named `last_layer`. Dense weights start from a truncated normal of
  std 0.02 and zero biases, as in the reference. ImageNet: hidden 2048, bottleneck 256,
  65536 prototypes, no BatchNorm in the head (use_bn=False, the default for ViTs).
  norm_last_layer=False trains the last layer's weight-norm gain (see WeightNormDense).
  """

  out_dim: int = 65536
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  use_bn: bool = False
  norm_last_layer: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    dense = lambda features, name: nn.Dense(
      features,
      dtype=self.dtype,
      name=name,
      kernel_init=nn.initializers.truncated_normal(0.02),
      bias_init=nn.initializers.zeros,
    )
    for i in range(self.num_layers - 1):
      x = dense(self.hidden_dim, f"dense{i}")(x)
      if self.use_bn:
        x = nn.BatchNorm(
          use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=f"bn{i}"
        )(x)
      x = nn.gelu(x, approximate=False)
    x = dense(self.bottleneck_dim, "bottleneck")(x)
    x = l2_normalize(x.astype(jnp.float32))
    return WeightNormDense(self.out_dim, train_gain=not self.norm_last_layer, name="last_layer")(x)
