"""MoCo v2 (Chen, Fan, Girshick, He 2020, "Improved Baselines with Momentum Contrastive Learning").

Query encoder: backbone + 2-layer MLP head (no BN in the head, as in MoCo v2), trained.
Key encoder: a copy of backbone + head whose params follow the query's by EMA
(momentum 0.999) in `after_update`; it lives in `method_state` and never gets a gradient (its
params are not trained params, and its keys pass a stop-gradient). Its BatchNorm running
statistics come from its own (training-mode) forward passes, as in MoCo, whose momentum
update covers parameters, not buffers. Negatives: a queue [K, D] of unit keys from earlier
batches with a pointer; after each step the B keys of the global batch (all devices, device
order) replace the oldest B. Loss: InfoNCE over [positive, K negatives] at temperature 0.2
(`losses.moco`).

BatchNorm and the "shuffling BN" of MoCo
----------------------------------------
Under our jit over a batch-sharded mesh, BatchNorm statistics are global (cross-replica), as
in SimCLR and MoCo v3. That does NOT remove the leak MoCo's shuffling BN is for: the positive
key is the only key computed with the current batch's statistics while every negative comes
from the queue, i.e. from earlier batches, so the batch statistics themselves can serve as a
signature that points at the positive (K. He, facebookresearch/moco issue #46: "SyncBN is not
sufficient in the case of MoCo: the keys in the queue are still from different batches").
MoCo v3 and SimCLR are safe with global BN only because they have no queue.

So this method emulates MoCo's multi-GPU shuffling BN, independent of the device count: with
`shuffle_bn_groups = G` (the paper's 8 GPUs -> G = 8), queries are normalised in G contiguous
groups of B/G images, and keys in G groups after a random permutation of the global batch
(undone on the output), so a query and its positive key mostly see statistics of different
subsets (the same group with probability 1/G, as in MoCo). Each group is one vmapped forward
pass; running statistics are the mean of the groups' updates. G = 1 is plain global BN (leaky
with a queue; for ablations). Because groups are defined on the global batch, 8 devices
compute exactly what 1 does.

Symmetric loss (optional, `symmetric=True`, not in the MoCo v2 paper): 0.5 * (L(q1, k2) +
L(q2, k1)), the symmetrised MoCo v2 that later comparisons (e.g. SimSiam) reproduce; it costs a
second query and key forward pass. Only the view-2 keys are enqueued, so the queue's size and
age in steps are those of the asymmetric loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from sslax import losses, sharding
from sslax.data.augment import ViewSpec, train_crop_size
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.teacher import EMATeacher
from sslax.models import BackboneWithHead, ProjectionHead, get_dtype, make_backbone


class MoCoV2(Method):
  name = "mocov2"
  provides_probe_features = True
  teacher = EMATeacher(modules=None)  # the key encoder: backbone + head

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        temperature=0.2,
        momentum=0.999,  # key encoder EMA
        queue_size=65536,  # K; a multiple of the global batch
        proj_hidden_dim=2048,
        proj_dim=128,
        shuffle_bn_groups=8,  # MoCo's shuffling BN over this many groups; 1 = global BN
        symmetric=False,
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, batch = config.mocov2, config.batch_size
    if cfg.queue_size < batch or cfg.queue_size % batch:
      raise ValueError(
        f"config.mocov2.queue_size={cfg.queue_size} must be a positive multiple of "
        f"config.batch_size={batch} (whole batches are enqueued); try "
        f"--config.mocov2.queue_size={max(batch, cfg.queue_size // batch * batch)}."
      )
    if cfg.shuffle_bn_groups < 1 or batch % cfg.shuffle_bn_groups:
      raise ValueError(
        f"config.mocov2.shuffle_bn_groups={cfg.shuffle_bn_groups} must be >= 1 and "
        f"divide config.batch_size={batch}."
      )
    if not 0.0 <= cfg.momentum <= 1.0:
      raise ValueError(f"config.mocov2.momentum={cfg.momentum} must be in [0, 1].")

  def views(self):
    spec = ViewSpec.from_config(self.config.augment, train_crop_size(self.config))
    return (spec, spec)

  def network(self):
    cfg = self.config.mocov2
    head = ProjectionHead(
      hidden_dim=cfg.proj_hidden_dim,
      out_dim=cfg.proj_dim,
      num_layers=2,
      use_bn=False,
      dtype=get_dtype(self.config.dtype),
    )
    return BackboneWithHead(backbone=make_backbone(self.config.model, self.config.dtype), head=head)

  def init_state(self, rng, variables):
    cfg = self.config.mocov2
    queue = jax.random.normal(
      jax.random.fold_in(rng, 1), (cfg.queue_size, cfg.proj_dim), jnp.float32
    )
    return {
      # The key encoder starts as a copy of the query encoder (MoCo's initialisation).
      "teacher": self.teacher.init(variables),
      "queue": losses.l2_normalize(queue),
      "queue_ptr": jnp.zeros((), jnp.int32),
    }

  def encode(self, params, batch_stats, x, rng=None, with_features=False):
    """x [B, S, S, C] -> (unit projections [B, D], new batch_stats), BN in shuffle_bn_groups.

    rng=None keeps the row order (queries); a key permutes the global batch before grouping
    and un-permutes the output (keys), which is MoCo's shuffling BN. with_features: the
    backbone features [B, F] (rows in x's order) are returned third.
    """
    groups, net = self.config.mocov2.shuffle_bn_groups, self.network()
    variables = {"params": params, "batch_stats": batch_stats}
    apply = lambda x: net.apply(variables, x, train=True, mutable=["batch_stats"])
    batch = x.shape[0]
    if rng is not None:
      perm = jax.random.permutation(rng, batch)
      x = x[perm]
    if groups == 1:
      (h, z), updates = apply(x)
      new_stats = updates["batch_stats"]
    else:
      (h, z), updates = jax.vmap(apply)(x.reshape(groups, batch // groups, *x.shape[1:]))
      z, h = z.reshape(batch, -1), h.reshape(batch, -1)
      new_stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), updates["batch_stats"])
    if rng is not None:
      z = jnp.zeros_like(z).at[perm].set(z)  # row perm[i] of the batch was row i here
      h = jnp.zeros_like(h).at[perm].set(h)
    out = (losses.l2_normalize(z.astype(jnp.float32)), new_stats)
    return out + (h,) if with_features else out

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.mocov2
    view1, view2 = batch["views"]
    key_encoder = self.teacher.variables(method_state["teacher"])
    key_params, key_stats = key_encoder["params"], key_encoder["batch_stats"]
    rng1, rng2 = jax.random.split(rng)

    q1, batch_stats, h1 = self.encode(params, batch_stats, view1, with_features=True)
    k2, key_stats = self.encode(key_params, key_stats, view2, rng=rng2)
    pairs = [(q1, k2)]
    if cfg.symmetric:
      q2, batch_stats = self.encode(params, batch_stats, view2)
      k1, key_stats = self.encode(key_params, key_stats, view1, rng=rng1)
      pairs.append((q2, k1))

    def local(*args, axis_name):
      *qk, queue, ptr = args
      total, accs = 0.0, 0.0
      for q, k in zip(qk[0::2], qk[1::2]):
        loss, metrics = losses.info_nce_queue_loss(
          q, k, queue, cfg.temperature, axis_name=axis_name
        )
        total, accs = total + loss, accs + metrics["contrastive_acc"]
      # Enqueue after the loss: the current keys are positives now and negatives from the
      # next step on (MoCo's dequeue-and-enqueue).
      new_queue, new_ptr = losses.enqueue_keys(queue, ptr, qk[1], axis_name=axis_name)
      n = len(qk) // 2
      return total / n, {"contrastive_acc": accs / n}, new_queue, new_ptr

    flat = [a for pair in pairs for a in pair]
    loss_fn = sharding.shard_over_batch(local, self.mesh, num_args=len(flat), num_replicated=2)
    loss, metrics, queue, ptr = loss_fn(*flat, method_state["queue"], method_state["queue_ptr"])
    teacher = self.teacher.with_batch_stats(method_state["teacher"], key_stats)
    new_state = dict(method_state, teacher=teacher, queue=queue, queue_ptr=ptr)
    return loss, (dict(metrics, **{PROBE_FEATURES: h1}), batch_stats, new_state)

  def after_update(self, method_state, params, step):
    teacher = self.teacher.update(method_state["teacher"], params, self.config.mocov2.momentum)
    return dict(method_state, teacher=teacher)
