"""ResNet backbones (He et al. 2016) in Flax linen.

`ResNet` returns pooled features [B, D]; classification heads live elsewhere so the same
backbone serves every method. Params are float32; `dtype` sets the compute dtype.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# depth -> (block type, blocks per stage)
_LAYOUTS = {
  10: ("basic", (1, 1, 1, 1)),
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
}
DEPTHS = tuple(sorted(_LAYOUTS))
STEMS = ("imagenet", "small")


def symmetric_padding(kernel_size: Sequence[int]) -> list[tuple[int, int]]:
  """k // 2 zero pixels on both sides of each spatial axis, as torchvision, timm and SimCLR's
  `Conv2dFixedPadding` pad (odd kernels).

  Flax's "SAME" pads a stride-2 conv on an even input by 0 before and 1 after, which shifts the
  sampling grid by one pixel against those references, so weights exported to PyTorch would
  not compute the same function.
  """
  return [(k // 2, k // 2) for k in kernel_size]


def _conv(features, kernel_size, strides=(1, 1), **kwargs) -> nn.Conv:
  """nn.Conv padded by `symmetric_padding` (auto-named Conv_i, like a plain nn.Conv)."""
  return nn.Conv(features, kernel_size, strides, padding=symmetric_padding(kernel_size), **kwargs)


class BasicBlock(nn.Module):
  filters: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    # Zero-init the last BN scale so each block starts as identity (Goyal et al. 2017).
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="proj")(x)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(y + residual)


class BottleneckBlock(nn.Module):
  filters: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides), name="proj")(x)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet-{10,18,34,50,101} with a width multiplier.

  stem="imagenet": 7x7/2 conv + 3x3/2 max-pool (224 px inputs).
  stem="small": 3x3/1 conv, no pool (CIFAR-style, for 28-64 px inputs, as in SimCLR's CIFAR runs).
  Input [B, H, W, C] float; output [B, D] with D = 512*width (basic) or 2048*width (bottleneck).
  BatchNorm statistics are taken over the whole (global) batch: under `jax.jit` on a sharded
  batch XLA reduces across devices, which is SimCLR's cross-replica BN.
  """

  depth: int = 18
  width: float = 1.0
  stem: str = "small"
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.depth not in _LAYOUTS:
      raise ValueError(f"ResNet depth {self.depth} is not one of {DEPTHS}.")
    if self.stem not in STEMS:
      raise ValueError(f"ResNet stem {self.stem!r} is not one of {STEMS}.")
    block_kind, layout = _LAYOUTS[self.depth]
    block = BasicBlock if block_kind == "basic" else BottleneckBlock
    conv = functools.partial(
      _conv,
      use_bias=False,
      dtype=self.dtype,
      kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    )
    norm = functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=self.bn_momentum,
      epsilon=1e-5,
      dtype=self.dtype,
    )
    base = max(int(64 * self.width), 1)

    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(base, (7, 7), (2, 2), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      # Padded with -inf by one pixel on every side, as torchvision's MaxPool2d(3, 2, padding=1).
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(base, (3, 3), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
    for stage, num_blocks in enumerate(layout):
      for i in range(num_blocks):
        strides = 2 if stage > 0 and i == 0 else 1
        x = block(
          base * 2**stage, strides, conv=conv, norm=norm, name=f"stage{stage + 1}_block{i + 1}"
        )(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
