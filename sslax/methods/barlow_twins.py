"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' embeddings -> identity.

Projector: 3 layers (Linear-BN-ReLU x 2, Linear), 8192-d at ImageNet scale. The loss
standardises each dimension over the global batch (the paper's affine-free BatchNorm) and
all-reduces the [D, D] cross-correlation. Views: BYOL's asymmetric blur / solarize.
"""
from __future__ import annotations

import ml_collections

from sslax import losses, sharding
from sslax.methods.base import Method
from sslax.methods.siamese import SiameseNetwork, embedding_std, forward_views, two_views
from sslax.models import ProjectionHead, get_dtype, make_backbone


class BarlowTwins(Method):
  name = "barlow_twins"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(dict(
        proj_hidden_dim=8192,
        proj_dim=8192,
        proj_layers=3,
        lambda_offdiag=5e-3,            # lambda of the paper (its code uses 0.0051)
        lambda_offdiag_is_1_over_dim=False,  # True: lambda = 1 / proj_dim (Tsai et al. 2021)
        view_blur_prob=(1.0, 0.1),
        view_solarize_prob=(0.0, 0.2),
    ))

  def views(self):
    cfg = self.config.barlow_twins
    return two_views(self.config, cfg.view_blur_prob, cfg.view_solarize_prob)

  def network(self):
    cfg = self.config.barlow_twins
    projector = ProjectionHead(hidden_dim=cfg.proj_hidden_dim, out_dim=cfg.proj_dim,
                               num_layers=cfg.proj_layers, dtype=get_dtype(self.config.dtype))
    return SiameseNetwork(backbone=make_backbone(self.config.model, self.config.dtype),
                          projector=projector)

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.barlow_twins
    ((_, z1, _), (_, z2, _)), batch_stats = forward_views(
        self.network(), params, batch_stats, batch["views"])
    lam = None if cfg.lambda_offdiag_is_1_over_dim else cfg.lambda_offdiag
    barlow = sharding.shard_over_batch(
        lambda a, b, axis_name: losses.barlow_twins_loss(a, b, lam, axis_name=axis_name),
        self.mesh, num_args=2)
    loss, metrics = barlow(z1, z2)
    return loss, (dict(metrics, embedding_std=embedding_std(z1)), batch_stats, method_state)
