"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' embeddings -> identity.

Projector: 3 layers (Linear-BN-ReLU x 2, Linear), 8192-d at ImageNet scale, every Linear
without a bias (the reference's main.py: `nn.Linear(..., bias=False)` throughout). The loss
standardises each dimension over the global batch (the paper's affine-free BatchNorm) and
all-reduces the [D, D] cross-correlation. Views: BYOL's asymmetric blur / solarize.
"""

from __future__ import annotations

import ml_collections

from sslax import losses
from sslax.methods.base import Method
from sslax.methods.siamese import EmbeddingLossMethod


class BarlowTwins(EmbeddingLossMethod, Method):
  name = "barlow_twins"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        proj_hidden_dim=8192,
        proj_dim=8192,
        proj_layers=3,
        lambda_offdiag=5e-3,  # lambda of the paper (its code uses 0.0051)
        lambda_offdiag_is_1_over_dim=False,  # True: lambda = 1 / proj_dim (Tsai et al. 2021)
        view_blur_prob=(1.0, 0.1),
        view_solarize_prob=(0.0, 0.2),
      )
    )

  def embedding_loss(self, z1, z2, *, axis_name):
    cfg = self.config.barlow_twins
    lam = None if cfg.lambda_offdiag_is_1_over_dim else cfg.lambda_offdiag
    return losses.barlow_twins_loss(z1, z2, lam, axis_name=axis_name)
