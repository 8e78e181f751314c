"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments") with multi-crop.

Network: backbone -> projection MLP (Linear-BN-ReLU-Linear) -> L2-normalise -> prototypes
(a linear map without bias whose K columns are unit vectors). Codes: Sinkhorn-Knopp
(3 iterations, epsilon 0.05) on the GLOBAL batch of each of the 2 global crops; loss: every
other crop predicts those codes with softmax(scores / 0.1) (`losses.swav`).

Prototype normalisation: the forward pass uses the column-normalised prototype matrix
(weight normalisation), so the gradient is the true gradient of the loss w.r.t. the raw
matrix. The reference code instead renormalises the stored matrix in place before each step;
both use unit prototypes in every forward pass, but the update directions differ slightly.
`Method.constrain_params` could now renormalise the stored matrix after each step as the
reference does; the forward-pass normalisation is kept until that is measured.

Freezing: for the first `freeze_prototypes_steps` optimizer steps the prototypes get no update
at all — no gradient step, no weight decay, no momentum/Adam state (`wrap_optimizer` ->
`sslax.optim.freeze_for_steps`), like the reference's `p.grad = None`.

Multi-crop: `views()` returns 2 global crops (config.dataset.image_size, scale
`global_crop_scale`) then `num_local_crops` local crops (`local_crop_size`, scale
`local_crop_scale`). Crops are grouped by size (consecutive views of equal size) and each group
goes through the backbone in one forward pass, so backbone BatchNorm statistics are per size
group (global over devices within a group), as in the reference implementation; the projection
head then runs once on the features of all crops, so its BN statistics cover all crops. The
backbone's BN running averages are updated once per group per step.

Queue (optional, `queue_length > 0`, default off): embeddings of the global crops from earlier
batches (replicated, gathered in device order) join the Sinkhorn problem once the queue is
full, as in the reference; filling starts at step `queue_start_step`. Useful for small batches
only (the reference turns it off at batch 4096).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from sslax import losses, optim, sharding
from sslax.methods import multicrop
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.multicrop import NUM_GLOBAL_CROPS, group_by_size
from sslax.models import ProjectionHead, get_dtype, make_backbone


class Prototypes(nn.Module):
  """[N, D] unit embeddings -> [N, K] scores against K unit prototypes (no bias)."""

  num_prototypes: int

  @nn.compact
  def __call__(self, z):
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (z.shape[-1], self.num_prototypes), jnp.float32
    )
    return z.astype(jnp.float32) @ losses.l2_normalize(kernel, axis=0)


class SwAVNetwork(nn.Module):
  backbone: nn.Module
  head: nn.Module
  prototypes: nn.Module

  def __call__(self, x, train: bool = True):
    """x: images [N, S, S, C], or a tuple of crop groups [B, n_g, S_g, S_g, C] (one per size).

    Returns (features, unit embeddings z, prototype scores): [N, ...] for an array input,
    [B, V, ...] (V = sum of n_g, crops in input order) for crop groups.
    """
    if not isinstance(x, (tuple, list)):
      features = self.backbone(x, train=train)
      z = losses.l2_normalize(self.head(features, train=train))
      return features, z, self.prototypes(z)
    features = multicrop.encode_crops(self.backbone, x, train)  # [B, V, F]
    b, v = features.shape[:2]
    z = losses.l2_normalize(self.head(features.reshape(b * v, -1), train=train))
    scores = self.prototypes(z)
    return features, z.reshape(b, v, -1), scores.reshape(b, v, -1)


