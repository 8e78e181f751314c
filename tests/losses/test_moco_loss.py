"""MoCo's InfoNCE-with-queue and queue update: paper formula, 8 devices == 1 device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sslax import losses, sharding

AXES = sharding.BATCH_AXES


def info_nce_queue_numpy(q, k, queue, tau):
  """MoCo eq. (1), written out per query: -log exp(q.k+/t) / (exp(q.k+/t) + sum_n exp(q.n/t))."""
  unit = lambda x: np.asarray(x, np.float64) / np.linalg.norm(x, axis=-1, keepdims=True)
  q, k, queue = unit(q), unit(k), unit(queue)
  losses_, correct = [], []
  for i in range(q.shape[0]):
    pos = np.exp(q[i] @ k[i] / tau)
    negs = [np.exp(q[i] @ n / tau) for n in queue]
    losses_.append(-np.log(pos / (pos + sum(negs))))
    correct.append(q[i] @ k[i] > max(q[i] @ n for n in queue))
  return np.mean(losses_), np.mean(correct)


@pytest.mark.parametrize("tau", [0.07, 0.2])
def test_matches_paper_formula_on_hand_made_batch(tau):
  q = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 1.0]])
  k = np.array([[0.9, 0.1, 0.0], [0.1, 1.0, 0.3], [1.0, 0.0, 0.0]])
  queue = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.2]])
  queue = queue / np.linalg.norm(queue, axis=1, keepdims=True)  # the queue holds unit keys
  loss, metrics = losses.info_nce_queue_loss(
    jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), tau
  )
  expected_loss, expected_acc = info_nce_queue_numpy(q, k, queue, tau)
  np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["contrastive_acc"]), expected_acc)
  assert 0 < expected_acc < 1  # the hand-made batch has both outcomes


def _sharded(fn, mesh, num_local, num_replicated):
  return jax.shard_map(
    lambda *a: fn(*a, axis_name=AXES),
    mesh=mesh,
    in_specs=(P(AXES),) * num_local + (P(),) * num_replicated,
    out_specs=P(),
  )


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
  queue = losses.l2_normalize(jnp.asarray(rng.normal(size=(64, 16)), jnp.float32))
  results = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    loss_fn = _sharded(
      lambda a, b, n, axis_name: losses.info_nce_queue_loss(a, b, n, 0.2, axis_name=axis_name)[0],
      mesh,
      2,
      1,
    )
    put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
    loss, grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(put(q), put(k), queue)
    results.append((np.asarray(loss), [np.asarray(g) for g in grads]))
  (l1, g1), (l8, g8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  np.testing.assert_allclose(l1, info_nce_queue_numpy(q, k, queue, 0.2)[0], rtol=1e-5)
  np.testing.assert_allclose(g8[0], g1[0], rtol=1e-5, atol=1e-7)
  # Equal to the plain single-device gradient (not scaled by the device count) ...
  ref = jax.grad(lambda a: losses.info_nce_queue_loss(a, k, queue, 0.2)[0])(q)
  np.testing.assert_allclose(g8[0], np.asarray(ref), rtol=1e-5, atol=1e-7)
  assert np.abs(g8[0]).max() > 1e-3
  # ... and the keys are behind a stop-gradient: nothing flows to the key encoder.
  assert not np.any(g8[1]) and not np.any(g1[1])


def test_enqueue_eight_devices_equal_one_device_and_pointer_wraps(devices):
  rng = np.random.default_rng(1)
  queue0 = losses.l2_normalize(jnp.asarray(rng.normal(size=(96, 8)), jnp.float32))
  keys = [jnp.asarray(rng.normal(size=(32, 8)), jnp.float32) for _ in range(4)]
  runs = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    enqueue = jax.jit(
      _sharded(
        lambda k, queue, ptr, axis_name: losses.enqueue_keys(queue, ptr, k, axis_name=axis_name),
        mesh,
        1,
        2,
      )
    )
    queue, ptr, history = queue0, jnp.zeros((), jnp.int32), []
    for k in keys:
      queue, ptr = enqueue(jax.device_put(k, sharding.batch_sharding(mesh)), queue, ptr)
      history.append((np.asarray(queue), int(ptr)))
    runs.append(history)
  # The single-device math on the global batch: rows ptr..ptr+B-1 <- unit keys in batch order.
  expected, ptr = np.asarray(queue0).copy(), 0
  for step, k in enumerate(keys):
    k = np.asarray(k, np.float64)
    expected[ptr : ptr + 32] = k / np.linalg.norm(k, axis=1, keepdims=True)
    ptr = (ptr + 32) % 96
    for history in runs:
      np.testing.assert_allclose(history[step][0], expected, rtol=1e-6, atol=1e-7)
      assert history[step][1] == ptr
  # 0 -> 32 -> 64 -> 0 (wrapped) -> 32: the 4th batch replaced the oldest (the 1st) batch.
  assert [p for _, p in runs[1]] == [32, 64, 0, 32]


def test_queue_size_must_be_a_multiple_of_the_batch():
  with pytest.raises(ValueError, match="multiple of the global batch 32"):
    losses.enqueue_keys(jnp.zeros((48, 4)), jnp.zeros((), jnp.int32), jnp.ones((32, 4)))
