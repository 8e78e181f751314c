"""Vision Transformer backbones (Dosovitskiy et al. 2021) in Flax linen.

`ViT(images [B, H, W, C], train) -> features [B, D]` like the ResNet, so every method and
evaluation protocol takes either. Masked-image methods (MAE) need more, as keyword arguments:

  keep_ids [B, K] int: encode only these patches (row-major patch index, 0 .. N-1), after
    their position embeddings are added, so the visible tokens keep their positions.
  masks [B, N] bool (needs mask_token=True): replace these patches' embeddings by the learned
    mask token before position embeddings are added (DINOv2's iBOT masking: the encoder sees
    every position, masked ones with the mask token's content).
  return_tokens: return the final-norm tokens [B, T, D] instead of the pooled features: the
    class token (if any), then the register tokens (if any), then the patch tokens;
    `ViT.num_prefix_tokens` counts the tokens before the patches (`tokens[:, vit.num_prefix_tokens:]`
    are the patch tokens).

DINOv2's options (facebookresearch/dinov2, dinov2/models/vision_transformer.py; all off by
default, and off they build no params, so every other model is unchanged): LayerScale
(`layerscale_init`, a learned per-channel gain on each residual branch), register tokens
(`num_registers`, Darcet et al. 2024), a SwiGLU feed-forward (`ffn="swiglu"`) and the mask token.

Params are float32; `dtype` sets the compute dtype. Attention is `jax.nn.dot_product_attention`
with `attention` as its implementation: "xla" (default, every platform: the einsum-softmax-einsum
XLA fuses) or "cudnn" (cuDNN's fused flash attention, NVIDIA GPUs only, bf16/fp16 compute; jax
leaves the choice to the caller rather than picking it on GPU). `remat_policy` rematerialises
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
POSEMBS = ("learn", "sincos2d", "none")  # none: no absolute positions (BEiT v2 + rel_pos_bias)
REL_POS_BIASES = ("none", "shared")
POOLS = ("cls", "gap")
FFNS = ("mlp", "swiglu")
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


def _ffn_dense(features: int, name: str, dtype) -> nn.Dense:
  """A feed-forward layer of the ViT blocks (MLP and SwiGLU): xavier weights, ~0 biases."""
  return nn.Dense(
    features,
    dtype=dtype,
    kernel_init=nn.initializers.xavier_uniform(),
    bias_init=nn.initializers.normal(1e-6),
    name=name,
  )


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda features, name: _ffn_dense(features, name, self.dtype)
    y = nn.gelu(dense(self.mlp_dim, "fc1")(x), approximate=False)
    return dense(x.shape[-1], "fc2")(y)


def swiglu_hidden_size(mlp_dim: int) -> int:
  """Hidden size of DINOv2's SwiGLU feed-forward for an MLP of hidden size `mlp_dim`.

  dinov2/layers/swiglu_ffn.py (SwiGLUFFNFused): 2/3 of the MLP's hidden size (so the three
  matrices hold about the MLP's two), rounded up to a multiple of 8: 1536 -> 1024 (ViT-S),
  3072 -> 2048 (ViT-B), 4096 -> 2736 (ViT-L), 6144 -> 4096 (ViT-g).
  """
  return (int(mlp_dim * 2 / 3) + 7) // 8 * 8


class SwiGLUBlock(nn.Module):
  """SwiGLU feed-forward (Shazeer 2020) as DINOv2's: [B, T, D] -> [B, T, D].

  `w12` projects to 2 * hidden at once (the reference's fused layer, timm's SwiGLUPacked `fc1`);
  its first half is the SiLU gate, the second the value; `w3` projects back.
  """

  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda features, name: _ffn_dense(features, name, self.dtype)
    gate, value = jnp.split(dense(2 * self.hidden, "w12")(x), 2, axis=-1)
    return dense(x.shape[-1], "w3")(nn.silu(gate) * value)


class LayerScale(nn.Module):
  """x [..., D] * gamma [D], gamma a learned per-channel gain initialised to `init_value`
  (CaiT's LayerScale; DINOv2 uses 1e-5, so each residual branch starts near zero)."""

  init_value: float

  @nn.compact
  def __call__(self, x):
    gamma = self.param(
      "gamma", nn.initializers.constant(self.init_value), (x.shape[-1],), jnp.float32
    )
    return x * gamma.astype(x.dtype)


class RelativePositionBias(nn.Module):
  """BEiT's shared relative position bias (beit2/modeling_finetune.py, RelativePositionBias):
  one learned logit bias per head for every (query, key) offset on the patch grid, plus three
  for the class token (class -> patch, patch -> class, class -> class); zero-initialised, as
  the reference. Call: (grid_h, grid_w) -> [1, heads, T, T], T = (1 if class_token) + h * w.

  Params: `table` [2h - 1, 2w - 1, heads] indexed by (dy + h - 1, dx + w - 1) for query minus
  key offsets, and `cls` [3, heads]. The table's shape records the grid it was made for; other
  grids are refused (BEiT interpolates it when fine-tuning at another size; sslax does not).
  """

  num_heads: int
  class_token: bool = True

  @nn.compact
  def __call__(self, grid_h: int, grid_w: int):
    shape = (2 * grid_h - 1, 2 * grid_w - 1, self.num_heads)
    if self.has_variable("params", "table") and self.get_variable("params", "table").shape != shape:
      native = self.get_variable("params", "table").shape
      raise ValueError(
        f"ViT rel_pos_bias was made for a {(native[0] + 1) // 2}x{(native[1] + 1) // 2} patch "
        f"grid; this input has {grid_h}x{grid_w}: use the image size it was trained at."
      )
    table = self.param("table", nn.initializers.zeros, shape, jnp.float32)
    y, x = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    y, x = y.reshape(-1), x.reshape(-1)
    bias = table[y[:, None] - y[None, :] + grid_h - 1, x[:, None] - x[None, :] + grid_w - 1]
    if self.class_token:
      cls = self.param("cls", nn.initializers.zeros, (3, self.num_heads), jnp.float32)
      n = grid_h * grid_w
      first = jnp.concatenate([cls[2:3], jnp.broadcast_to(cls[0], (n, self.num_heads))])
      rest = jnp.concatenate([jnp.broadcast_to(cls[1], (n, 1, self.num_heads)), bias], axis=1)
      bias = jnp.concatenate([first[None], rest], axis=0)  # [T, T, heads]
    return jnp.transpose(bias, (2, 0, 1))[None]


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


ATTENTIONS = ("xla", "cudnn")  # jax.nn.dot_product_attention's implementations


class Attention(nn.Module):
  """Multi-head self-attention: [B, T, D] -> [B, T, D]."""

  num_heads: int
  dtype: Any = jnp.float32
  implementation: str = "xla"  # ATTENTIONS

  @nn.compact
  def __call__(self, x, bias=None):
    """bias: None, or [1, heads, T, T] added to the attention logits (relative positions)."""
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
    y = jax.nn.dot_product_attention(
      q,
      k,
      v,
      bias=None if bias is None else bias.astype(q.dtype),
      implementation=self.implementation,
    )  # [B, T, N, H]
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
  """Pre-norm transformer block. Call: (x [B, T, D], drop rate) -> (x, None) (scan's form).

  x + drop_path(ls1(attn(norm1(x)))), then x + drop_path(ls2(mlp(norm2(x)))); ls1/ls2 (LayerScale)
  only with layerscale_init > 0. `mlp` is the GELU MLP (ffn="mlp", hidden mlp_dim) or SwiGLU
  (ffn="swiglu", hidden swiglu_hidden_size(mlp_dim)).
  """

  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  use_drop_path: bool = False  # static: a zero rate builds no rng ops at all
  deterministic: bool = True
  layerscale_init: float = 0.0  # 0: no LayerScale
  ffn: str = "mlp"
  attention: str = "xla"

  @nn.compact
  def __call__(self, x, drop_rate, attn_bias=None):
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)

    def branch(y, scale_name):
      if self.layerscale_init:
        y = LayerScale(self.layerscale_init, name=scale_name)(y)
      if self.use_drop_path and not self.deterministic:
        y = drop_path(self, y, drop_rate)
      return y

    if self.ffn == "swiglu":
      ffn = SwiGLUBlock(swiglu_hidden_size(self.mlp_dim), dtype=self.dtype, name="mlp")
    else:
      ffn = MlpBlock(self.mlp_dim, dtype=self.dtype, name="mlp")
    x = x + branch(
      Attention(self.num_heads, self.dtype, self.attention, name="attn")(
        norm("norm1")(x), attn_bias
      ),
      "ls1",
    )
    x = x + branch(ffn(norm("norm2")(x)), "ls2")
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
  layerscale_init: float = 0.0
  ffn: str = "mlp"
  drop_path_uniform: bool = False
  attention: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool = False, last_outputs: int = 0, attn_bias=None):
    """x [B, T, D] -> [B, T, D]; last_outputs = n > 0: also the outputs of the last n blocks
    (a list, the last block's last; plain stacks only). attn_bias: None, or [1, heads, T, T]
    added to every block's attention logits (BEiT's shared relative position bias)."""
    if last_outputs and self.scan:
      raise ValueError(
        "The outputs of the last blocks (linear_eval.n_last_blocks > 1) need an unscanned ViT; "
        "evaluate with --config.model.scan=False (the params convert: same names per block)."
      )
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
        f"Unknown ViT remat_policy {self.remat_policy!r}; choose one of {tuple(REMAT_POLICIES)}."
      )
    block = EncoderBlock
    if self.remat_policy != "none":
      block = nn.remat(block, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=not self.scan)
    kwargs = {
      "num_heads": self.num_heads,
      "mlp_dim": self.mlp_dim,
      "dtype": self.dtype,
      "use_drop_path": self.drop_path_rate > 0,
      "deterministic": not train,
      "layerscale_init": self.layerscale_init,
      "ffn": self.ffn,
      "attention": self.attention,
    }
    # Rates grow linearly from 0 (first block) to drop_path_rate (last block), as in DeiT/MAE;
    # drop_path_uniform: drop_path_rate in every block (DINOv2's drop_path_uniform).
    rates = np.linspace(0.0, self.drop_path_rate, self.depth, dtype=np.float32)
    if self.drop_path_uniform:
      rates = np.full((self.depth,), self.drop_path_rate, np.float32)
    bias = () if attn_bias is None else (attn_bias,)  # none: the blocks' calls as before
    if self.scan:
      stack = nn.scan(
        block,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast) if bias else 0,
        length=self.depth,
      )
      x, _ = stack(**kwargs, name="blocks")(x, jnp.asarray(rates), *bias)
      return x
    outputs = []
    for i in range(self.depth):
      x, _ = block(**kwargs, name=f"block{i}")(x, float(rates[i]), *bias)
      if i >= self.depth - last_outputs:
        outputs.append(x)
    return (x, outputs) if last_outputs else x


