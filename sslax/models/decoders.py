"""Dense-prediction pieces for the pixel pretext tasks (colorization, inpainting).

Backbones return pooled features [B, D] (what evaluation and export use). Pixel tasks also
need the spatial map the pooling was taken from: `backbone_with_feature_map` runs the
backbone once and captures, with `flax.linen.intercept_methods`, the last 4-D [B, h, w, C]
output any of its submodules produced (for the ResNets: the last residual block, i.e. the
map just before global average pooling). No backbone needs to know about it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def backbone_with_feature_map(backbone: nn.Module, x: jax.Array, train: bool):
  """-> (pooled features [B, D], last spatial map [B, h, w, C]) from one backbone call."""
  maps = []

  def capture(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and getattr(out, "ndim", 0) == 4:
      maps.append(out)
    return out

  with nn.intercept_methods(capture):
    features = backbone(x, train=train)
  if not maps:
    raise ValueError(
      f"backbone {type(backbone).__name__} produced no 4-D feature map; the "
      "pixel pretext tasks need a convolutional backbone (model.name='resnet')."
    )
  return features, maps[-1]


class UpsamplingDecoder(nn.Module):
  """Feature map [B, h, w, C] -> [B, H, W, out_channels].

  out_channels=0: as many as `image_channels` passed at call time (inpainting: 1 or 3).

  `num_upsamples` x (nearest 2x upsample -> 3x3 conv -> BN -> ReLU), channels halving from
  `width`, then a 1x1 conv; a final bilinear resize to `out_size` when the map is not
  already that size (e.g. 28 px images whose stride-8 map is 4x4).
  """

  out_channels: int
  out_size: int
  num_upsamples: int = 3
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, image_channels: int = 0):
    out_channels = self.out_channels or image_channels
    if out_channels < 1:
      raise ValueError("UpsamplingDecoder needs out_channels or image_channels >= 1.")
    x = x.astype(self.dtype)
    for i in range(self.num_upsamples):
      b, h, w, c = x.shape
      x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
      x = nn.Conv(
        max(self.width // 2**i, 8), (3, 3), use_bias=False, dtype=self.dtype, name=f"conv{i}"
      )(x)
      x = nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=f"bn{i}"
      )(x)
      x = nn.relu(x)
    x = nn.Conv(out_channels, (1, 1), dtype=self.dtype, name="out")(x).astype(jnp.float32)
    b, h, w, _ = x.shape
    if (h, w) != (self.out_size, self.out_size):
      x = jax.image.resize(x, (b, self.out_size, self.out_size, out_channels), "bilinear")
    return x


class EncoderDecoder(nn.Module):
  """images [B, S, S, C] -> (backbone features [B, D], decoder(feature map))."""

  backbone: nn.Module
  decoder: nn.Module

  def __call__(self, x, train: bool = True):
    features, feature_map = backbone_with_feature_map(self.backbone, x, train)
    return features, self.decoder(feature_map, train=train, image_channels=x.shape[-1])
