"""CPC v2 (Henaff et al. 2020, "Data-Efficient Image Recognition with Contrastive Predictive
Coding", ICML; section 2.1 and appendix A): predict the embeddings of the patches below from a
masked (PixelCNN-style) context over the patches above, contrastively.

Patches: the view (side S = dataset.image_size) is cut into a G x G grid of overlapping square
patches of side `patch_size` every `patch_stride` pixels, G = (S - patch_size) // stride + 1,
centred (`patch_grid`; CPC v1's images, van den Oord et al. 2018: 256 px, 7 x 7 patches of
64 px every 32 px; CPC v2's exact crop sizes, in its appendix, were not checked here).
Encoder: the backbone (config.model) embeds every patch on its own, mean-pooled to a vector
z_{i,j} [D]; all B G^2 patches of the global batch go through it in one pass.
Context: `MaskedContext`, the appendix's pseudo-code (as transcribed in public
re-implementations; there is no official code): residual blocks of a 1x1 conv, a 1x3 conv
along the row and a 2x1 conv over the row above and this one (padded on top), then a 1x1 conv
back to D; the context c_{i,j} sees only rows <= i (each block one row more).
Predictions: per offset k a linear map of the context, zhat^k_{i,j} = emb_scale W_k c_{i,j}
(emb_scale 0.1 as in the pseudocode), scored by dot product against the targets, a linear map of
z (target_dim 64); InfoNCE against every patch of the global batch (`sslax.losses.cpc`: the
other patches of the image and all patches of the other images are negatives).

Evaluation: `network.backbone` (`PatchGridEncoder`) cuts the evaluation image into the same
grid and returns the mean over the grid of the per-patch features [B, D], as the paper's linear
protocol pools the patch encoder's output. Its parameters are the patch encoder's own (the
grid adds none), so `sslax.export` writes the encoder (config.model) itself: applied to a
whole image, as CPC v2 transfers it to detection.

Differences from the paper: the encoder keeps the model's BatchNorm (CPC v2 replaces it with
layer normalisation, since batch statistics let patches see each other; here they are taken
over all B G^2 patches of the global batch); predictions run top to bottom only (CPC v2 adds
other directions); the offsets are `prediction_offsets` (the appendix's pseudocode predicts
k = 3 only: steps_to_ignore=2, steps_to_predict=3); no per-patch augmentation (CPC v2 drops
colour channels and flips each patch on its own; views are augmented whole here, config.augment).

Metrics: `cpc_accuracy` (fraction of predictions whose target scores highest among the B G^2
candidates) and `cpc_loss_k{k}` per offset.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslax import sharding
from sslax.data.augment import ViewSpec
from sslax.losses.cpc import cpc_loss
from sslax.methods.base import Method
from sslax.models import get_dtype, make_backbone


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
  """Patches per side of the grid, G = (S - p) // stride + 1 (ValueError when G < 2)."""
  if patch_size < 1 or stride < 1 or patch_size > image_size:
    raise ValueError(
      f"config.cpc: patch_size={patch_size} and patch_stride={stride} must be >= 1 and the "
      f"patches no larger than the {image_size} px images."
    )
  g = (image_size - patch_size) // stride + 1
  if g < 2:
    raise ValueError(
      f"config.cpc: {patch_size} px patches every {stride} px make a {g} x {g} grid on "
      f"{image_size} px images; predictions need at least 2 rows: use smaller patches or "
      "stride."
    )
  return g


def patch_grid(images: jax.Array, patch_size: int, stride: int) -> jax.Array:
  """images [B, S, S, C] -> patches [B, G, G, p, p, C]; patch (i, j) starts at pixel
  (m + i stride, m + j stride), the grid centred (m: half the leftover border)."""
  size = images.shape[1]
  if images.ndim != 4 or images.shape[2] != size:
    raise ValueError(f"patch_grid needs square images [B, S, S, C], got {images.shape}.")
  g = grid_size(size, patch_size, stride)
  margin = (size - (g - 1) * stride - patch_size) // 2
  pixels = margin + stride * np.arange(g)[:, None] + np.arange(patch_size)[None, :]  # [G, p]
  rows = images[:, pixels]  # [B, G, p, S, C]
  patches = rows[:, :, :, pixels]  # [B, G, p, G, p, C]
  return patches.transpose(0, 1, 3, 2, 4, 5)


class PatchGridEncoder(nn.Module):
  """The backbone of CPC: images [B, S, S, C] -> mean over the patch grid of the encoder's
  features [B, D]; `grid` gives the per-patch features [B, G, G, D].

  The encoder's parameters are this module's own (shared scope): params["backbone"] has the
  layout of `encoder` alone, so checkpoints export as the plain encoder.
  """

  encoder: nn.Module
  patch_size: int
  stride: int

  def setup(self):
    nn.share_scope(self, self.encoder)

  def grid(self, x, train: bool = True):
    patches = patch_grid(x, self.patch_size, self.stride)
    b, g_rows, g_cols = patches.shape[:3]
    features = self.encoder(patches.reshape(b * g_rows * g_cols, *patches.shape[3:]), train=train)
    return features.reshape(b, g_rows, g_cols, -1)

  def __call__(self, x, train: bool = True):
    return jnp.mean(self.grid(x, train=train), axis=(1, 2))


