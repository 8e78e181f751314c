"""DINO's projection head: MLP -> bottleneck -> L2-normalise -> weight-normalised prototypes."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslax.losses.common import l2_normalize


class WeightNormDense(nn.Module):
  """x [N, D] -> x @ (V / ||V||) [N, K]: a bias-free Dense whose K columns have unit norm.

  Weight normalisation (Salimans & Kingma 2016) with its gain g fixed to 1, as DINO's
  `norm_last_layer=True`: only the direction V is trained, and the forward pass normalises, so
  the gradient is the true gradient w.r.t. V. The name of this module in DINOHead,
  `last_layer`, is what DINO freezes during the first epoch.
  """

  features: int

  @nn.compact
  def __call__(self, x):
    direction = self.param(
      "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32
    )
    return x.astype(jnp.float32) @ l2_normalize(direction, axis=0)


class DINOHead(nn.Module):
  """features [N, F] -> logits [N, out_dim] over DINO's prototypes.

  (Dense -> GELU) x (num_layers - 1) -> Dense to `bottleneck_dim` -> L2-normalise ->
  WeightNormDense(out_dim) named `last_layer`. Dense weights start from a truncated normal of
  std 0.02 and zero biases, as in the reference. ImageNet: hidden 2048, bottleneck 256,
  65536 prototypes, no BatchNorm in the head (use_bn=False, the default for ViTs).
  """

  out_dim: int = 65536
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  use_bn: bool = False
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
    return WeightNormDense(self.out_dim, name="last_layer")(x)
