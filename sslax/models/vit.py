"""Vision Transformer backbones (Dosovitskiy et al. 2021) in Flax linen.

`ViT(images [B, H, W, C], train) -> features [B, D]` like the ResNet, so every method and
evaluation protocol takes either. Masked-image methods (MAE) need more, as keyword arguments:

  keep_ids [B, K] int: encode only these patches (row-major patch index, 0 .. N-1), after
    their position embeddings are added, so the visible tokens keep their positions.
  return_tokens: return the final-norm tokens [B, T, D] (class token first if any) instead of
    the pooled features.

Params are float32; `dtype` sets the compute dtype. Attention is
`jax.nn.dot_product_attention`, which picks fused kernels on GPU. `remat_policy` rematerialises
each block (saves activation memory at the cost of recompute); `scan` runs the blocks as one
`nn.scan` (one compiled block, params stacked on a leading [depth] axis: fast compiles for deep
models). Stochastic depth (`drop_path_rate`, linear in depth as in DeiT) needs a "dropout" rng
in training: `apply(..., rngs={"dropout": key})`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# name -> (hidden size, depth, heads); ViT / DeiT table.
VARIANTS = {
  "Ti": (192, 12, 3),
  "S": (384, 12, 6),
  "B": (768, 12, 12),
  "L": (1024, 24, 16),
}
VARIANT_NAMES = tuple(VARIANTS) + ("custom",)
PATCH_SIZES = (4, 8, 14, 16, 32)
POSEMBS = ("learn", "sincos2d")
POOLS = ("cls", "gap")
REMAT_POLICIES = {
  "none": None,  # no remat: keep every activation
  "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def vit_dims(variant: str, hidden_size: int = 0, num_layers: int = 0, num_heads: int = 0):
  """(hidden size, depth, heads) of a named variant; nonzero arguments override its values.

  variant="custom" takes all three from the arguments (tests and CPU demos).
  """
  if variant not in VARIANT_NAMES:
    raise ValueError(
      f"Unknown ViT variant {variant!r}; choose one of {VARIANT_NAMES} "
      f"('custom' takes model.hidden_size, model.num_layers, model.num_heads)."
    )
  base = VARIANTS.get(variant, (0, 0, 0))
  dims = tuple(o or b for o, b in zip((hidden_size, num_layers, num_heads), base))
  if min(dims) <= 0:
    raise ValueError(
      f"ViT variant {variant!r} needs model.hidden_size, model.num_layers and "
      f"model.num_heads > 0, got {dims}."
    )
  width, _, heads = dims
  if width % heads:
    raise ValueError(
      f"ViT hidden size {width} is not divisible by num_heads={heads}; pick "
      f"heads that divide it (e.g. {width // 64 or 1})."
    )
  return dims


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2D sin-cos position embeddings (MAE, MoCo v3) -> [grid_h * grid_w, dim], row-major.

  The first half of the channels encodes the row (y), the second half the column (x), each
  as [sin, cos] of dim/4 frequencies.
  """
  if dim % 4:
    raise ValueError(f"sin-cos position embeddings need a hidden size divisible by 4, got {dim}.")
  y, x = np.meshgrid(
    np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij"
  )
  omega = 1.0 / temperature ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))

  def encode(pos):
    angles = pos.reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([encode(y), encode(x)], axis=1).astype(np.float32)


