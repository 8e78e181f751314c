"""DINOv2 (Oquab et al. 2023): DINO's image-level self-distillation plus iBOT's masked patch
loss and the KoLeo regulariser, on a ViT with LayerScale (and optionally register tokens).

Reference: facebookresearch/dinov2 (`dinov2/train/ssl_meta_arch.py`, `dinov2/loss/`,
`dinov2/configs/ssl_default_config.yaml`, `dinov2/data/collate.py`).

Per step, for a batch of B images with 2 global and n local crops:
  - masks: for the 2B global crops, a fraction `mask_probability` of them gets a block-wise
    mask (`sslax.methods.masking.dinov2_masks`) covering a ratio of the patch grid drawn from
    `mask_ratio` (the reference: 0.5 of the crops, ratios spread over [0.1, 0.5]);
  - student: sees the global crops with masked patches replaced by a learned mask token, and
    the local crops; the teacher (EMA of the student, no stochastic depth) sees the unmasked
    global crops only;
  - DINO loss on class tokens (the `dino` head): each student crop predicts the teacher's
    targets of the other global crops (`losses.dino.cross_entropy_over_pairs`, as DINO);
  - iBOT loss on patch tokens: at each masked position the student's prediction (patch head:
    the same `dino_head`, or a separate `ibot_head` with `ibot_separate_head`) matches the
    teacher's target for the same, unmasked patch, averaged per crop over its masked patches
    and over all 2B global crops (`losses.dinov2`);
  - KoLeo on the student's global class tokens (before the head), per global crop, summed,
    weight 0.1; computed over the GLOBAL batch (the reference: within each GPU's batch; see
    `losses.dinov2.koleo_loss`).
Teacher targets: `centering="centering"` (the reference's default: softmax of the centred
logits at the teacher temperature; class and patch tokens have separate running centres) or
`"sinkhorn_knopp"` (3 Sinkhorn-Knopp iterations over the global batch; the reference's
ViT-L/14 and g/14 recipes).

Masked patches in fixed shapes: the reference gathers the masked patch tokens into a buffer
whose size `upperbound` is known from the mask ratios before masking, and runs the heads on it
only (65536 prototypes on every patch token would not fit). Here the 2B global crops are split
into groups of `mask_group_size` consecutive crops (the reference's per-GPU collate of 64
images = 128 crops); each group's masks are drawn together (exactly int(g * p) masked crops,
ratios spread over the linspace bins, shuffled, as `collate_data_and_cast`), so each group's
buffer has a static size (the same `upperbound` formula), the gather runs per group (local to
the devices that hold it when a device's crops are whole groups), and the masks do not depend
on the number of devices.

Schedules (as `dinov2/train/train.py`): teacher momentum cosine from `momentum_teacher` to 1;
teacher temperature linear per step from `warmup_teacher_temp` to `teacher_temp` over
`warmup_teacher_temp_epochs`, then constant; weight decay cosine from optimizer.weight_decay to
`weight_decay_end` (AdamW); the last layer of the heads frozen for `freeze_last_layer_epochs`;
layer-wise lr decay (`layer_decay`: block i of L gets decay^(L + 1 - i), patch embedding,
position embeddings and class/register/mask tokens decay^(L + 1)) with the patch embedding's
lr further x `patch_embed_lr_mult`; per-module gradient clipping
(`optimizer.grad_clip_mode="per_module"`, the reference's clip_grad_norm_ of backbone and
heads separately).

Evaluation and export use the student's backbone (the reference evaluates the teacher; its
params are in the checkpoint's method_state).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sslax import optim, sharding
from sslax.losses import dino as dino_losses
from sslax.losses import dinov2 as dinov2_losses
from sslax.methods import masking
from sslax.methods.base import PROBE_FEATURES
from sslax.methods.dino import DINO
from sslax.methods.multicrop import NUM_GLOBAL_CROPS, group_by_size
from sslax.models import get_dtype, make_backbone
from sslax.models.dino_head import DINOHead
from sslax.models.vit import layer_ids as vit_layer_ids

CENTERINGS = ("centering", "sinkhorn_knopp")


class DINOv2Network(nn.Module):
  """The student (or teacher): a ViT backbone, the `dino_head` for class tokens and, with
  separate heads, an `ibot_head` for patch tokens.

  `__call__(images)` -> (class-token features [N, D], dino-head logits [N, K]) is the plain
  path (init, evaluation conventions). `forward` is the training pass (see there).
  """

  backbone: nn.Module
  dino_head: nn.Module
  ibot_head: nn.Module | None = None

  def __call__(self, x, train: bool = True):
    features = self.backbone(x, train=train)
    logits = self.dino_head(features, train=train)
    if self.ibot_head is not None and self.is_initializing():
      self.ibot_head(features, train=train)
    return features, logits

  def patch_head(self, x, train: bool = True):
    return (self.ibot_head or self.dino_head)(x, train=train)

  def forward(self, global_crops, local_groups, masks, patch_ids, train: bool = True):
    """The training pass.

    global_crops: [R, S, S, C], R = 2B global crops, rows (image, crop) image-major.
    local_groups: tuple of [B, n_g, s, s, C] local crop groups (may be empty).
    masks: [R, N] bool (True: masked for this network) or None (the teacher: unmasked).
    patch_ids: [G, U] int, per group of R // G crops the flat (crop-in-group x N + patch)
      positions whose patch tokens go through the patch head.
    Returns (class tokens [R, D], class logits [B, V, K] with the global crops first, patch
      logits [G, U, K']).
    """
    tokens = self.backbone(global_crops, train=train, masks=masks, return_tokens=True)
    prefix = self.backbone.num_prefix_tokens
    cls = tokens[:, 0]  # [R, D]
    b = global_crops.shape[0] // NUM_GLOBAL_CROPS
    crops = [cls.reshape(b, NUM_GLOBAL_CROPS, -1)]
    for group in local_groups:
      local = self.backbone(group.reshape(-1, *group.shape[2:]), train=train)
      crops.append(local.reshape(b, group.shape[1], -1))
    crops = jnp.concatenate(crops, axis=1)  # [B, V, D]
    cls_logits = self.dino_head(crops.reshape(-1, crops.shape[-1]), train=train)
    cls_logits = cls_logits.reshape(b, crops.shape[1], -1)
    patches = tokens[:, prefix:]  # [R, N, D]
    num_groups, per_group = patch_ids.shape
    grouped = patches.reshape(num_groups, -1, patches.shape[-1])  # [G, (R/G) N, D]
    gathered = jnp.take_along_axis(grouped, patch_ids[:, :, None], axis=1)  # [G, U, D]
    patch_logits = self.patch_head(gathered.reshape(num_groups * per_group, -1), train=train)
    return cls, cls_logits, patch_logits.reshape(num_groups, per_group, -1)


def masked_buffer_size(group: int, num_patches: int, mask_probability: float, ratio_min_max):
  """An upper bound on the masked patches of `group` crops masked together by
  `masking.dinov2_masks`: the reference's `upperbound` (collate_data_and_cast: the sum over the
  masked crops of int(N x their bin's upper ratio)), + 1 per masked crop for float32 rounding of
  the drawn ratios."""
  n_masked = int(group * mask_probability)
  edges = np.linspace(ratio_min_max[0], ratio_min_max[1], n_masked + 1).astype(np.float32)
  bound = int(np.sum(np.floor(np.float32(num_patches) * edges[1:]))) + n_masked
  return max(min(bound, group * num_patches), 1)


def masked_patch_ids(masks, num_groups: int, size: int):
  """Positions of the masked patches of each group, in a fixed-size buffer.

  masks: [R, N] bool, R divisible by num_groups. Returns (ids [G, size] int32: flat positions
  (crop-in-group x N + patch) of the group's masked patches in order, padded with 0;
  weights [G, size] float32: 1 / (masked patches of the row's crop) for real rows, 0 for padding).
  `size` must bound every group's masked count (`masked_buffer_size`); a larger count
  would drop patches, so the caller's masks must respect it.
  """
  n = masks.shape[1]
  grouped = masks.reshape(num_groups, -1)  # [G, (R/G) N]
  per_crop = jnp.maximum(jnp.sum(masks, axis=1), 1).astype(jnp.float32)  # [R]
  per_crop = per_crop.reshape(num_groups, -1)  # [G, R/G]

  def one(group_mask, group_counts):
    (ids,) = jnp.nonzero(group_mask, size=size, fill_value=0)
    valid = jnp.arange(size) < jnp.sum(group_mask)
    weights = jnp.where(valid, 1.0 / group_counts[ids // n], 0.0)
    return ids.astype(jnp.int32), weights

  return jax.vmap(one)(grouped, per_crop)


class DINOv2(DINO):
  name = "dinov2"
  provides_probe_features = True  # student class tokens of the first global crop (maybe masked)

  @classmethod
  def default_config(cls):
    config = DINO.default_config()
    config.update(
      dict(
        # ssl_default_config.yaml (the ViT-L/16 ImageNet-1k recipe, vitl16_short.yaml)
        momentum_teacher=0.992,
        norm_last_layer=False,  # the reference trains the weight-norm gain
        global_crop_scale=(0.32, 1.0),
        local_crop_scale=(0.05, 0.32),
        weight_decay_end=0.4,
        dino_loss_weight=1.0,
        koleo_loss_weight=0.1,
        ibot_loss_weight=1.0,
        ibot_separate_head=False,  # the reference's L/14 and g/14 recipes: True
        ibot_out_dim=65536,
        ibot_hidden_dim=2048,
        ibot_bottleneck_dim=256,
        ibot_head_layers=3,
        mask_probability=0.5,  # fraction of the global crops that are masked
        mask_ratio=(0.1, 0.5),  # per-crop masked ratio range (mask_ratio_min_max)
        mask_min_patches=4,  # MaskingGenerator's min_num_patches (one block); its max: N / 2
        mask_aspect=(0.3, 1 / 0.3),
        mask_group_size=128,  # global crops masked together: the reference's per-GPU 2 x 64
        centering="centering",  # centering | sinkhorn_knopp
        layer_decay=0.9,  # layerwise_decay
        patch_embed_lr_mult=0.2,
      )
    )
    return config

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, model = self.cfg, config.model
    if model.name != "vit":
      raise ValueError(
        f"DINOv2 trains a ViT (masked patch tokens); got config.model.name={model.name!r}. "
        f"Set --config.model.name=vit."
      )
    if not model.get("mask_token", False):
      raise ValueError(
        "DINOv2's student replaces masked patches by a learned mask token: set "
        "--config.model.mask_token=True (the presets do; it is part of the saved model, so "
        "evaluation and export rebuild the same backbone)."
      )
    p = model.patch_size
    sizes = {"dataset.image_size (global crops)": run.image_size}
    if cfg.num_local_crops:
      sizes["dinov2.local_crop_size"] = cfg.local_crop_size
    for what, size in sizes.items():
      if size % p:
        raise ValueError(
          f"config.{what}={size} is not a multiple of the ViT patch size {p}: DINOv2 crops "
          f"must tile into patches (the reference: 224 and 98 px for patch 14, 96 for 16); "
          f"use {max(p, size // p * p)} or {(size // p + 1) * p}."
        )
    if cfg.centering not in CENTERINGS:
      raise ValueError(f"config.dinov2.centering={cfg.centering!r}: choose one of {CENTERINGS}.")
    lo, hi = cfg.mask_ratio
    if not 0.0 <= lo <= hi <= 1.0:
      raise ValueError(
        f"config.dinov2.mask_ratio={tuple(cfg.mask_ratio)} needs 0 <= lo <= hi <= 1."
      )
    if not 0.0 <= cfg.mask_probability <= 1.0:
      raise ValueError(f"config.dinov2.mask_probability={cfg.mask_probability} must be in [0, 1].")
    rows = NUM_GLOBAL_CROPS * run.global_batch
    group = cfg.mask_group_size
    if group < 1 or rows % group:
      raise ValueError(
        f"config.dinov2.mask_group_size={group} must divide the {rows} global crops of a batch "
        f"(2 x batch_size={run.global_batch}); the reference masks per GPU, 2 x 64 = 128 crops."
      )
    per_device = rows // sharding.num_batch_shards(mesh)
    if per_device % group:
      # Still correct, but a group straddles devices: the patch gather then communicates.
      raise ValueError(
        f"config.dinov2.mask_group_size={group} does not divide the {per_device} global crops "
        f"each device holds; pick a divisor of {per_device} so masking stays on-device."
      )
    for key in ("dino_loss_weight", "koleo_loss_weight", "ibot_loss_weight"):
      if cfg[key] < 0:
        raise ValueError(f"config.dinov2.{key}={cfg[key]} must be >= 0.")
    if not 0 < cfg.layer_decay <= 1 or cfg.patch_embed_lr_mult <= 0:
      raise ValueError(
        f"config.dinov2.layer_decay={cfg.layer_decay} must be in (0, 1] and "
        f"patch_embed_lr_mult={cfg.patch_embed_lr_mult} > 0 (the reference: 0.9 and 0.2)."
      )
    self.grid = run.image_size // p
    self.num_patches = self.grid * self.grid
    self.num_groups = rows // group
    self.buffer_size = masked_buffer_size(
      group, self.num_patches, cfg.mask_probability, tuple(cfg.mask_ratio)
    )

  def network(self, teacher: bool = False):
    cfg, model = self.cfg, self.config.model
    if teacher and model.drop_path_rate:
      model = ml_collections.ConfigDict(model.to_dict())
      model.drop_path_rate = 0.0
    dtype = get_dtype(self.config.dtype)
    head = lambda out_dim, hidden, bottleneck, layers: DINOHead(
      out_dim=out_dim,
      hidden_dim=hidden,
      bottleneck_dim=bottleneck,
      num_layers=layers,
      use_bn=cfg.head_use_bn,
      norm_last_layer=cfg.norm_last_layer,
      dtype=dtype,
    )
    ibot = None
    if cfg.ibot_separate_head:
      ibot = head(
        cfg.ibot_out_dim, cfg.ibot_hidden_dim, cfg.ibot_bottleneck_dim, cfg.ibot_head_layers
      )
    return DINOv2Network(
      backbone=make_backbone(model, self.config.dtype),
      dino_head=head(cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_layers),
      ibot_head=ibot,
    )

  @property
  def patch_out_dim(self) -> int:
    return self.cfg.ibot_out_dim if self.cfg.ibot_separate_head else self.cfg.out_dim

  def init_state(self, rng, variables):
    return dict(
      super().init_state(rng, variables),
      patch_center=jnp.zeros((self.patch_out_dim,), jnp.float32),
    )

  def lr_multipliers(self, params):
    """Per-parameter lr multipliers: layer-wise decay on the backbone (the reference's
    `get_vit_lr_decay_rate`), x patch_embed_lr_mult on the patch embedding; heads 1."""
    cfg = self.cfg
    ids, last = vit_layer_ids(params["backbone"])

    def scale(path, layer):
      rate = np.asarray(cfg.layer_decay, np.float64) ** (last - np.asarray(layer))
      if path[0].key == "patch_embed":
        rate = rate * cfg.patch_embed_lr_mult
      return rate.astype(np.float32)

    backbone = jax.tree_util.tree_map_with_path(scale, ids)
    ones = lambda tree: jax.tree.map(lambda _: np.float32(1.0), tree)
    return {k: backbone if k == "backbone" else ones(v) for k, v in params.items()}

  def wrap_optimizer(self, tx):
    cfg = self.cfg
    if cfg.weight_decay_end >= 0:
      tx = optax.chain(tx, self._weight_decay_schedule_correction())
    if cfg.layer_decay != 1.0 or cfg.patch_embed_lr_mult != 1.0:
      tx = optax.chain(tx, optim.scale_by_multipliers(self.lr_multipliers))
    in_last_layer = lambda path: (
      len(path) > 1 and path[0].key in ("dino_head", "ibot_head") and path[1].key == "last_layer"
    )
    last_layer = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: in_last_layer(path), params
    )
    return optim.freeze_for_steps(
      tx, last_layer, self.run.epochs_to_steps(cfg.freeze_last_layer_epochs)
    )

  def teacher_temperature(self, step):
    """The reference's per-step linear warm-up: linspace(warmup_teacher_temp, teacher_temp,
    W)[step] for the first W = warmup_teacher_temp_epochs steps-worth, then teacher_temp."""
    cfg = self.cfg
    warmup = self.run.epochs_to_steps(cfg.warmup_teacher_temp_epochs)
    if warmup <= 0:
      return jnp.asarray(cfg.teacher_temp, jnp.float32)
    step = jnp.asarray(step, jnp.float32)
    progress = step / max(warmup - 1, 1)
    warm = cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * progress
    return jnp.where(step < warmup, warm, cfg.teacher_temp).astype(jnp.float32)

  def sample_masks(self, rng, rows: int):
    """[rows, N] bool block-wise masks, drawn per group of `mask_group_size` global crops."""
    cfg, group = self.cfg, self.cfg.mask_group_size
    keys = jax.random.split(rng, rows // group)
    draw = lambda key: masking.dinov2_masks(
      key,
      group,
      self.grid,
      self.grid,
      mask_probability=cfg.mask_probability,
      ratio_min_max=tuple(cfg.mask_ratio),
      min_num_patches=cfg.mask_min_patches,
      max_num_patches=None,  # the reference's 0.5 * N (dinov2/train/train.py)
      min_aspect=cfg.mask_aspect[0],
      max_aspect=cfg.mask_aspect[1],
    )
    return jax.vmap(draw)(keys).reshape(rows, self.num_patches)

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.cfg
    views = tuple(batch["views"])
    global_crops = group_by_size(views[:NUM_GLOBAL_CROPS])[0]  # [B, 2, S, S, C]
    b = global_crops.shape[0]
    global_crops = global_crops.reshape(-1, *global_crops.shape[2:])  # [R, S, S, C]
    rows = global_crops.shape[0]
    local_groups = group_by_size(views[NUM_GLOBAL_CROPS:]) if len(views) > NUM_GLOBAL_CROPS else ()
    if rng is None:  # no masking without randomness (the step always passes a key)
      masks = jnp.zeros((rows, self.num_patches), bool)
      dropout = {}
    else:
      masks = self.sample_masks(jax.random.fold_in(rng, 1), rows)
      dropout = {"dropout": jax.random.fold_in(rng, 0)}
    groups = rows // cfg.mask_group_size
    patch_ids, patch_weights = masked_patch_ids(masks, groups, self.buffer_size)

    (cls, student_cls, student_patch), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      global_crops,
      local_groups,
      masks,
      patch_ids,
      train=True,
      mutable=["batch_stats"],
      rngs=dropout,
      method=DINOv2Network.forward,
    )
    teacher_vars = self.teacher.variables(method_state["teacher"])
    (_, teacher_cls, teacher_patch), teacher_updates = self.network(teacher=True).apply(
      teacher_vars,
      global_crops,
      (),
      None,
      patch_ids,
      train=True,
      mutable=["batch_stats"],
      method=DINOv2Network.forward,
    )
    temp = self.teacher_temperature(method_state["step"])
    teacher_cls = teacher_cls.astype(jnp.float32)  # [B, 2, K]
    teacher_patch = teacher_patch.reshape(-1, teacher_patch.shape[-1]).astype(jnp.float32)
    valid = patch_weights.reshape(-1) > 0
    new_state = dict(method_state)
    if cfg.centering == "centering":
      cls_targets = dino_losses.centered_teacher_probs(teacher_cls, method_state["center"], temp)
      patch_targets = dino_losses.centered_teacher_probs(
        teacher_patch, method_state["patch_center"], temp
      )
      new_state["center"] = dino_losses.update_center(
        method_state["center"], teacher_cls, cfg.center_momentum
      )
      new_state["patch_center"] = dinov2_losses.update_patch_center(
        method_state["patch_center"], teacher_patch, valid, cfg.center_momentum
      )
    else:
      cls_targets = dinov2_losses.sinkhorn_knopp_teacher(
        teacher_cls.reshape(rows, -1), temp
      ).reshape(teacher_cls.shape)
      patch_targets = dinov2_losses.sinkhorn_knopp_teacher(teacher_patch, temp, mask=valid)

    dino, metrics = dino_losses.cross_entropy_over_pairs(student_cls, cls_targets, cfg.student_temp)
    ibot = dinov2_losses.ibot_patch_loss_gathered(
      student_patch.reshape(-1, student_patch.shape[-1]),
      patch_targets,
      patch_weights.reshape(-1),
      rows,
      cfg.student_temp,
    )
    koleo_fn = sharding.shard_over_batch(
      lambda x, *, axis_name: dinov2_losses.koleo_loss(x, axis_name=axis_name), self.mesh, 1
    )
    per_crop = cls.reshape(b, NUM_GLOBAL_CROPS, -1)
    koleo = sum(koleo_fn(per_crop[:, c]) for c in range(NUM_GLOBAL_CROPS))
    loss = cfg.dino_loss_weight * dino + cfg.ibot_loss_weight * ibot + cfg.koleo_loss_weight * koleo
    metrics = dict(
      metrics,
      dino_loss=dino,
      ibot_loss=ibot,
      koleo_loss=koleo,
      masked_ratio=jnp.mean(masks.astype(jnp.float32)),
      teacher_temp=temp,
      **{PROBE_FEATURES: per_crop[:, 0]},
    )
    new_state["teacher"] = self.teacher.with_batch_stats(
      method_state["teacher"],
      teacher_updates.get("batch_stats", method_state["teacher"]["batch_stats"]),
    )
    return loss, (metrics, updates.get("batch_stats", batch_stats), new_state)
