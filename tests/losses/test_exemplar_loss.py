"""Exemplar-CNN's loss: the paper's multinomial logistic loss over the surrogate classes against
NumPy, and 8 devices == 1 device on the global batch (loss and gradient)."""

import jax
import jax.numpy as jnp
import numpy as np

from sslax import sharding
from sslax.losses.exemplar import exemplar_loss


def exemplar_numpy(logits, labels):
  """-1/B sum_b log softmax(logits_b)[y_b] and the top-1 accuracy, written out in float64."""
  logits = np.asarray(logits, np.float64)
  total = 0.0
  for row, y in zip(logits, labels):
    total -= row[y] - np.log(np.sum(np.exp(row)))
  return total / len(labels), np.mean(np.argmax(logits, axis=1) == labels)


def test_loss_is_mean_cross_entropy_over_surrogate_classes():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(12, 7)).astype(np.float32) * 3
  labels = rng.integers(0, 7, size=12)
  loss, metrics = exemplar_loss(jnp.asarray(logits), jnp.asarray(labels))
  want_loss, want_acc = exemplar_numpy(logits, labels)
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["pretext_accuracy"]), want_acc)


def test_confident_right_classifier_has_near_zero_loss():
  labels = np.arange(5)
  loss, metrics = exemplar_loss(jnp.asarray(20.0 * np.eye(5)), jnp.asarray(labels))
  assert float(loss) < 1e-6 and float(metrics["pretext_accuracy"]) == 1.0


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(16, 24)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 24, size=16), jnp.int32)
  results = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    fn = sharding.shard_over_batch(
      lambda x, y, axis_name: exemplar_loss(x, y, axis_name=axis_name), mesh, 2
    )
    put = lambda x, mesh=mesh: jax.device_put(x, sharding.batch_sharding(mesh))
    (loss, metrics), grad = jax.jit(jax.value_and_grad(fn, has_aux=True))(put(logits), put(labels))
    results.append(jax.device_get((loss, metrics, grad)))
  (l1, m1, g1), (l8, m8, g8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-6)
  np.testing.assert_allclose(l1, exemplar_numpy(logits, np.asarray(labels))[0], rtol=1e-5)
  np.testing.assert_allclose(m8["pretext_accuracy"], m1["pretext_accuracy"])
  # d loss / d logits = (softmax - onehot) / B on every device: not scaled by the device count.
  want = (jax.nn.softmax(logits) - jax.nn.one_hot(labels, 24)) / 16
  np.testing.assert_allclose(g8, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g1, want, rtol=1e-5, atol=1e-7)
