"""Shared wiring of the two-branch methods without negatives: BYOL, SimSiam, Barlow Twins, VICReg.

They share a network shape (backbone -> projector [-> predictor]), a two-view recipe (with
BYOL's asymmetric blur/solarize for BYOL, Barlow Twins and VICReg), and one forward pass per
view: each view's BatchNorm statistics are those of that view over the global batch, as in the
papers' code (which calls the encoder once per view under synchronised BN). The running
statistics are updated by both passes in turn.

`embedding_std` is the collapse monitor of SimSiam (fig. 2): the per-dimension standard
deviation of L2-normalised embeddings, ~1/sqrt(D) when they spread over the sphere and 0 when
every image maps to the same point.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslax import sharding
from sslax.data.augment import ViewSpec, train_crop_size
from sslax.losses.common import l2_normalize
from sslax.methods.base import PROBE_FEATURES
from sslax.models import ProjectionHead, get_dtype, make_backbone

# A run has collapsed when embedding_std < COLLAPSE_STD_FRACTION / sqrt(D). If the embeddings
# fill only a k-dimensional, axis-aligned subspace isotropically, embedding_std is
# sqrt(k / D) / sqrt(D); 0.1 therefore flags collapse onto fewer than D / 100 dimensions (and
# the complete collapse of SimSiam without stop-gradient, std -> 0), while healthy runs sit
# near 1 / sqrt(D) (SimSiam fig. 2) and stay several times above the threshold in our tests.
COLLAPSE_STD_FRACTION = 0.1


class SiameseNetwork(nn.Module):
  """images [B, H, W, C] -> backbone -> features [B, F] -> projector -> z [B, D] -> predictor -> p."""

  backbone: nn.Module
  projector: nn.Module
  predictor: Optional[nn.Module] = None

  def __call__(self, x, train: bool = True):
    """-> (features, z, p); p is None without a predictor."""
    features = self.backbone(x, train=train)
    z = self.projector(features, train=train)
    p = None if self.predictor is None else self.predictor(z, train=train)
    return features, z, p

  def project(self, x, train: bool = True):
    """backbone + projector only (BYOL's target network): -> z [B, D]."""
    return self.projector(self.backbone(x, train=train), train=train)


def two_views(
  config: ml_collections.ConfigDict,
  blur_probs: Sequence[float] | None = None,
  solarize_probs: Sequence[float] | None = None,
) -> tuple[ViewSpec, ViewSpec]:
  """Two view recipes from `config.augment`, with per-view blur / solarize probabilities.

  BYOL (appendix B) and after it Barlow Twins and VICReg use blur 1.0 / 0.1 and solarize
  0.0 / 0.2 for view 1 / view 2; None keeps config.augment's value for both views.
  """
  base = ViewSpec.from_config(config.augment, train_crop_size(config))
  views = [base, base]
  for i in range(2):
    if blur_probs is not None:
      views[i] = dataclasses.replace(views[i], blur_prob=float(blur_probs[i]))
    if solarize_probs is not None:
      views[i] = dataclasses.replace(views[i], solarize_prob=float(solarize_probs[i]))
  return tuple(views)


def forward_views(network: nn.Module, params, batch_stats, views, method=None):
  """Applies `network` in train mode to each view in turn -> (outputs per view, batch_stats).

  One pass per view: BatchNorm normalises each view over the global batch on its own, and the
  running statistics see both views (updated by the first pass, then by the second).
  """
  outputs = []
  for view in views:
    out, updates = network.apply(
      {"params": params, "batch_stats": batch_stats},
      view,
      train=True,
      mutable=["batch_stats"],
      method=method,
    )
    batch_stats = updates.get("batch_stats", batch_stats)
    outputs.append(out)
  return outputs, batch_stats


def embedding_std(z) -> jax.Array:
  """[N, D] -> scalar: mean over dimensions of the std over rows of the L2-normalised rows."""
  return jnp.mean(jnp.std(l2_normalize(z.astype(jnp.float32)), axis=0))


def is_collapsed(z, fraction: float = COLLAPSE_STD_FRACTION) -> bool:
  """[N, D] embeddings -> True when embedding_std(z) < fraction / sqrt(D) (see above)."""
  z = np.asarray(z, np.float32)
  return bool(float(embedding_std(z)) < fraction / math.sqrt(z.shape[1]))


class EmbeddingLossMethod:
  """Mixin for Barlow Twins and VICReg: two views -> backbone -> projector -> a loss on (z1, z2).

  A subclass (also a `Method`) sets `name`, its `default_config()` (with proj_hidden_dim,
  proj_dim, proj_layers, view_blur_prob, view_solarize_prob) and `embedding_loss`. The
  projector is (Linear -> BN -> ReLU) x (L-1) -> Linear without a bias, as in both references;
  `proj_hidden_bias` says whether the hidden Linears keep a bias before their BN (Barlow Twins'
  projector: no; VICReg's `Projector`: yes).
  """

  proj_hidden_bias: bool = False
  provides_probe_features = True

  def embedding_loss(self, z1, z2, *, axis_name) -> tuple[jax.Array, dict]:
    """Local rows z1, z2 [b, D] of the global batch -> (loss, metrics), collectives over axis_name."""
    raise NotImplementedError

  def views(self):
    cfg = self.config[self.name]
    return two_views(self.config, cfg.view_blur_prob, cfg.view_solarize_prob)

  def network(self):
    cfg = self.config[self.name]
    projector = ProjectionHead(
      hidden_dim=cfg.proj_hidden_dim,
      out_dim=cfg.proj_dim,
      num_layers=cfg.proj_layers,
      hidden_bias=self.proj_hidden_bias,
      out_bias=False,
      dtype=get_dtype(self.config.dtype),
    )
    return SiameseNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype), projector=projector
    )

  def loss(self, params, batch_stats, method_state, batch, rng):
    ((h1, z1, _), (_, z2, _)), batch_stats = forward_views(
      self.network(), params, batch_stats, batch["views"]
    )
    loss_fn = sharding.shard_over_batch(
      lambda a, b, axis_name: self.embedding_loss(a, b, axis_name=axis_name), self.mesh, num_args=2
    )
    loss, metrics = loss_fn(z1, z2)
    metrics = dict(metrics, embedding_std=embedding_std(z1), **{PROBE_FEATURES: h1})
    return loss, (metrics, batch_stats, method_state)
