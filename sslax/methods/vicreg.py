"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on two views' embeddings.

Expander (projector): 3 layers (Linear-BN-ReLU x 2, Linear), 8192-d at ImageNet scale; as the
reference's `Projector` (main_vicreg.py), the hidden Linears keep their bias and the last one
has none.
Variance and covariance are taken over the global batch (psum of sums and of z^T z). Views:
BYOL's asymmetric blur / solarize, as in the paper.
"""

from __future__ import annotations

import ml_collections

from sslax import losses
from sslax.methods.base import Method
from sslax.methods.siamese import EmbeddingLossMethod


class VICReg(EmbeddingLossMethod, Method):
  name = "vicreg"
  proj_hidden_bias = True  # main_vicreg.py Projector: nn.Linear(f[i], f[i + 1]) before its BN

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        proj_hidden_dim=8192,
        proj_dim=8192,
        proj_layers=3,
        sim_coeff=25.0,  # lambda (invariance)
        var_coeff=25.0,  # mu (variance, averaged over branches as the authors' code; the loss)
        cov_coeff=1.0,  # nu (covariance)
        view_blur_prob=(1.0, 0.1),
        view_solarize_prob=(0.0, 0.2),
      )
    )

  def embedding_loss(self, z1, z2, *, axis_name):
    cfg = self.config.vicreg
    return losses.vicreg_loss(
      z1, z2, cfg.sim_coeff, cfg.var_coeff, cfg.cov_coeff, axis_name=axis_name
    )
