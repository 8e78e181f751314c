"""BYOL's regression loss between online predictions and target projections."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from sslax.losses.batch_moments import global_mean
from sslax.losses.common import l2_normalize


def byol_loss(p1, p2, t1, t2, *, axis_name=None):
  """BYOL (Grill et al. 2020, eq. 2), symmetrised as the paper's L + L~ (a sum, not a mean).

  Args:
    p1, p2: [b, D] local online predictions q(z) of view 1 and view 2.
    t1, t2: [b, D] local target projections z' of view 1 and view 2 (stop-gradient applied
      here, so the target never receives a gradient even if a caller forgets).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Returns (loss, metrics): loss = mean over the global batch of
  (2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1)), in [0, 8]; metrics["cosine"] is the mean of the
  two cosines over the global batch.
  """
  t1, t2 = lax.stop_gradient(t1), lax.stop_gradient(t2)
  cos_12 = _cosine(p1, t2)
  cos_21 = _cosine(p2, t1)
  per_example = (2 - 2 * cos_12) + (2 - 2 * cos_21)  # [b]
  loss, cos = global_mean(jnp.stack([per_example, (cos_12 + cos_21) / 2], axis=1), axis_name)
  return loss, {"cosine": cos}


def _cosine(a, b):
  """Row-wise cosine similarity of [b, D] arrays -> [b] (in float32)."""
  return jnp.sum(l2_normalize(a.astype(jnp.float32)) * l2_normalize(b.astype(jnp.float32)), axis=-1)