class MaskedContext(nn.Module):
  """z [B, G, G, D] -> context [B, G, G, D]; the context at row i depends on rows <= i only.

  `num_blocks` residual blocks (the appendix's pixelCNN): 1x1 conv to `width`, ReLU, 1x3 conv
  along the row, 2x1 conv over rows (i - 1, i) (one row of zeros padded on top keeps G rows),
  ReLU, 1x1 conv back to D; a ReLU after the last block.
  """

  num_blocks: int = 5
  width: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    dim = z.shape[-1]
    x = z.astype(self.dtype)
    for i in range(self.num_blocks):
      c = nn.relu(nn.Dense(self.width, dtype=self.dtype, name=f"block{i}_in")(x))
      c = nn.Conv(
        self.width, (1, 3), padding=((0, 0), (1, 1)), dtype=self.dtype, name=f"block{i}_row"
      )(c)
      c = nn.Conv(
        self.width, (2, 1), padding=((1, 0), (0, 0)), dtype=self.dtype, name=f"block{i}_above"
      )(c)
      c = nn.Dense(dim, dtype=self.dtype, name=f"block{i}_out")(nn.relu(c))
      x = x + c
    return nn.relu(x)


class CPCNetwork(nn.Module):
  """images [B, S, S, C] -> (predictions [B, O, G, G, T], targets [B, G, G, T]).

  predictions[:, o] = emb_scale * W_o context, the prediction of the patch offsets[o] rows below.
  """

  backbone: PatchGridEncoder
  num_offsets: int
  context_blocks: int = 5
  context_width: int = 256
  target_dim: int = 64
  emb_scale: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    z = self.backbone.grid(x, train=train)
    context = MaskedContext(self.context_blocks, self.context_width, self.dtype, name="context")(z)
    targets = nn.Dense(self.target_dim, dtype=self.dtype, name="targets")(z)
    predictions = jnp.stack(
      [
        nn.Dense(self.target_dim, dtype=self.dtype, name=f"predict{o}")(context)
        for o in range(self.num_offsets)
      ],
      axis=1,
    )
    return (self.emb_scale * predictions).astype(jnp.float32), targets.astype(jnp.float32)


class CPC(Method):
  name = "cpc"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        patch_size=64,  # CPC: 64 px patches every 32 px (a 7 x 7 grid on 256 px images)
        patch_stride=32,
        prediction_offsets=(1, 2, 3),  # k: predict the patch k rows below
        context_blocks=5,  # residual blocks of the masked context network (pseudocode: 5)
        context_width=256,  # their inner width (pseudocode: 256)
        target_dim=64,  # the pseudocode's target_dim
        emb_scale=0.1,  # the predictions' scale (pseudocode: emb_scale)
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.cpc
    # Fails here, before anything is compiled, if the grid or the offsets do not fit.
    self.grid = grid_size(run.image_size, cfg.patch_size, cfg.patch_stride)
    offsets = tuple(int(k) for k in cfg.prediction_offsets)
    if not offsets or any(not 1 <= k < self.grid for k in offsets):
      raise ValueError(
        f"config.cpc.prediction_offsets={tuple(cfg.prediction_offsets)}: each offset k must "
        f"lie in [1, {self.grid}) rows of the {self.grid} x {self.grid} patch grid."
      )
    if cfg.context_blocks < 1 or cfg.context_width < 1 or cfg.target_dim < 1:
      raise ValueError(
        f"config.cpc: context_blocks={cfg.context_blocks}, context_width={cfg.context_width} "
        f"and target_dim={cfg.target_dim} must be >= 1."
      )
    self.offsets = offsets

  def views(self):
    return (ViewSpec.from_config(self.config.augment, self.run.image_size),)

  def network(self):
    cfg = self.config.cpc
    backbone = PatchGridEncoder(
      encoder=make_backbone(self.config.model, self.config.dtype),
      patch_size=cfg.patch_size,
      stride=cfg.patch_stride,
    )
    return CPCNetwork(
      backbone=backbone,
      num_offsets=len(self.offsets),
      context_blocks=cfg.context_blocks,
      context_width=cfg.context_width,
      target_dim=cfg.target_dim,
      emb_scale=cfg.emb_scale,
      dtype=get_dtype(self.config.dtype),
    )

  def loss(self, params, batch_stats, method_state, batch, rng):
    (predictions, targets), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      batch["views"][0],
      train=True,
      mutable=["batch_stats"],
    )
    loss_fn = sharding.shard_over_batch(
      lambda p, t, axis_name: cpc_loss(p, t, self.offsets, axis_name=axis_name),
      self.mesh,
      num_args=2,
    )
    loss, metrics = loss_fn(predictions, targets)
    return loss, (metrics, updates["batch_stats"], method_state)
