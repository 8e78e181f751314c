"""SimSiam (Chen & He 2021): a predictor matches the other view's projection; stop-gradient, no EMA.

Projector: 3 layers (Linear-BN-ReLU x 2, Linear-BN without affine), 2048-d at ImageNet scale.
Predictor: bottleneck MLP 2048 -> 512 -> 2048 (Linear-BN-ReLU, Linear). Views: the symmetric
recipe of `config.augment` (MoCo v2's, with blur 0.5, on ImageNet).

Optimisation: with `fix_pred_lr` (default, the reference's `--fix-pred-lr` behind its reported
numbers) the predictor trains at the constant peak lr while the encoder (backbone + projector)
follows the schedule (`wrap_optimizer` -> `sslax.optim.with_constant_lr`).
"""

from __future__ import annotations

import jax
import ml_collections

from sslax import losses, optim, sharding
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.siamese import SiameseNetwork, embedding_std, forward_views, two_views
from sslax.models import ProjectionHead, get_dtype, make_backbone


class SimSiam(Method):
  name = "simsiam"
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        proj_hidden_dim=2048,
        proj_dim=2048,
        pred_hidden_dim=512,  # the predictor's bottleneck
        fix_pred_lr=True,  # the predictor's lr stays at the peak (the reference's --fix-pred-lr)
      )
    )

  def views(self):
    return two_views(self.config)

  def network(self):
    cfg, dtype = self.config.simsiam, get_dtype(self.config.dtype)
    projector = ProjectionHead(
      hidden_dim=cfg.proj_hidden_dim, out_dim=cfg.proj_dim, num_layers=3, last_bn=True, dtype=dtype
    )
    predictor = ProjectionHead(
      hidden_dim=cfg.pred_hidden_dim, out_dim=cfg.proj_dim, num_layers=2, dtype=dtype
    )
    return SiameseNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype),
      projector=projector,
      predictor=predictor,
    )

  def wrap_optimizer(self, tx):
    if not self.config.simsiam.fix_pred_lr:
      return tx
    opt = self.config.optimizer
    peak = optim.scaled_learning_rate(opt.base_lr, self.run.global_batch, opt.lr_scaling)
    predictor = lambda params: {
      k: jax.tree.map(lambda _: k == "predictor", v) for k, v in params.items()
    }
    return optim.with_constant_lr(tx, opt, peak, predictor)

  def loss(self, params, batch_stats, method_state, batch, rng):
    ((h1, z1, p1), (_, z2, p2)), batch_stats = forward_views(
      self.network(), params, batch_stats, batch["views"]
    )
    simsiam = sharding.shard_over_batch(
      lambda a, b, c, d, axis_name: losses.simsiam_loss(a, b, c, d, axis_name=axis_name),
      self.mesh,
      num_args=4,
    )
    loss, metrics = simsiam(p1, p2, z1, z2)
    metrics = dict(metrics, embedding_std=embedding_std(z1), **{PROBE_FEATURES: h1})
    return loss, (metrics, batch_stats, method_state)
