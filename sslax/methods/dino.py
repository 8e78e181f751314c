"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Student: backbone -> DINOHead (MLP with GELU -> bottleneck -> L2-normalise -> weight-normalised
`last_layer` with `out_dim` prototypes; its gain fixed to 1 with `norm_last_layer`, the
reference's default, trained without: the reference's ViT-S runs). Teacher: the same network whose params
are an EMA of the student's (momentum from `momentum_teacher` to 1, cosine over the run, the
reference's per-iteration schedule), held in `method_state` and never differentiated.

Loss (`losses.dino`): the student's softmax at `student_temp` predicts the teacher's centred
softmax at the teacher temperature for every pair of different crops; the teacher only sees
the 2 global crops, the student all of them. Teacher temperature: linear warmup from
`warmup_teacher_temp` to `teacher_temp` over the first `warmup_teacher_temp_epochs` epochs (the
reference's per-epoch np.linspace), then constant. Center: after each loss, center <- m center
+ (1 - m) mean of the teacher outputs over the GLOBAL batch and both global crops (m =
`center_momentum`), held in `method_state`.

Multi-crop: `views()` returns 2 global crops (config.dataset.image_size, `global_crop_scale`,
blur 1.0 / 0.1 and solarize 0.0 / 0.2 as in the reference's DataAugmentationDINO) then
`num_local_crops` local crops (`local_crop_size`, `local_crop_scale`, blur 0.5). Crops of one
size go through the backbone in one pass (the reference's MultiCropWrapper), the head runs once
on all of them. A ViT backbone must accept the local crop size (position embeddings
interpolated to the number of patches).

Optimisation: `wrap_optimizer` freezes the head's `last_layer` for the first
`freeze_last_layer_epochs` epochs (no update, no weight decay, no Adam moments: the
reference's `cancel_gradients_last_layer`). Gradient clipping is `optimizer.grad_clip_norm`
(DINO: 3.0) with `optimizer.grad_clip_mode="per_param"`: each parameter's gradient norm on its
own, as the reference's `utils.clip_gradients` (a "global" clip would see each freeze group
separately, see `sslax.optim.freeze_for_steps`). With
`weight_decay_end >= 0` the decoupled weight decay follows DINO's cosine schedule from
`optimizer.weight_decay` to `weight_decay_end` (AdamW only).

The step counter in `method_state["step"]` (steps taken) drives the schedules inside the loss.
Evaluation and export use the student's backbone (the paper reports the teacher, which is
usually ~1 point better; the teacher's params are in the checkpoint's method_state).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import optim, sharding
from sslax.losses import dino as dino_losses
from sslax.methods import multicrop
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.multicrop import NUM_GLOBAL_CROPS, group_by_size
from sslax.methods.teacher import EMATeacher
from sslax.models import get_dtype, make_backbone
from sslax.models.dino_head import DINOHead


class DINONetwork(nn.Module):
  backbone: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = True):
    """x: images [N, S, S, C], or a tuple of crop groups [B, n_g, S_g, S_g, C] (one per size).

    Returns (features, head logits): [N, F], [N, K] for an array input; [B, V, F], [B, V, K]
    (crops in input order) for crop groups.
    """
    if not isinstance(x, (tuple, list)):
      features = self.backbone(x, train=train)
      return features, self.head(features, train=train)
    features = multicrop.encode_crops(self.backbone, x, train)  # [B, V, F]
    b = features.shape[0]
    logits = self.head(features.reshape(-1, features.shape[-1]), train=train)
    return features, logits.reshape(b, features.shape[1], -1)


class DINO(Method):
  name = "dino"
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        out_dim=65536,  # prototypes K
        hidden_dim=2048,
        bottleneck_dim=256,
        head_layers=3,
        head_use_bn=False,  # the reference: False for ViTs
        norm_last_layer=True,  # the reference's default; its ViT-S/16 runs use False
        student_temp=0.1,
        teacher_temp=0.07,  # after warmup (0.04 for short runs / unstable setups)
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_epochs=30,  # integer epochs, as the reference
        center_momentum=0.9,
        momentum_teacher=0.996,  # cosine to 1 over the run
        freeze_last_layer_epochs=1.0,
        weight_decay_end=-1.0,  # < 0: constant optimizer.weight_decay; DINO: 0.4
        global_crop_scale=(0.4, 1.0),
        global_blur_prob=(1.0, 0.1),
        global_solarize_prob=(0.0, 0.2),
        num_local_crops=8,
        local_crop_size=96,
        local_crop_scale=(0.05, 0.4),
        local_blur_prob=0.5,
      )
    )

  @property
  def cfg(self) -> ml_collections.ConfigDict:
    """This method's config section (`config.dino`; `config.dinov2` for the subclass)."""
    return self.config[self.name]

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, name = self.cfg, self.name
    if cfg.num_local_crops < 0 or (cfg.num_local_crops and cfg.local_crop_size < 1):
      raise ValueError(
        f"config.{name}.num_local_crops={cfg.num_local_crops} must be >= 0 and "
        f"local_crop_size={cfg.local_crop_size} >= 1."
      )
    for key in ("global_crop_scale", "local_crop_scale"):
      lo, hi = cfg[key]
      if not 0 < lo <= hi <= 1:
        raise ValueError(f"config.{name}.{key}={tuple(cfg[key])} must satisfy 0 < lo <= hi <= 1.")
    for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
      if cfg[key] <= 0:
        raise ValueError(
          f"config.{name}.{key}={cfg[key]} must be > 0 (DINO: student 0.1, teacher 0.04 -> 0.07)."
        )
    for key in ("center_momentum", "momentum_teacher"):
      if not 0.0 <= cfg[key] <= 1.0:
        raise ValueError(f"config.{name}.{key}={cfg[key]} must be in [0, 1].")
    if cfg.out_dim < 1:
      raise ValueError(f"config.{name}.out_dim={cfg.out_dim} must be >= 1 (DINO: 65536).")
    if cfg.weight_decay_end >= 0 and config.optimizer.name != "adamw":
      raise ValueError(
        f"config.{name}.weight_decay_end={cfg.weight_decay_end} schedules AdamW's "
        f"decoupled weight decay, but optimizer.name={config.optimizer.name!r}; "
        f"set --config.optimizer.name=adamw or --config.{name}.weight_decay_end=-1."
      )

  def views(self):
    cfg = self.cfg
    return multicrop.crop_views(
      self.config.augment,
      global_size=self.run.image_size,
      global_scale=cfg.global_crop_scale,
      num_local=cfg.num_local_crops,
      local_size=cfg.local_crop_size,
      local_scale=cfg.local_crop_scale,
      global_overrides=[
        dict(
          blur_prob=float(cfg.global_blur_prob[i]), solarize_prob=float(cfg.global_solarize_prob[i])
        )
        for i in range(NUM_GLOBAL_CROPS)
      ],
      local_overrides=dict(blur_prob=cfg.local_blur_prob, solarize_prob=0.0),
    )

  def network(self, teacher: bool = False):
    """The student; teacher=True: the same network without stochastic depth (the reference
    builds its teacher with drop_path_rate 0). Both have the same params."""
    cfg, model = self.cfg, self.config.model
    if teacher and model.get("drop_path_rate", 0.0):
      model = ml_collections.ConfigDict(model.to_dict())
      model.drop_path_rate = 0.0
    head = DINOHead(
      out_dim=cfg.out_dim,
      hidden_dim=cfg.hidden_dim,
      bottleneck_dim=cfg.bottleneck_dim,
      num_layers=cfg.head_layers,
      use_bn=cfg.head_use_bn,
      norm_last_layer=cfg.norm_last_layer,
      dtype=get_dtype(self.config.dtype),
    )
    return DINONetwork(backbone=make_backbone(model, self.config.dtype), head=head)

  # The teacher is the whole student network (backbone + head), by EMA.
  teacher = EMATeacher(modules=None)

  def wrap_optimizer(self, tx):
    cfg = self.cfg
    if cfg.weight_decay_end >= 0:
      tx = optax.chain(tx, self._weight_decay_schedule_correction())
    in_last_layer = lambda path: (
      len(path) > 1 and path[0].key == "head" and path[1].key == "last_layer"
    )
    last_layer = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: in_last_layer(path), params
    )
    num_steps = self.run.epochs_to_steps(cfg.freeze_last_layer_epochs)
    return optim.freeze_for_steps(tx, last_layer, num_steps)

  def weight_decay(self, step):
    """DINO's cosine weight decay schedule from optimizer.weight_decay to weight_decay_end."""
    return optim.cosine_increase(
      self.config.optimizer.weight_decay, self.cfg.weight_decay_end, self.run.total_steps
    )(step)

  def _weight_decay_schedule_correction(self) -> optax.GradientTransformation:
    """Adds -lr(t) (wd(t) - wd_0) p to AdamW's update -lr(t) (adam + wd_0 p) on decayed params,
    so the total decay is lr(t) wd(t) p as in DINO, without rebuilding the configured optimizer.
    lr(t) is the run's schedule (RunInfo.lr_schedule)."""
    opt, lr = self.config.optimizer, self.run.lr_schedule

    def init(params):
      return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
      extra = lr(state.count) * (self.weight_decay(state.count) - opt.weight_decay)
      mask = optim.weight_decay_mask(opt)(params)
      updates = jax.tree.map(lambda u, p, m: u - extra * p if m else u, updates, params, mask)
      return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)

  def init_state(self, rng, variables):
    # The teacher starts as a copy of the student (params and BN statistics).
    return {
      "teacher": self.teacher.init(variables),
      "center": jnp.zeros((self.cfg.out_dim,), jnp.float32),
      "step": jnp.zeros((), jnp.int32),
    }

  def teacher_temperature(self, step):
    """The teacher temperature at (0-based) step `step`: DINO's per-epoch warmup."""
    cfg = self.cfg
    return dino_losses.teacher_temperature(
      step // self.run.steps_per_epoch,
      cfg.warmup_teacher_temp,
      cfg.teacher_temp,
      cfg.warmup_teacher_temp_epochs,
    )

  def momentum(self, step):
    """Teacher EMA momentum for the update after the step with 0-based index `step` (the
    reference's cosine_scheduler(momentum_teacher, 1, ...)[step])."""
    return optim.cosine_increase(self.cfg.momentum_teacher, 1.0, self.run.total_steps)(step)

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg, net = self.cfg, self.network()
    views = tuple(batch["views"])
    # Stochastic depth (ViT drop_path_rate) in the student needs a dropout rng.
    rngs = {} if rng is None else {"dropout": jax.random.fold_in(rng, 0)}
    (features, student), updates = net.apply(
      {"params": params, "batch_stats": batch_stats},
      group_by_size(views),
      train=True,
      mutable=["batch_stats"],
      rngs=rngs,
    )
    teacher_vars = self.teacher.variables(method_state["teacher"])
    (_, teacher), teacher_updates = self.network(teacher=True).apply(
      teacher_vars, group_by_size(views[:NUM_GLOBAL_CROPS]), train=True, mutable=["batch_stats"]
    )
    temp = self.teacher_temperature(method_state["step"])

    def local(student, teacher, center, temp, *, axis_name):
      loss, metrics = dino_losses.dino_loss(
        student, teacher, center, cfg.student_temp, temp, axis_name=axis_name
      )
      new_center = dino_losses.update_center(
        center, teacher, cfg.center_momentum, axis_name=axis_name
      )
      return loss, metrics, new_center

    loss_fn = sharding.shard_over_batch(local, self.mesh, num_args=2, num_replicated=2)
    loss, metrics, center = loss_fn(student, teacher, method_state["center"], temp)
    metrics = dict(metrics, teacher_temp=temp, **{PROBE_FEATURES: features[:, 0]})
    new_state = dict(
      method_state,
      center=center,
      teacher=self.teacher.with_batch_stats(
        method_state["teacher"],
        teacher_updates.get("batch_stats", method_state["teacher"]["batch_stats"]),
      ),
    )
    return loss, (metrics, updates.get("batch_stats", batch_stats), new_state)

  def after_update(self, method_state, params, step):
    """teacher <- m teacher + (1 - m) student with m = momentum(step - 1); step = steps taken."""
    teacher = self.teacher.update(method_state["teacher"], params, self.momentum(step - 1))
    return dict(method_state, teacher=teacher, step=jnp.asarray(step, jnp.int32))
