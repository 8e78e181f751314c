"""SimSiam's symmetrised negative cosine with a stop-gradient on the projections."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from sslax.losses.batch_moments import global_mean
from sslax.losses.common import l2_normalize


def simsiam_loss(p1, p2, z1, z2, *, axis_name=None):
  """SimSiam (Chen & He 2021, eq. 1-2): L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2, D = -cos.

  Args:
    p1, p2: [b, D] local predictor outputs of view 1 and view 2.
    z1, z2: [b, D] local projector outputs of view 1 and view 2 (stop-gradient applied here:
      it is what keeps SimSiam from collapsing).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Returns (loss in [-1, 1], averaged over the global batch, metrics) with metrics["cosine"] =
  -loss, the mean cosine between predictions and the other view's projection.
  """
  z1, z2 = lax.stop_gradient(z1), lax.stop_gradient(z2)
  cos = (_cosine(p1, z2) + _cosine(p2, z1)) / 2  # [b]
  mean_cos = global_mean(cos, axis_name)
  return -mean_cos, {"cosine": mean_cos}


def _cosine(a, b):
  return jnp.sum(l2_normalize(a.astype(jnp.float32)) * l2_normalize(b.astype(jnp.float32)), axis=-1)
