"""BYOL (Grill et al. 2020): an online network predicts an EMA target network's projection.

Online: backbone -> projector -> predictor, both the reference's `MLP` (byol/utils/networks.py):
Linear with bias -> BN -> ReLU -> Linear without bias (4096 -> 256 at ImageNet scale). Target:
backbone + projector whose params are an EMA of the online ones, held in
`method_state["teacher"]` (`sslax.methods.teacher.EMATeacher`); the loss never differentiates
through it (stop-gradient). The EMA momentum rises from `base_momentum` to 1 with BYOL's cosine
schedule over the run's total steps, indexed as in the reference's `_update_fn`: the update of
the step with 0-based index k (after which the online params have taken k + 1 steps) uses
tau(k), so the first update uses tau(0) = base_momentum.
"""

from __future__ import annotations

import ml_collections

from sslax import losses, optim, sharding
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.siamese import SiameseNetwork, embedding_std, forward_views, two_views
from sslax.methods.teacher import EMATeacher
from sslax.models import ProjectionHead, get_dtype, make_backbone

# The parts of the online network that the target copies (the predictor has no target twin).
TARGET_MODULES = ("backbone", "projector")


class BYOL(Method):
  name = "byol"
  provides_probe_features = True
  teacher = EMATeacher(TARGET_MODULES)  # the target network

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        proj_hidden_dim=4096,
        proj_dim=256,
        pred_hidden_dim=4096,
        base_momentum=0.996,  # tau_base; the paper's 300-epoch runs use 0.99
        view_blur_prob=(1.0, 0.1),
        view_solarize_prob=(0.0, 0.2),
      )
    )

  def views(self):
    cfg = self.config.byol
    return two_views(self.config, cfg.view_blur_prob, cfg.view_solarize_prob)

  def network(self):
    cfg, dtype = self.config.byol, get_dtype(self.config.dtype)
    # The reference's MLP: hk.Linear(with_bias=True) -> BN -> ReLU -> hk.Linear(with_bias=False).
    mlp = lambda hidden: ProjectionHead(
      hidden_dim=hidden,
      out_dim=cfg.proj_dim,
      num_layers=2,
      hidden_bias=True,
      out_bias=False,
      dtype=dtype,
    )
    return SiameseNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype),
      projector=mlp(cfg.proj_hidden_dim),
      predictor=mlp(cfg.pred_hidden_dim),
    )

  def init_state(self, rng, variables):
    # The target starts as a copy of the online backbone + projector (params and BN stats).
    return {"teacher": self.teacher.init(variables)}

  def momentum(self, step):
    """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 (BYOL sec. 3.2; the reference's
    `target_ema(global_step)`) for the update of the step with 0-based index k; 1 at k = K."""
    return optim.cosine_increase(self.config.byol.base_momentum, 1.0, self.run.total_steps)(step)

  def loss(self, params, batch_stats, method_state, batch, rng):
    net = self.network()
    online, batch_stats = forward_views(net, params, batch_stats, batch["views"])
    target = self.teacher.variables(method_state["teacher"])
    (t1, t2), target_batch_stats = forward_views(
      net, target["params"], target["batch_stats"], batch["views"], method="project"
    )
    (h1, z1, p1), (_, _, p2) = online
    byol = sharding.shard_over_batch(
      lambda a, b, c, d, axis_name: losses.byol_loss(a, b, c, d, axis_name=axis_name),
      self.mesh,
      num_args=4,
    )
    loss, metrics = byol(p1, p2, t1, t2)
    metrics = dict(metrics, embedding_std=embedding_std(z1), **{PROBE_FEATURES: h1})
    # The target's BN running statistics come from its own train-mode passes, as in the BYOL
    # reference code; only its params are the EMA (in after_update).
    new_state = {
      "teacher": self.teacher.with_batch_stats(method_state["teacher"], target_batch_stats)
    }
    return loss, (metrics, batch_stats, new_state)

  def after_update(self, method_state, params, step):
    """target <- tau target + (1 - tau) online, tau = momentum(step - 1); step = steps taken.

    The reference's `_update_fn` computes tau from the global step it was called with (0-based,
    before the increment) and mixes in the online params after that step's update.
    """
    tau = self.momentum(step - 1)
    return {"teacher": self.teacher.update(method_state["teacher"], params, tau)}