class ViT(nn.Module):
  """ViT backbone: patchify -> [mask] -> (+ position embeddings) -> [class token] -> [registers]
  -> blocks -> LayerNorm.

  Input [B, H, W, C] float with H, W divisible by `patch_size`; output [B, width] float32:
  the class token (pool="cls") or the mean of the patch tokens (pool="gap"; never the
  registers).

  Learned position embeddings are a [1, h, w, D] table whose grid (h, w) is the one the model
  was initialised at (the native size); other image sizes bilinearly resize it. Sin-cos ones
  are computed for the input's grid (exact at every size).

  The class token's position: with posemb="learn" and `cls_posemb` (default) it has its own
  learned [1, 1, D] embedding `cls_pos_embedding`, never resized: the first row of the
  (1 + N)-row table of timm / DINO / DINOv2 (`pos_embed`) and open_clip
  (`positional_embedding`), so the param count is the published models' (ViT-S/16 21,665,664
  and ViT-B/16 85,798,656 without a classifier). Added to the learned class token it changes no
  function, only the parameterisation (init, Adam steps, weight decay). With sincos2d the class
  token gets none, as MAE's and MoCo v3's fixed all-zero first row.

  DINOv2 (dinov2/models/vision_transformer.py, prepare_tokens_with_masks): the mask token
  replaces masked patch embeddings before the position embeddings are added; the
  `num_registers` register tokens [1, R, D] are inserted after the class token once the
  positions are added, so they get no position embedding. `layerscale_init` > 0 adds
  LayerScale (params `ls1`/`ls2` with `gamma` [D] in each block); ffn="swiglu" replaces the
  MLP by SwiGLU (params `mlp/w12`, `mlp/w3`).

  BEiT (beit2/modeling_pretrain.py, --rel_pos_bias, the default): rel_pos_bias="shared" adds
  one `RelativePositionBias` (params `rel_pos_bias/table`, `rel_pos_bias/cls`) to the attention
  logits of every block, usually with posemb="none" (no absolute position embeddings,
  --abs_pos_emb False). Not with registers or keep_ids (they would need their own offsets).
  """

  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 0  # 0 = 4 * width; ffn="swiglu": swiglu_hidden_size(mlp_dim)
  patch_size: int = 16
  posemb: str = "learn"
  pool: str = "cls"
  class_token: bool = True
  cls_posemb: bool = True  # posemb="learn" only: a learned position embedding for the class token
  drop_path_rate: float = 0.0
  drop_path_uniform: bool = False  # True: every block drops at drop_path_rate (DINOv2)
  remat_policy: str = "none"
  scan: bool = False
  layerscale_init: float = 0.0  # 0: no LayerScale; DINOv2: 1e-5
  num_registers: int = 0  # register tokens after the class token (DINOv2 "with registers": 4)
  ffn: str = "mlp"  # mlp (GELU) | swiglu
  mask_token: bool = False  # a learned [1, 1, D] mask token; needed for `masks=`
  rel_pos_bias: str = "none"  # none | shared (BEiT: one RelativePositionBias for all blocks)
  attention: str = "xla"  # ATTENTIONS: jax.nn.dot_product_attention's implementation
  dtype: Any = jnp.float32

  @property
  def num_prefix_tokens(self) -> int:
    """The tokens before the patch tokens in `return_tokens` output: class token + registers."""
    return int(self.class_token) + self.num_registers

  def _check(self, images):
    if self.posemb not in POSEMBS:
      raise ValueError(f"Unknown ViT posemb {self.posemb!r}; choose one of {POSEMBS}.")
    if self.pool not in POOLS:
      raise ValueError(f"Unknown ViT pool {self.pool!r}; choose one of {POOLS}.")
    if self.ffn not in FFNS:
      raise ValueError(
        f"Unknown ViT ffn {self.ffn!r}; choose one of {FFNS} (DINOv2's 'swiglufused' is 'swiglu')."
      )
    if self.pool == "cls" and not self.class_token:
      raise ValueError(
        "ViT pool='cls' needs class_token=True; set pool='gap' to mean-pool instead."
      )
    if not isinstance(self.num_registers, int) or self.num_registers < 0:
      raise ValueError(
        f"ViT num_registers={self.num_registers!r} must be an integer >= 0 (DINOv2 uses 4)."
      )
    if not self.layerscale_init >= 0:
      raise ValueError(
        f"ViT layerscale_init={self.layerscale_init} must be >= 0 (0: no LayerScale; DINOv2: 1e-5)."
      )
    if self.rel_pos_bias not in REL_POS_BIASES:
      raise ValueError(
        f"Unknown ViT rel_pos_bias {self.rel_pos_bias!r}; choose one of {REL_POS_BIASES}."
      )
    if self.rel_pos_bias != "none" and self.num_registers:
      raise ValueError("ViT rel_pos_bias has no offsets for register tokens: set num_registers=0.")
    if self.posemb == "none" and self.rel_pos_bias == "none":
      raise ValueError(
        "ViT posemb='none' leaves the tokens without any position: use it with "
        "rel_pos_bias='shared' (BEiT), or choose posemb 'learn' or 'sincos2d'."
      )
    if images.ndim != 4:
      raise ValueError(f"ViT expects images [B, H, W, C], got shape {images.shape}.")
    h, w = images.shape[1:3]
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(
        f"Image size {h}x{w} is not divisible by the ViT patch size "
        f"{self.patch_size}; pick a patch size that divides it (e.g. 4 or 14 for 28 px)."
      )

  def _check_masks(self, masks, keep_ids, shape):
    if masks is None:
      return
    if keep_ids is not None:
      raise ValueError(
        "ViT takes masks= (replace patches by the mask token) or keep_ids= (drop patches), "
        "not both."
      )
    if not self.mask_token:
      raise ValueError(
        "ViT masks= needs the learned mask token: build the ViT with mask_token=True "
        "(config.model.mask_token=True)."
      )
    if tuple(masks.shape) != shape or masks.dtype != jnp.bool_:
      raise ValueError(
        f"ViT masks must be bool [B, N] = {list(shape)} (True = masked, one per patch, "
        f"row-major over the patch grid), got {masks.dtype} {list(masks.shape)}."
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
  def __call__(
    self,
    images,
    train: bool = True,
    *,
    keep_ids=None,
    masks=None,
    return_tokens: bool = False,
    n_last_blocks: int = 1,
    avgpool: bool = False,
  ):
    """images [B, H, W, C]; keep_ids [B, K] int or None; masks [B, N] bool or None
    -> [B, width] (or tokens [B, num_prefix_tokens + N (or K), width]).

    n_last_blocks = n > 1 (pool="cls"): the class tokens of the last n blocks, each through the
    final LayerNorm, concatenated -> [B, n x width]; avgpool: also the mean of the last block's
    normalised patch tokens -> [B, (n + 1) x width]. DINO's `eval_linear.py` features
    (`get_intermediate_layers`: ViT-S n=4; ViT-B n=1 with avgpool).
    """
    self._check(images)
    p = self.patch_size
    x = nn.Conv(
      self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch_embed"
    )(images.astype(self.dtype))
    b, gh, gw, _ = x.shape
    x = x.reshape(b, gh * gw, self.width)
    self._check_masks(masks, keep_ids, (b, gh * gw))
    if self.mask_token:  # the param exists whether or not this call masks
      token = self.param("mask_token", nn.initializers.zeros, (1, 1, self.width), jnp.float32)
      if masks is not None:  # DINOv2: masked patches get the token's content, keep their position
        x = jnp.where(masks[:, :, None], token.astype(x.dtype), x)
    if self.posemb != "none":
      x = x + self.position_embeddings(gh, gw).astype(x.dtype)
    if keep_ids is not None and self.rel_pos_bias != "none":
      raise ValueError("ViT keep_ids (MAE) does not combine with rel_pos_bias; use masks=.")
    if keep_ids is not None:  # MAE: visible patches only
      x = jnp.take_along_axis(x, keep_ids[:, :, None], axis=1)
    # Masking (keep_ids) never moves the prefix tokens: they are prepended after the gather.
    prefix = []
    if self.class_token:
      cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.width), jnp.float32)
      if self.posemb == "learn" and self.cls_posemb:
        cls = cls + self.param(
          "cls_pos_embedding", nn.initializers.normal(0.02), (1, 1, self.width), jnp.float32
        )
      prefix.append(cls)
    if self.num_registers:  # no position embedding (DINOv2 inserts them after adding positions)
      prefix.append(
        self.param(
          "register_tokens",
          nn.initializers.normal(1e-6),  # dinov2's init_weights
          (1, self.num_registers, self.width),
          jnp.float32,
        )
      )
    if prefix:
      prefix = [jnp.broadcast_to(t.astype(x.dtype), (b, *t.shape[1:])) for t in prefix]
      x = jnp.concatenate([*prefix, x], axis=1)
    encoder = Encoder(
      self.depth,
      self.num_heads,
      self.mlp_dim or 4 * self.width,
      dtype=self.dtype,
      drop_path_rate=self.drop_path_rate,
      remat_policy=self.remat_policy,
      scan=self.scan,
      layerscale_init=self.layerscale_init,
      ffn=self.ffn,
      drop_path_uniform=self.drop_path_uniform,
      attention=self.attention,
      name="encoder",
    )
    norm = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")
    bias = None
    if self.rel_pos_bias == "shared":
      bias = RelativePositionBias(self.num_heads, self.class_token, name="rel_pos_bias")(gh, gw)
    if n_last_blocks > 1 or avgpool:
      if n_last_blocks < 1 or self.pool != "cls" or return_tokens or not self.class_token:
        raise ValueError(
          f"ViT n_last_blocks={n_last_blocks} / avgpool={avgpool} take class tokens: they need "
          f"n_last_blocks >= 1, a class token with pool='cls' (got {self.pool!r}) and no "
          f"return_tokens."
        )
      _, outputs = encoder(x, train=train, last_outputs=n_last_blocks, attn_bias=bias)
      outputs = [norm(o) for o in outputs]
      features = [o[:, 0] for o in outputs]
      if avgpool:
        features.append(jnp.mean(outputs[-1][:, self.num_prefix_tokens :], axis=1))
      return jnp.concatenate([f.astype(jnp.float32) for f in features], axis=-1)
    x = norm(encoder(x, train=train, attn_bias=bias))
    if return_tokens:
      return x.astype(jnp.float32)
    if self.pool == "cls":
      return x[:, 0].astype(jnp.float32)
    return jnp.mean(x[:, self.num_prefix_tokens :].astype(jnp.float32), axis=1)


