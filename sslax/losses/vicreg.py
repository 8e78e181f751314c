"""VICReg's variance-invariance-covariance loss with statistics of the global batch."""

from __future__ import annotations

import jax.numpy as jnp

from sslax.losses.batch_moments import center_and_variance, global_batch_size, global_sum, psum_if


def vicreg_loss(
  z1,
  z2,
  sim_coeff: float = 25.0,
  var_coeff: float = 25.0,
  cov_coeff: float = 1.0,
  *,
  gamma: float = 1.0,
  eps: float = 1e-4,
  axis_name=None,
):
  """VICReg (Bardes et al. 2022, eq. 1-6 and Algorithm 1).

    s(Z, Z') = 1/(N D) sum_{n,j} (z_nj - z'_nj)^2                   invariance (MSE)
    v(Z)     = 1/D sum_j max(0, gamma - sqrt(Var(z_.j) + eps))       variance hinge
    c(Z)     = 1/D sum_{i != j} Cov(Z)_ij^2                          covariance
    loss     = sim_coeff s + var_coeff [v(Z) + v(Z')] / 2 + cov_coeff [c(Z) + c(Z')]
  Var and Cov are unbiased (1 / (N - 1)) and taken over the global batch of N rows: each
  device psums its sums and its [D, D] share (z - mean)^T (z - mean), so memory is O(D^2).

  The variance terms of the two branches are averaged, as the authors' main_vicreg.py does
  (`std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2`, with std_coeff 25): the
  code behind the paper's published numbers. Eq. (6) and Algorithm 1 of the paper write the
  sum, which is var_coeff = 50 here. The covariance terms are summed in both.

  Args:
    z1, z2: [b, D] local projector outputs (expander outputs) of the two views.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Returns (loss, metrics) with the unweighted terms: metrics["invariance"] = s,
  ["variance"] = (v(Z) + v(Z')) / 2, ["covariance"] = c(Z) + c(Z').
  """
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
  n = global_batch_size(z1.shape[0], axis_name)
  dim = z1.shape[1]
  invariance = jnp.sum(global_sum((z1 - z2) ** 2, axis_name)) / (n * dim)
  variance = covariance = 0.0
  for z in (z1, z2):
    centered, var = center_and_variance(z, axis_name, ddof=1)
    variance += jnp.mean(jnp.maximum(0.0, gamma - jnp.sqrt(var + eps))) / 2
    cov = psum_if(centered.T @ centered, axis_name) / (n - 1)  # [D, D]
    # Masked, not sum(cov^2) - sum(diag^2): the variances would swamp small covariances.
    covariance += jnp.sum(jnp.where(jnp.eye(dim, dtype=bool), 0.0, cov * cov)) / dim
  loss = sim_coeff * invariance + var_coeff * variance + cov_coeff * covariance
  return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}
