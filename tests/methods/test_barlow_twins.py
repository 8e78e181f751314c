"""Barlow Twins: paper formula, lambda options, 8 devices == 1 (loss, grads, train step), memory."""

import jax.numpy as jnp
import numpy as np
import pytest

from testkit.steps import (
  check_loss_eight_devices_equal_one,
  check_train_step_eight_equal_one,
  jaxpr_shapes_and_primitives,
)
from sslax import losses, sharding


def barlow_twins_numpy(za, zb, lam):
  """Barlow Twins eq. (1)-(2), element by element, on batch-centred embeddings:

  C_ij = sum_b za_bi zb_bj / (sqrt(sum_b za_bi^2) sqrt(sum_b zb_bj^2)),
  L = sum_i (1 - C_ii)^2 + lam sum_i sum_{j != i} C_ij^2.
  """
  za = np.asarray(za, np.float64)
  zb = np.asarray(zb, np.float64)
  za = za - za.mean(axis=0)
  zb = zb - zb.mean(axis=0)
  d = za.shape[1]
  c = np.zeros((d, d))
  for i in range(d):
    for j in range(d):
      c[i, j] = np.sum(za[:, i] * zb[:, j]) / (
        np.sqrt(np.sum(za[:, i] ** 2)) * np.sqrt(np.sum(zb[:, j] ** 2))
      )
  on = sum((1 - c[i, i]) ** 2 for i in range(d))
  off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
  return on + lam * off, on, off


ZA = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [2.0, 1.0, 0.0], [-1.0, 3.0, 1.0]])
ZB = np.array([[0.8, 0.3, 2.0], [0.1, 1.5, -0.5], [1.5, 0.0, 0.5], [-1.0, 2.0, 2.0]])


@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_matches_paper_formula_on_hand_made_batch(lam):
  loss, metrics = losses.barlow_twins_loss(jnp.asarray(ZA), jnp.asarray(ZB), lam, eps=0.0)
  ref, on, off = barlow_twins_numpy(ZA, ZB, lam)
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["on_diag"]), on, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["off_diag"]), off, rtol=1e-5)
  # The default eps (BatchNorm's 1e-5) changes it only at the level of eps / variance.
  with_eps, _ = losses.barlow_twins_loss(jnp.asarray(ZA), jnp.asarray(ZB), lam)
  np.testing.assert_allclose(float(with_eps), ref, rtol=1e-4)


def test_lambda_none_is_one_over_dim():
  loss, _ = losses.barlow_twins_loss(jnp.asarray(ZA), jnp.asarray(ZB), None, eps=0.0)
  np.testing.assert_allclose(float(loss), barlow_twins_numpy(ZA, ZB, 1 / 3)[0], rtol=1e-5)


def test_identical_decorrelated_views_give_zero():
  # Orthogonal, centred columns of equal norm: C = I exactly, so the loss is 0.
  z = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
  loss, _ = losses.barlow_twins_loss(jnp.asarray(z), jnp.asarray(z), 0.5, eps=0.0)
  np.testing.assert_allclose(float(loss), 0.0, atol=1e-6)


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(1)
  # A large common offset checks that standardisation uses global, not local, means.
  arrays = [jnp.asarray(rng.normal(size=(32, 16)) + 3.0, jnp.float32) for _ in range(2)]
  loss, _ = check_loss_eight_devices_equal_one(
    lambda a, b, axis_name: losses.barlow_twins_loss(a, b, 5e-3, axis_name=axis_name)[0],
    arrays,
    devices,
    atol=1e-6,
  )
  np.testing.assert_allclose(loss, barlow_twins_numpy(*arrays, 5e-3)[0], rtol=1e-4)


def test_cross_correlation_is_reduced_not_gathered(devices):
  """Memory: each device builds a [D, D] matrix and psums it; nothing is all-gathered."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  fn = sharding.shard_over_batch(
    lambda a, b, axis_name: losses.barlow_twins_loss(a, b, axis_name=axis_name)[0], mesh, 2
  )
  z = jnp.zeros((64, 24))
  shapes, prims = jaxpr_shapes_and_primitives(fn, z, z)
  assert (24, 24) in shapes and any(p.startswith("psum") for p in prims)
  assert "all_gather" not in prims
  assert not any(s and s[0] == 64 for s in shapes)  # no global-batch-sized array per device


@pytest.mark.slow  # whole train step on 8 devices vs 1; the loss-and-grads 8 == 1 test stays in the default suite
def test_train_step_eight_devices_equal_one_device(devices):
  check_train_step_eight_equal_one("barlow_twins", devices)