class SwAV(Method):
  name = "swav"
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        temperature=0.1,
        epsilon=0.05,
        sinkhorn_iterations=3,
        num_prototypes=3000,
        proj_hidden_dim=2048,
        proj_dim=128,
        global_crop_scale=(0.14, 1.0),
        num_local_crops=6,
        local_crop_size=96,
        local_crop_scale=(0.05, 0.14),
        freeze_prototypes_steps=313,
        queue_length=0,  # 0 = no queue; else a multiple of the global batch
        queue_start_step=0,
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, batch = config.swav, config.batch_size
    if cfg.queue_length < 0 or cfg.queue_length % batch:
      raise ValueError(
        f"config.swav.queue_length={cfg.queue_length} must be 0 (no queue) or a "
        f"multiple of config.batch_size={batch}; try "
        f"--config.swav.queue_length={max(batch, cfg.queue_length // batch * batch)}."
      )
    if cfg.num_local_crops < 0 or (cfg.num_local_crops and cfg.local_crop_size < 1):
      raise ValueError(
        f"config.swav.num_local_crops={cfg.num_local_crops} must be >= 0 and "
        f"local_crop_size={cfg.local_crop_size} >= 1."
      )
    for key in ("global_crop_scale", "local_crop_scale"):
      lo, hi = cfg[key]
      if not 0 < lo <= hi <= 1:
        raise ValueError(f"config.swav.{key}={tuple(cfg[key])} must satisfy 0 < lo <= hi <= 1.")

  def views(self):
    cfg = self.config.swav
    return multicrop.crop_views(
      self.config.augment,
      global_size=self.run.image_size,
      global_scale=cfg.global_crop_scale,
      num_local=cfg.num_local_crops,
      local_size=cfg.local_crop_size,
      local_scale=cfg.local_crop_scale,
    )

  def network(self):
    cfg = self.config.swav
    head = ProjectionHead(
      hidden_dim=cfg.proj_hidden_dim,
      out_dim=cfg.proj_dim,
      num_layers=2,
      dtype=get_dtype(self.config.dtype),
    )
    return SwAVNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype),
      head=head,
      prototypes=Prototypes(cfg.num_prototypes),
    )

  def wrap_optimizer(self, tx):
    frozen = lambda params: {
      k: jax.tree.map(lambda _: k == "prototypes", v) for k, v in params.items()
    }
    return optim.freeze_for_steps(tx, frozen, self.config.swav.freeze_prototypes_steps)

  def init_state(self, rng, variables):
    cfg = self.config.swav
    if not cfg.queue_length:
      return {}
    return {
      "queue": jnp.zeros((NUM_GLOBAL_CROPS, cfg.queue_length, cfg.proj_dim), jnp.float32),
      "queue_fill": jnp.zeros((), jnp.int32),  # rows written so far (saturates)
      "step": jnp.zeros((), jnp.int32),
    }

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.swav
    (features, z, scores), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      group_by_size(batch["views"]),
      train=True,
      mutable=["batch_stats"],
    )
    loss_kw = dict(
      temperature=cfg.temperature,
      epsilon=cfg.epsilon,
      num_iters=cfg.sinkhorn_iterations,
      num_assign=NUM_GLOBAL_CROPS,
    )

    if not cfg.queue_length:
      loss_fn = sharding.shard_over_batch(
        lambda s, axis_name: losses.swapped_prediction_loss(s, axis_name=axis_name, **loss_kw),
        self.mesh,
        num_args=1,
      )
      loss, metrics = loss_fn(scores)
      metrics = dict(metrics, **{PROBE_FEATURES: features[:, 0]})  # the first global crop
      return loss, (metrics, updates["batch_stats"], method_state)

    queue = method_state["queue"]  # [2, Q, D]
    prototypes = losses.l2_normalize(params["prototypes"]["kernel"], axis=0)
    queue_scores = lax.stop_gradient(queue @ prototypes)  # [2, Q, K]
    use_queue = method_state["queue_fill"] >= cfg.queue_length  # the reference: once full
    filling = method_state["step"] >= cfg.queue_start_step

    def local(scores, z, queue_scores, use_queue, queue, filling, *, axis_name):
      loss, metrics = losses.swapped_prediction_loss(
        scores, axis_name=axis_name, queue_scores=queue_scores, use_queue=use_queue, **loss_kw
      )
      pushed = jnp.stack(
        [losses.push_queue(queue[i], z[:, i], axis_name=axis_name) for i in range(NUM_GLOBAL_CROPS)]
      )
      return loss, metrics, jnp.where(filling, pushed, queue)

    loss_fn = sharding.shard_over_batch(local, self.mesh, num_args=2, num_replicated=4)
    loss, metrics, new_queue = loss_fn(scores, z, queue_scores, use_queue, queue, filling)
    fill = jnp.where(
      filling,
      jnp.minimum(method_state["queue_fill"] + self.config.batch_size, cfg.queue_length),
      method_state["queue_fill"],
    )
    metrics = dict(
      metrics, queue_in_use=use_queue.astype(jnp.float32), **{PROBE_FEATURES: features[:, 0]}
    )
    new_state = dict(method_state, queue=new_queue, queue_fill=fill)
    return loss, (metrics, updates["batch_stats"], new_state)

  def after_update(self, method_state, params, step):
    if not self.config.swav.queue_length:
      return method_state
    return dict(method_state, step=jnp.asarray(step, jnp.int32))
