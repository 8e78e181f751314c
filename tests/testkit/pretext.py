"""Shared checks of the pretext-task tests (RotNet, Jigsaw, relative patch position)."""

import jax
import numpy as np

from sslax import setup as setup_lib
from sslax import sharding


def loss_and_grads(config, devices, images, seed=0, method_state=None):
  """-> (setup, state, host (loss, metrics, batch_stats, grads)) of the method's loss on `images`."""
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  method_state = state.method_state if method_state is None else method_state
  batch = sharding.make_global_batch(s.mesh, {"views": (images,)})
  fn = jax.jit(
    jax.value_and_grad(
      lambda p, ms: s.method.loss(p, state.batch_stats, ms, batch, jax.random.key(seed)),
      has_aux=True,
    )
  )
  (loss, (metrics, batch_stats, _)), grads = fn(state.params, method_state)
  return s, state, jax.device_get((loss, metrics, batch_stats, grads))


def numpy_cross_entropy(logits, labels):
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(axis=1, keepdims=True)
  log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels].mean()


def check_pretext_eight_devices_equal_one(config, images, devices):
  """Loss, pretext accuracy, gradients and BN statistics on 8 devices == 1 device."""
  _, _, (l1, m1, bs1, g1) = loss_and_grads(config, devices[:1], images)
  _, _, (l8, m8, bs8, g8) = loss_and_grads(config, devices, images)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  np.testing.assert_allclose(m8["pretext_accuracy"], m1["pretext_accuracy"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), bs8, bs1)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g1["backbone"])) > 0


def check_task_same_on_eight_devices(make_method, images, devices, method_state=None):
  """The task's random draws do not depend on how the batch is sharded -> host (inputs, labels)."""
  outs = []
  for devs in (devices[:1], devices):
    method = make_method(sharding.make_mesh({"data": -1}, devs))
    state = method_state(method) if method_state else {}
    batch = sharding.make_global_batch(method.mesh, {"views": (images,)})
    outs.append(
      jax.device_get(jax.jit(lambda b: method.make_task(b, jax.random.key(3), state))(batch))
    )
  # Per-part normalisation may reduce in another order when sharded: ulp differences.
  np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(outs[0][1], outs[1][1])
  return outs[0]
