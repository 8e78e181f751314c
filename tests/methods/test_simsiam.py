"""SimSiam: paper formula, stop-gradient, 8 devices == 1 (loss, grads, train step), network."""

import pytest
import jax
import jax.numpy as jnp
import numpy as np

from testkit.steps import (
  check_loss_eight_devices_equal_one,
  check_train_step_eight_equal_one,
  tiny_method_config,
)
from sslax import setup as setup_lib
from sslax import losses, sharding


def simsiam_numpy(p1, p2, z1, z2):
  """SimSiam eq. (1)-(2): D(p, z) = -p/|p| . z/|z|;  L = D(p1, z2) / 2 + D(p2, z1) / 2."""

  def d(p, z):
    return -np.sum(
      p / np.linalg.norm(p, axis=1, keepdims=True) * z / np.linalg.norm(z, axis=1, keepdims=True),
      axis=1,
    )

  p1, p2, z1, z2 = (np.asarray(x, np.float64) for x in (p1, p2, z1, z2))
  return np.mean(d(p1, z2) / 2 + d(p2, z1) / 2)


def test_matches_paper_formula_on_hand_made_batch():
  p1 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
  p2 = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, -1.0], [2.0, 0.0, 1.0]])
  z1 = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 3.0], [-1.0, 1.0, 0.0]])
  z2 = np.array([[0.9, 0.0, 0.1], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  loss, metrics = losses.simsiam_loss(*(jnp.asarray(x) for x in (p1, p2, z1, z2)))
  np.testing.assert_allclose(float(loss), simsiam_numpy(p1, p2, z1, z2), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["cosine"]), -float(loss))
  # Bounds: -1 when every prediction points along the other view's projection.
  p1, p2 = jnp.asarray(p1), jnp.asarray(p2)
  best, _ = losses.simsiam_loss(p1, p2, 2 * p2, p1)
  np.testing.assert_allclose(float(best), -1.0, atol=1e-6)


def test_stop_gradient_on_projections():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(8, 5)), jnp.float32) for _ in range(4))
  grads = jax.grad(lambda *a: losses.simsiam_loss(*a)[0], argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  assert np.abs(grads[0]).max() > 0 and np.abs(grads[1]).max() > 0
  assert not np.any(grads[2]) and not np.any(grads[3])


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(1)
  arrays = [jnp.asarray(rng.normal(size=(32, 16)), jnp.float32) for _ in range(4)]
  loss, _ = check_loss_eight_devices_equal_one(
    lambda *a, axis_name: losses.simsiam_loss(*a, axis_name=axis_name)[0], arrays, devices
  )
  np.testing.assert_allclose(loss, simsiam_numpy(*arrays), rtol=1e-5)


def test_network_has_three_layer_projector_and_bottleneck_predictor(devices):
  c = tiny_method_config("simsiam")
  c.simsiam.proj_hidden_dim, c.simsiam.proj_dim, c.simsiam.pred_hidden_dim = 24, 16, 4
  net = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1])).network()
  x = jnp.zeros((2, 16, 16, 3))
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=False))
  proj, pred = shapes["params"]["projector"], shapes["params"]["predictor"]
  assert [proj[k]["kernel"].shape[1] for k in ("dense0", "dense1", "out")] == [24, 24, 16]
  assert "out_bn" in shapes["batch_stats"]["projector"]  # BN on the projector output
  assert [pred[k]["kernel"].shape for k in ("dense0", "out")] == [(16, 4), (4, 16)]
  assert "backbone" in shapes["params"]


@pytest.mark.slow  # whole train step on 8 devices vs 1; the loss-and-grads 8 == 1 test stays in the default suite
def test_train_step_eight_devices_equal_one_device(devices):
  _, _, metrics = check_train_step_eight_equal_one("simsiam", devices)
  assert -1 <= metrics["loss"] <= 1