# Leading params of the ViT that sit before the first block in layer-wise lr decay.
EMBEDDING_PARAMS = (
  "patch_embed",
  "pos_embedding",
  "cls_pos_embedding",
  "cls_token",
  "register_tokens",
  "mask_token",
)


def layer_ids(params) -> tuple[Any, int]:
  """Layer index of every parameter of a ViT's params, for layer-wise lr decay.

  -> (tree like params whose leaves are ints, or int arrays broadcastable against the leaf for
  a scanned stack, L + 1) with L the depth: embeddings and tokens (`EMBEDDING_PARAMS`) -> 0,
  block i -> i + 1, the final norm -> L + 1 (MAE's and DINOv2's `get_vit_lr_decay_rate`).
  A multiplier decay ** (L + 1 - id) is then 1 for the final norm and whatever follows.
  """
  encoder = params["encoder"]
  if "blocks" in encoder:  # nn.scan: [depth, ...]
    depth = jax.tree.leaves(encoder["blocks"])[0].shape[0]
  else:
    depth = sum(1 for k in encoder if k.startswith("block"))
  last = depth + 1

  def layer(path, leaf):
    names = [str(getattr(e, "key", e)) for e in path]
    if names[0] in EMBEDDING_PARAMS:
      return 0
    if names[0] in ("encoder_norm", "rel_pos_bias"):  # BEiT's layer decay: rel_pos_bias last
      return last
    if names[0] == "encoder" and names[1] == "blocks":
      return np.arange(1, depth + 1).reshape((depth,) + (1,) * (np.ndim(leaf) - 1))
    if names[0] == "encoder" and names[1].startswith("block"):
      return int(names[1][len("block") :]) + 1
    raise ValueError(f"vit.layer_ids: no layer for ViT parameter {'/'.join(names)}")

  return jax.tree_util.tree_map_with_path(layer, params), last