def resize_posemb(table: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
  """Learned position embeddings [1, h, w, D] -> [1, grid_h * grid_w, D] by bilinear resize.

  At the native grid the table is returned unchanged (no resize is run), so it is exact.
  """
  _, h, w, dim = table.shape
  if (h, w) != (grid_h, grid_w):
    table = jax.image.resize(table, (1, grid_h, grid_w, dim), method="bilinear", antialias=False)
  return table.reshape(1, grid_h * grid_w, dim)


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda features, name: nn.Dense(
      features,
      dtype=self.dtype,
      kernel_init=nn.initializers.xavier_uniform(),
      bias_init=nn.initializers.normal(1e-6),
      name=name,
    )
    y = nn.gelu(dense(self.mlp_dim, "fc1")(x), approximate=False)
    return dense(x.shape[-1], "fc2")(y)


class KeyProjection(nn.Module):
  """The key projection [B, T, D] -> [B, T, heads, head_dim]: nn.DenseGeneral's params, init and
  arithmetic, except that the bias gets no gradient.

  A key bias adds q.b_k to every logit of a query's row, which the softmax ignores: its true
  gradient is exactly zero, and autodiff would only return rounding noise (which Adam
  amplifies and which differs between summation orders, e.g. FSDP vs replicated). It stays at
  its zero init, but exists so that the params are timm's qkv_bias=True layer (DINO, MAE,
  MoCo v3, CLIP): the published parameter counts, and published weights load one to one.
  """

  features: tuple[int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width, flat = x.shape[-1], int(np.prod(self.features))

    def kernel_init(rng, shape, dtype):
      return nn.initializers.xavier_uniform()(rng, (width, flat), dtype).reshape(shape)

    kernel = self.param("kernel", kernel_init, (width, *self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, self.features, jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(
      x, kernel, jax.lax.stop_gradient(bias), dtype=self.dtype
    )
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias


class Attention(nn.Module):
  """Multi-head self-attention: [B, T, D] -> [B, T, D]."""

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    head_dim = dim // self.num_heads
    proj = lambda name: nn.DenseGeneral(
      (self.num_heads, head_dim),
      dtype=self.dtype,
      kernel_init=nn.initializers.xavier_uniform(),
      name=name,
    )
    key = KeyProjection((self.num_heads, head_dim), dtype=self.dtype, name="key")
    q, k, v = proj("query")(x), key(x), proj("value")(x)  # [B, T, N, H]
    y = jax.nn.dot_product_attention(q, k, v)  # [B, T, N, H]
    return nn.DenseGeneral(
      dim, axis=(-2, -1), dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="out"
    )(y)


def drop_path(module: nn.Module, x, rate):
  """Stochastic depth: zeroes the residual branch of whole examples with probability `rate`.

  `rate` may be traced (per-layer rates under nn.scan). Kept branches are scaled by
  1 / (1 - rate) so the expectation is unchanged.
  """
  if not module.has_rng("dropout"):
    raise ValueError(
      "ViT drop_path_rate > 0 in training needs a dropout rng: call "
      "apply(..., rngs={'dropout': key}), or set model.drop_path_rate=0."
    )
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * (mask / keep).astype(x.dtype)


class EncoderBlock(nn.Module):
  """Pre-norm transformer block. Call: (x [B, T, D], drop rate) -> (x, None) (scan's form)."""

  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  use_drop_path: bool = False  # static: a zero rate builds no rng ops at all
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, drop_rate):
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
    branch = lambda y: (
      drop_path(self, y, drop_rate) if self.use_drop_path and not self.deterministic else y
    )
    x = x + branch(Attention(self.num_heads, dtype=self.dtype, name="attn")(norm("norm1")(x)))
    x = x + branch(MlpBlock(self.mlp_dim, dtype=self.dtype, name="mlp")(norm("norm2")(x)))
    return x, None


class Encoder(nn.Module):
  """A stack of `depth` blocks, plain, rematerialised and/or scanned. [B, T, D] -> [B, T, D]."""

  depth: int
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  drop_path_rate: float = 0.0
  remat_policy: str = "none"
  scan: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
        f"Unknown ViT remat_policy {self.remat_policy!r}; choose one of {tuple(REMAT_POLICIES)}."
      )
    block = EncoderBlock
    if self.remat_policy != "none":
      block = nn.remat(block, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=not self.scan)
    kwargs = dict(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      dtype=self.dtype,
      use_drop_path=self.drop_path_rate > 0,
      deterministic=not train,
    )
    # Rates grow linearly from 0 (first block) to drop_path_rate (last block), as in DeiT/MAE.
    rates = np.linspace(0.0, self.drop_path_rate, self.depth, dtype=np.float32)
    if self.scan:
      stack = nn.scan(
        block,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=0,
        length=self.depth,
      )
      x, _ = stack(**kwargs, name="blocks")(x, jnp.asarray(rates))
    else:
      for i in range(self.depth):
        x, _ = block(**kwargs, name=f"block{i}")(x, float(rates[i]))
    return x


class ViT(nn.Module):
  """ViT backbone: patchify -> (+ position embeddings) -> [class token] -> blocks -> LayerNorm.

  Input [B, H, W, C] float with H, W divisible by `patch_size`; output [B, width] float32:
  the class token (pool="cls") or the mean of the patch tokens (pool="gap").

  Learned position embeddings are a [1, h, w, D] table whose grid (h, w) is the one the model
  was initialised at (the native size); other image sizes bilinearly resize it. Sin-cos ones
  are computed for the input's grid (exact at every size).

  The class token's position: with posemb="learn" and `cls_posemb` (default) it has its own
  learned [1, 1, D] embedding `cls_pos_embedding`, never resized: the first row of the
  (1 + N)-row table of timm / DINO (`pos_embed`) and open_clip (`positional_embedding`), so
  the param count is the published models' (ViT-S/16 21,665,664 and ViT-B/16 85,798,656
  without a classifier). Added to the learned class token it changes no function, only the
  parameterisation (init, Adam steps, weight decay). With sincos2d the class token gets none,
  as MAE's and MoCo v3's fixed all-zero first row.
  """

  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 0  # 0 = 4 * width
  patch_size: int = 16
  posemb: str = "learn"
  pool: str = "cls"
  class_token: bool = True
  cls_posemb: bool = True  # posemb="learn" only: a learned position embedding for the class token
  drop_path_rate: float = 0.0
  remat_policy: str = "none"
  scan: bool = False
  dtype: Any = jnp.float32

  def _check(self, images):
    if self.posemb not in POSEMBS:
      raise ValueError(f"Unknown ViT posemb {self.posemb!r}; choose one of {POSEMBS}.")
    if self.pool not in POOLS:
      raise ValueError(f"Unknown ViT pool {self.pool!r}; choose one of {POOLS}.")
    if self.pool == "cls" and not self.class_token:
      raise ValueError(
        "ViT pool='cls' needs class_token=True; set pool='gap' to mean-pool instead."
      )
    if images.ndim != 4:
      raise ValueError(f"ViT expects images [B, H, W, C], got shape {images.shape}.")
    h, w = images.shape[1:3]
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(
        f"Image size {h}x{w} is not divisible by the ViT patch size "
        f"{self.patch_size}; pick a patch size that divides it (e.g. 4 or 14 for 28 px)."
      )

  def position_embeddings(self, grid_h: int, grid_w: int) -> jax.Array:
    """[1, grid_h * grid_w, width] float32, row-major over the patch grid."""
    if self.posemb == "sincos2d":
      return jnp.asarray(sincos_2d(grid_h, grid_w, self.width))[None]
    # The stored table's shape records the native grid; reading it without self.param keeps
    # flax from insisting that every later input has that grid.
    if self.has_variable("params", "pos_embedding"):
      table = self.get_variable("params", "pos_embedding")
    else:
      table = self.param(
        "pos_embedding", nn.initializers.normal(0.02), (1, grid_h, grid_w, self.width), jnp.float32
      )
    return resize_posemb(table, grid_h, grid_w)

  @nn.compact
  def __call__(self, images, train: bool = True, *, keep_ids=None, return_tokens: bool = False):
    """images [B, H, W, C]; keep_ids [B, K] int or None -> [B, width] (or tokens [B, T, width])."""
    self._check(images)
    p = self.patch_size
    x = nn.Conv(
      self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch_embed"
    )(images.astype(self.dtype))
    b, gh, gw, _ = x.shape
    x = x.reshape(b, gh * gw, self.width)
    x = x + self.position_embeddings(gh, gw).astype(x.dtype)
    if keep_ids is not None:  # MAE: visible patches only
      x = jnp.take_along_axis(x, keep_ids[:, :, None], axis=1)
    if self.class_token:
      # Masking (keep_ids) never moves the class token: it is prepended after the gather.
      cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.width), jnp.float32)
      if self.posemb == "learn" and self.cls_posemb:
        cls = cls + self.param(
          "cls_pos_embedding", nn.initializers.normal(0.02), (1, 1, self.width), jnp.float32
        )
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], axis=1)
    x = Encoder(
      self.depth,
      self.num_heads,
      self.mlp_dim or 4 * self.width,
      dtype=self.dtype,
      drop_path_rate=self.drop_path_rate,
      remat_policy=self.remat_policy,
      scan=self.scan,
      name="encoder",
    )(x, train=train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x)
    if return_tokens:
      return x.astype(jnp.float32)
    if self.pool == "cls":
      return x[:, 0].astype(jnp.float32)
    patches = x[:, 1:] if self.class_token else x
    return jnp.mean(patches.astype(jnp.float32), axis=1)
