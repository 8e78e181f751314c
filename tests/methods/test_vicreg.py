"""VICReg: the authors' code's formula, 8 devices == 1 (loss, grads, train step), memory."""

import jax.numpy as jnp
import numpy as np
import pytest

from testkit.steps import (
  check_loss_eight_devices_equal_one,
  check_train_step_eight_equal_one,
  jaxpr_shapes_and_primitives,
)
from sslax import losses, sharding


def vicreg_numpy(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
  """VICReg as the authors' main_vicreg.py computes it, term by term, with unbiased (n - 1)
  variance and covariance: eq. (1)-(5), but the variance hinge of the two branches averaged,
  std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2 (eq. (6) sums them)."""
  z1 = np.asarray(z1, np.float64)
  z2 = np.asarray(z2, np.float64)
  n, d = z1.shape

  def v(z):  # eq. (1)
    return sum(max(0.0, gamma - np.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)) / d

  def c(z):  # eq. (3)-(4)
    zbar = z.mean(axis=0)
    cov = sum(np.outer(z[i] - zbar, z[i] - zbar) for i in range(n)) / (n - 1)
    return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

  s = sum(np.sum((z1[i] - z2[i]) ** 2) for i in range(n)) / (n * d)  # eq. (5), mean over n, d
  var, cov = v(z1) / 2 + v(z2) / 2, c(z1) + c(z2)
  return lam * s + mu * var + nu * cov, s, var, cov


Z1 = np.array([[1.0, 0.0, 0.2], [0.0, 0.3, -0.1], [0.5, 0.1, 0.0], [-0.4, 0.6, 0.1]])
Z2 = np.array([[0.8, 0.3, 2.0], [0.1, 1.5, -0.5], [1.5, 0.0, 0.5], [-1.0, 2.0, 2.0]])


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_matches_reference_formula_on_hand_made_batch(coeffs):
  # Z1 has std < 1 in every dimension (the hinge is active), Z2 above 1 in some.
  loss, metrics = losses.vicreg_loss(jnp.asarray(Z1), jnp.asarray(Z2), *coeffs)
  ref, s, var, cov = vicreg_numpy(Z1, Z2, *coeffs)
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
  np.testing.assert_allclose(
    [float(metrics[k]) for k in ("invariance", "variance", "covariance")], [s, var, cov], rtol=1e-5
  )
  assert var > 0 and cov > 0


def test_collapsed_views_cost_mu_times_one_hinge_like_main_vicreg():
  """Both branches collapsed to one point: each hinge is 1 - sqrt(1e-4) = 0.99 per dimension;
  main_vicreg.py's std_loss averages the two, so the loss is 25 x 0.99 (the sum gave 2x)."""
  z = jnp.ones((4, 3))
  loss, metrics = losses.vicreg_loss(z, z)
  np.testing.assert_allclose(float(metrics["variance"]), 0.99, rtol=1e-6)
  np.testing.assert_allclose(float(loss), 25.0 * 0.99, rtol=1e-6)


def test_spread_decorrelated_identical_views_give_zero():
  # Centred orthogonal columns with std >= 1: no invariance, variance or covariance penalty.
  z = 2.0 * np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
  loss, _ = losses.vicreg_loss(jnp.asarray(z), jnp.asarray(z))
  np.testing.assert_allclose(float(loss), 0.0, atol=1e-6)


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(1)
  # Small spread (variance hinge active) and an offset (global, not local, means).
  arrays = [jnp.asarray(0.5 * rng.normal(size=(32, 16)) + 2.0, jnp.float32) for _ in range(2)]
  loss, _ = check_loss_eight_devices_equal_one(
    lambda a, b, axis_name: losses.vicreg_loss(a, b, axis_name=axis_name)[0],
    arrays,
    devices,
    atol=1e-6,
  )
  np.testing.assert_allclose(loss, vicreg_numpy(*arrays)[0], rtol=1e-5)


def test_covariance_is_reduced_not_gathered(devices):
  mesh = sharding.make_mesh({"data": -1}, devices)
  fn = sharding.shard_over_batch(
    lambda a, b, axis_name: losses.vicreg_loss(a, b, axis_name=axis_name)[0], mesh, 2
  )
  z = jnp.zeros((64, 24))
  shapes, prims = jaxpr_shapes_and_primitives(fn, z, z)
  assert (24, 24) in shapes and any(p.startswith("psum") for p in prims)
  assert "all_gather" not in prims
  assert not any(s and s[0] == 64 for s in shapes)


@pytest.mark.slow  # whole train step on 8 devices vs 1; the loss-and-grads 8 == 1 test stays in the default suite
def test_train_step_eight_devices_equal_one_device(devices):
  check_train_step_eight_equal_one("vicreg", devices)
