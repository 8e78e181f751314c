"""SimCLR (Chen et al. 2020): two views, a projection head, NT-Xent over the global batch.

Projection head as the reference's `projection_head` (google-research/simclr, v1 and v2):
(bias-free Linear -> BN -> ReLU) x (L-1) -> bias-free Linear -> BN with a learned scale and no
centre (beta). `proj_layers` counts the Linears: 2 in v1, 3 in v2.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from sslax import losses, sharding
from sslax.data.augment import ViewSpec, train_crop_size
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.models import BackboneWithHead, ProjectionHead, get_dtype, make_backbone


class SimCLR(Method):
  name = "simclr"
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        temperature=0.5,  # tau of NT-Xent (0.1 for ImageNet at batch 4096)
        proj_hidden_dim=2048,
        proj_dim=128,
        proj_layers=2,  # SimCLR v1: 2; v2: 3
      )
    )

  def views(self):
    spec = ViewSpec.from_config(self.config.augment, train_crop_size(self.config))
    return (spec, spec)

  def network(self):
    cfg = self.config.simclr
    head = ProjectionHead(
      hidden_dim=cfg.proj_hidden_dim,
      out_dim=cfg.proj_dim,
      num_layers=cfg.proj_layers,
      last_bn=True,
      last_bn_scale=True,  # the reference's BN(center=False): gamma, no beta
      dtype=get_dtype(self.config.dtype),
    )
    return BackboneWithHead(backbone=make_backbone(self.config.model, self.config.dtype), head=head)

  def loss(self, params, batch_stats, method_state, batch, rng):
    view1, view2 = batch["views"]
    b = view1.shape[0]
    # Both views go through one forward pass so BatchNorm normalises over all 2B crops, as in
    # SimCLR. Stacking on axis 1 keeps each device's rows local (no resharding).
    x = jnp.stack([view1, view2], axis=1).reshape(2 * b, *view1.shape[1:])
    (features, z), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    z = z.reshape(b, 2, -1)
    nt_xent = sharding.shard_over_batch(
      lambda z1, z2, axis_name: losses.nt_xent_loss(
        z1, z2, self.config.simclr.temperature, axis_name=axis_name
      ),
      self.mesh,
      num_args=2,
    )
    loss, metrics = nt_xent(z[:, 0], z[:, 1])
    metrics = dict(metrics, **{PROBE_FEATURES: features.reshape(b, 2, -1)[:, 0]})
    return loss, (metrics, updates["batch_stats"], method_state)
