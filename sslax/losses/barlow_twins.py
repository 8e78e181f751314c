"""Barlow Twins' redundancy-reduction loss on the cross-correlation of the global batch."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from sslax.losses.batch_moments import center_and_variance, global_batch_size, psum_if


def barlow_twins_loss(
  z1, z2, lambda_offdiag: float | None = 5e-3, *, eps: float = 1e-5, axis_name=None
):
  """Barlow Twins (Zbontar et al. 2021, eq. 1-2).

  Each dimension of z1 and of z2 is standardised over the global batch (mean 0, biased
  variance 1, as the paper's affine-free BatchNorm does), then
    C = z1n^T z2n / N                                     [D, D], N the global batch
    loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2.
  Each device computes its [D, D] share z1n_local^T z2n_local and psums it, so memory is
  O(D^2) per device whatever the batch; nothing of size [B, B] or [B, D] is gathered.

  Args:
    z1, z2: [b, D] local projector outputs of the two views (row i of each is one image).
    lambda_offdiag: weight of the redundancy-reduction term; 5e-3 in the paper. None: 1/D
      (the scale-free choice of Tsai et al. 2021, "A note on connecting Barlow Twins with
      negative-sample-free contrastive learning").
    eps: added to the variance before the square root (BatchNorm's 1e-5).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Returns (loss, metrics) with metrics["on_diag"] = sum_i (1 - C_ii)^2 and
  metrics["off_diag"] = sum_{i != j} C_ij^2 (unweighted).
  """
  z1n = _standardize(z1.astype(jnp.float32), eps, axis_name)
  z2n = _standardize(z2.astype(jnp.float32), eps, axis_name)
  n = global_batch_size(z1.shape[0], axis_name)
  dim = z1.shape[1]
  c = psum_if(z1n.T @ z2n, axis_name) / n  # [D, D]
  diag = jnp.diagonal(c)
  on_diag = jnp.sum((1 - diag) ** 2)
  off_diag = _sum_sq_off_diagonal(c)
  lam = 1.0 / dim if lambda_offdiag is None else lambda_offdiag
  return on_diag + lam * off_diag, {"on_diag": on_diag, "off_diag": off_diag}


def _sum_sq_off_diagonal(c):
  # Masked, not sum(c^2) - sum(diag^2): the diagonal is ~1 and would swamp small off-diagonals.
  return jnp.sum(jnp.where(jnp.eye(c.shape[0], dtype=bool), 0.0, c * c))


def _standardize(z, eps, axis_name):
  centered, var = center_and_variance(z, axis_name, ddof=0)
  return centered * lax.rsqrt(var + eps)
