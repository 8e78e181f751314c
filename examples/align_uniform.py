"""A complete method in one file: Alignment and Uniformity on the hypersphere (Wang & Isola,
ICML 2020; reference code github.com/SsnL/align_uniform).

The README's "Adding a method" walks through this file. Loss on L2-normalised embeddings
z1, z2 of two views of each image:
  align   = mean_i ||z1_i - z2_i||^alpha
  uniform = log mean_{i != j} exp(-t ||z_i - z_j||^2), over the GLOBAL batch, for each view
  loss    = align_weight * align + uniform_weight * (uniform(z1) + uniform(z2)) / 2
(the reference's defaults: alpha 2, t 2, both weights 1).

Use it from a config file (importing the module registers the method):
  from examples import align_uniform  # noqa: F401
  config = presets.fashion_mnist_cpu("align_uniform")
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from jax import lax

from sslax import sharding
from sslax.data.augment import ViewSpec
from sslax.losses.common import gather_rows, l2_normalize
from sslax.methods import Method, register
from sslax.models import BackboneWithHead, ProjectionHead, get_dtype, make_backbone


def align_uniform_loss(
  z1, z2, *, alpha=2.0, t=2.0, align_weight=1.0, uniform_weight=1.0, axis_name=None
):
  """z1, z2: [b, D] local embeddings of the two views (this device's rows of the global batch).

  Returns (loss, metrics), equal on every device and equal to the one-device value on the
  global batch: the alignment term is a mean over rows, the uniformity term a mean over all
  ordered pairs of different rows of the global batch.
  """
  z1, z2 = l2_normalize(z1.astype(jnp.float32)), l2_normalize(z2.astype(jnp.float32))
  align_sum = jnp.sum(jnp.sum((z1 - z2) ** 2, axis=-1) ** (alpha / 2))

  def pair_sum(z):
    everyone, offset = gather_rows(z, axis_name)  # [B, D]: negatives from every device
    sq_dist = jnp.sum((z[:, None, :] - everyone[None, :, :]) ** 2, axis=-1)  # [b, B]
    not_self = jnp.arange(everyone.shape[0])[None, :] != (jnp.arange(z.shape[0]) + offset)[:, None]
    return jnp.sum(jnp.where(not_self, jnp.exp(-t * sq_dist), 0.0)), everyone.shape[0]

  (s1, big_b), (s2, _) = pair_sum(z1), pair_sum(z2)
  if axis_name is not None:
    align_sum, s1, s2 = lax.psum((align_sum, s1, s2), axis_name)
  pairs = big_b * (big_b - 1)
  align = align_sum / big_b
  uniform = (jnp.log(s1 / pairs) + jnp.log(s2 / pairs)) / 2
  loss = align_weight * align + uniform_weight * uniform
  return loss, {"align": align, "uniform": uniform}


@register
class AlignUniform(Method):
  name = "align_uniform"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        alpha=2.0, t=2.0, align_weight=1.0, uniform_weight=1.0, proj_hidden_dim=512, proj_dim=128
      )
    )

  def views(self):
    # Two views from config.augment, at the run's image size.
    spec = ViewSpec.from_config(self.config.augment, self.run.image_size)
    return (spec, spec)

  def network(self):
    cfg = self.config.align_uniform
    head = ProjectionHead(
      hidden_dim=cfg.proj_hidden_dim, out_dim=cfg.proj_dim, dtype=get_dtype(self.config.dtype)
    )
    return BackboneWithHead(backbone=make_backbone(self.config.model, self.config.dtype), head=head)

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.align_uniform
    net, variables = self.network(), {"params": params, "batch_stats": batch_stats}
    zs = []
    for view in batch["views"]:  # one pass per view: BN statistics over each view's global batch
      (_, z), updates = net.apply(variables, view, train=True, mutable=["batch_stats"])
      variables = dict(variables, batch_stats=updates["batch_stats"])
      zs.append(z)
    loss_fn = sharding.shard_over_batch(
      lambda z1, z2, axis_name: align_uniform_loss(
        z1,
        z2,
        alpha=cfg.alpha,
        t=cfg.t,
        align_weight=cfg.align_weight,
        uniform_weight=cfg.uniform_weight,
        axis_name=axis_name,
      ),
      self.mesh,
      num_args=2,
    )
    loss, metrics = loss_fn(*zs)
    return loss, (metrics, variables["batch_stats"], method_state)
