"""RotNet: exact rotations and labels, seeded random rotations, the loss against NumPy cross-
entropy on NumPy-rotated inputs, and 8 devices == 1 device (loss, gradients, BN statistics)."""

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
from sslax.pretext import rotation


def rotnet_config(all_rotations=True):
  c = tiny_config("rotnet")
  c.rotnet.all_rotations = all_rotations
  c.rotnet.head_hidden_dim = 16
  return c


def test_all_rotations_are_exact_quarter_turns_with_their_labels():
  images = np.random.default_rng(0).normal(size=(3, 5, 5, 2)).astype(np.float32)
  rotated, labels = rotation.all_rotations(jnp.asarray(images))
  assert rotated.shape == (12, 5, 5, 2) and labels.dtype == jnp.int32
  for b in range(3):
    for k in range(4):
      np.testing.assert_array_equal(rotated[4 * b + k], np.rot90(images[b], k))
      assert labels[4 * b + k] == k
  # 90 degrees counter-clockwise: the top row becomes the left column, read bottom-up.
  np.testing.assert_array_equal(rotated[1][:, 0, 0], images[0][0, ::-1, 0])


def test_random_rotations_are_seeded_and_labelled():
  images = np.random.default_rng(1).normal(size=(32, 4, 4, 1)).astype(np.float32)
  out, labels = rotation.random_rotations(jnp.asarray(images), jax.random.key(0))
  again, labels_again = rotation.random_rotations(jnp.asarray(images), jax.random.key(0))
  _, other = rotation.random_rotations(jnp.asarray(images), jax.random.key(1))
  np.testing.assert_array_equal(out, again)
  np.testing.assert_array_equal(labels, labels_again)
  assert np.any(np.asarray(labels) != np.asarray(other))
  assert set(np.asarray(labels).tolist()) == {0, 1, 2, 3}
  for b in range(32):
    np.testing.assert_array_equal(out[b], np.rot90(images[b], int(labels[b])))


def test_non_square_images_are_refused():
  with pytest.raises(ValueError, match=r"square images.*\(2, 4, 6, 1\)"):
    rotation.all_rotations(jnp.zeros((2, 4, 6, 1)))


def _images(batch=16, size=16, seed=0):
  """Images with structure (a bright off-centre square on noise), so rotations differ."""
  rng = np.random.default_rng(seed)
  x = 0.2 * rng.uniform(size=(batch, size, size, 3))
  x[:, 2:7, 3:9] += 0.7
  return x.astype(np.float32)


def test_loss_is_cross_entropy_over_the_four_numpy_rotations(devices):
  images = _images()
  s, state, (loss, metrics, _, _) = loss_and_grads(rotnet_config(), devices[:1], images)
  inputs = np.stack([np.rot90(im, k) for im in images for k in range(4)])[:, None]
  labels = np.tile(np.arange(4), len(images))
  (_, logits), _ = s.method.network().apply(
    {"params": state.params, "batch_stats": state.batch_stats},
    jnp.asarray(inputs),
    train=True,
    mutable=["batch_stats"],
  )
  np.testing.assert_allclose(loss, numpy_cross_entropy(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(
    metrics["pretext_accuracy"], np.mean(np.argmax(logits, axis=1) == labels), atol=1e-7
  )
  assert metrics["pretext_chance"] == 0.25


@pytest.mark.slow
def test_eight_devices_equal_one_device_loss_and_grads(devices):
  check_pretext_eight_devices_equal_one(rotnet_config(), _images(), devices)


def test_random_rotation_task_is_the_same_on_eight_devices(devices):
  """The task's random draws do not depend on how the batch is sharded."""
  inputs, _ = check_task_same_on_eight_devices(
    lambda mesh: setup_lib.build_method(rotnet_config(all_rotations=False), mesh),
    _images(),
    devices,
  )
  assert inputs.shape == (16, 1, 16, 16, 3)


def test_backbone_embeds_whole_images(devices):
  method = setup_lib.build_method(rotnet_config(), sharding.make_mesh({"data": -1}, devices[:1]))
  network = method.network()
  variables = jax.jit(lambda k: network.init(k, *method.init_inputs(16, 3), train=False))(
    jax.random.key(0)
  )
  features = network.backbone.apply(
    {
      "params": variables["params"]["backbone"],
      "batch_stats": variables["batch_stats"]["backbone"],
    },
    jnp.asarray(_images(batch=2)),
    train=False,
  )
  assert features.shape == (2, 64)  # ResNet-10 x1/8: 512 / 8 features
