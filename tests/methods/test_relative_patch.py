"""Relative patch position: patch positions on a coordinate image, labels, seeding, the shared
backbone on both patches (features concatenated centre first), the loss against NumPy
cross-entropy, and 8 devices == 1 device (task, loss, gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from testkit.pretext import (
  check_pretext_eight_devices_equal_one,
  check_task_same_on_eight_devices,
  loss_and_grads,
  numpy_cross_entropy,
)
from sslax import setup as setup_lib
from sslax import sharding
from sslax.pretext import patches


def relative_patch_config():
  c = tiny_config("relative_patch")  # 16 px views: 3 x 3 cells of 5 px
  c.relative_patch.patch_size = 4
  c.relative_patch.head_hidden_dim = 16
  return c


# Row and column offset of each label's neighbour from the centre cell (0 1 2 / 3 . 4 / 5 6 7).
EXPECTED_STEPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


@pytest.mark.parametrize("size", [15, 18])  # 18: cells of 6 px, no border
def test_centre_and_neighbour_come_from_the_right_cells(size):
  batch, p = 64, 3
  cell, margin = size // 3, (size - 3 * (size // 3)) // 2
  images = np.arange(batch * size * size, dtype=np.float32).reshape(batch, size, size, 1)
  pairs, labels = patches.relative_patch_pairs(
    jnp.asarray(images), jax.random.key(0), p, normalize=False
  )
  pairs, labels = np.asarray(pairs), np.asarray(labels)
  assert pairs.shape == (batch, 2, p, p, 1)
  assert set(labels.tolist()) == set(range(8))  # 64 draws reach every position
  for b in range(batch):
    cells = []
    for i in range(2):
      r0, c0 = divmod(int(pairs[b, i, 0, 0, 0]) - b * size * size, size)
      np.testing.assert_array_equal(pairs[b, i, ..., 0], images[b, r0 : r0 + p, c0 : c0 + p, 0])
      row, col = (r0 - margin) // cell, (c0 - margin) // cell
      assert 0 <= (r0 - margin) - row * cell <= cell - p
      assert 0 <= (c0 - margin) - col * cell <= cell - p
      cells.append((row, col))
    assert cells[0] == (1, 1)
    assert (cells[1][0] - 1, cells[1][1] - 1) == EXPECTED_STEPS[labels[b]]


def test_pairs_are_seeded_and_standardised():
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 15, 15, 1)), jnp.float32)
  a = patches.relative_patch_pairs(images, jax.random.key(1), 4)
  b = patches.relative_patch_pairs(images, jax.random.key(1), 4)
  c = patches.relative_patch_pairs(images, jax.random.key(2), 4)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert np.any(np.asarray(a[1]) != np.asarray(c[1]))
  t = np.asarray(a[0], np.float64)
  np.testing.assert_allclose(t.mean(axis=(2, 3, 4)), 0, atol=1e-5)
  np.testing.assert_allclose(t.std(axis=(2, 3, 4)), 1, rtol=1e-3)


def test_patches_that_do_not_fit_are_refused(devices):
  c = relative_patch_config()
  c.relative_patch.patch_size = 7
  with pytest.raises(ValueError, match=r"patch_size=7 .* 3 x 3 grid on 16 px"):
    setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))


def _images(batch=16, size=16, seed=0):
  return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)


def test_loss_is_cross_entropy_on_concatenated_patch_features(devices):
  images = _images()
  s, state, (loss, metrics, _, _) = loss_and_grads(relative_patch_config(), devices[:1], images)
  pairs, labels = patches.relative_patch_pairs(jnp.asarray(images), jax.random.key(0), 4)
  network = s.method.network()
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  (features, logits), _ = network.apply(variables, pairs, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(loss, numpy_cross_entropy(logits, np.asarray(labels)), rtol=1e-5)
  np.testing.assert_allclose(
    metrics["pretext_accuracy"], np.mean(np.argmax(logits, axis=1) == np.asarray(labels)), atol=1e-7
  )
  assert metrics["pretext_chance"] == 0.125
  # One backbone for both patches, features concatenated centre first (eval mode: BN running
  # statistics, so each patch's features do not depend on the others in its batch).
  (eval_features, _) = network.apply(variables, pairs, train=False)
  backbone_vars = {"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]}
  centre = network.backbone.apply(backbone_vars, pairs[:, 0], train=False)
  neighbour = network.backbone.apply(backbone_vars, pairs[:, 1], train=False)
  np.testing.assert_allclose(
    eval_features, np.concatenate([centre, neighbour], axis=1), rtol=1e-5, atol=1e-6
  )


@pytest.mark.slow
def test_eight_devices_equal_one_device_loss_and_grads(devices):
  check_pretext_eight_devices_equal_one(relative_patch_config(), _images(), devices)


def test_pair_task_is_the_same_on_eight_devices(devices):
  """The task's random draws do not depend on how the batch is sharded."""
  inputs, _ = check_task_same_on_eight_devices(
    lambda mesh: setup_lib.build_method(relative_patch_config(), mesh), _images(), devices
  )
  assert inputs.shape == (16, 2, 4, 4, 3)
