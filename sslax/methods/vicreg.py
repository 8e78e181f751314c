"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on two views' embeddings.

Expander (projector): 3 layers (Linear-BN-ReLU x 2, Linear), 8192-d at ImageNet scale.
Variance and covariance are taken over the global batch (psum of sums and of z^T z). Views:
BYOL's asymmetric blur / solarize, as in the paper.
"""
from __future__ import annotations

import ml_collections

from sslax import losses, sharding
from sslax.methods.base import Method
from sslax.methods.siamese import SiameseNetwork, embedding_std, forward_views, two_views
from sslax.models import ProjectionHead, get_dtype, make_backbone


class VICReg(Method):
  name = "vicreg"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(dict(
        proj_hidden_dim=8192,
        proj_dim=8192,
        proj_layers=3,
        sim_coeff=25.0,         # lambda (invariance)
        var_coeff=25.0,         # mu (variance); 12.5 matches the authors' code (see the loss)
        cov_coeff=1.0,          # nu (covariance)
        view_blur_prob=(1.0, 0.1),
        view_solarize_prob=(0.0, 0.2),
    ))

  def views(self):
    cfg = self.config.vicreg
    return two_views(self.config, cfg.view_blur_prob, cfg.view_solarize_prob)

  def network(self):
    cfg = self.config.vicreg
    projector = ProjectionHead(hidden_dim=cfg.proj_hidden_dim, out_dim=cfg.proj_dim,
                               num_layers=cfg.proj_layers, dtype=get_dtype(self.config.dtype))
    return SiameseNetwork(backbone=make_backbone(self.config.model, self.config.dtype),
                          projector=projector)

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.vicreg
    ((_, z1, _), (_, z2, _)), batch_stats = forward_views(
        self.network(), params, batch_stats, batch["views"])
    vicreg = sharding.shard_over_batch(
        lambda a, b, axis_name: losses.vicreg_loss(
            a, b, cfg.sim_coeff, cfg.var_coeff, cfg.cov_coeff, axis_name=axis_name),
        self.mesh, num_args=2)
    loss, metrics = vicreg(z1, z2)
    return loss, (dict(metrics, embedding_std=embedding_std(z1)), batch_stats, method_state)
