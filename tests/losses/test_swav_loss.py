"""SwAV's Sinkhorn-Knopp codes and swapped prediction loss: paper formulas, 8 devices == 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sslax import losses, sharding

AXES = sharding.BATCH_AXES


def sinkhorn_numpy(scores, eps, iters):
  """SwAV's Sinkhorn-Knopp in the paper's layout: Q = exp(C^T Z / eps) is [K prototypes, B].

  Rows (prototypes) are scaled to sum 1/K, then columns (samples) to 1/B, `iters` times;
  returns the codes [B, K], each sample's code summing to 1.
  """
  q = np.exp(np.asarray(scores, np.float64) / eps).T
  k, b = q.shape
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True) * k
    q /= q.sum(axis=0, keepdims=True) * b
  return (q * b).T


def swav_loss_numpy(scores, tau, eps, iters, num_assign):
  """SwAV eq. (1)-(2): sum over assigned crops i, other crops v of -q_i . log softmax(s_v/tau)."""
  scores = np.asarray(scores, np.float64)
  num_crops = scores.shape[1]
  total = 0.0
  for i in range(num_assign):
    q = sinkhorn_numpy(scores[:, i], eps, iters)
    sub = 0.0
    for v in range(num_crops):
      if v == i:
        continue
      logits = scores[:, v] / tau
      log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
      sub -= np.mean(np.sum(q * log_p, axis=1))
    total += sub / (num_crops - 1)
  return total / num_assign


HAND_MADE = np.array(
  [  # [4 images, 3 crops, 3 prototypes], cosine-like scores
    [[0.9, 0.1, -0.2], [0.8, 0.0, 0.1], [0.5, 0.4, -0.1]],
    [[0.1, 0.7, 0.2], [-0.1, 0.9, 0.0], [0.3, 0.3, 0.3]],
    [[0.0, 0.2, 0.8], [0.2, 0.1, 0.6], [-0.3, 0.1, 0.9]],
    [[0.6, 0.5, 0.0], [0.1, 0.6, 0.4], [0.7, -0.2, 0.2]],
  ]
)


def test_sinkhorn_matches_paper_algorithm_on_hand_made_batch():
  codes = losses.sinkhorn_knopp(jnp.asarray(HAND_MADE[:, 0]), 0.05, 3)
  np.testing.assert_allclose(
    np.asarray(codes), sinkhorn_numpy(HAND_MADE[:, 0], 0.05, 3), rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(np.asarray(codes).sum(axis=1), 1.0, rtol=1e-6)


def test_sinkhorn_converges_to_equipartition():
  scores = np.random.default_rng(0).uniform(-1, 1, size=(12, 4))
  codes = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores), 0.05, 200))
  np.testing.assert_allclose(codes.sum(axis=0), 12 / 4, rtol=1e-3)  # B/K samples per prototype


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_swapped_prediction_matches_paper_formula(tau):
  loss, metrics = losses.swapped_prediction_loss(jnp.asarray(HAND_MADE), tau, 0.05, 3, num_assign=2)
  np.testing.assert_allclose(float(loss), swav_loss_numpy(HAND_MADE, tau, 0.05, 3, 2), rtol=1e-5)
  codes = np.concatenate([sinkhorn_numpy(HAND_MADE[:, i], 0.05, 3) for i in range(2)])
  np.testing.assert_allclose(
    float(metrics["code_entropy"]), -np.mean(np.sum(codes * np.log(codes), axis=1)), rtol=1e-4
  )
  # A list of per-crop arrays is the same input.
  as_list, _ = losses.swapped_prediction_loss(
    [jnp.asarray(HAND_MADE[:, v]) for v in range(3)], tau, 0.05, 3, num_assign=2
  )
  np.testing.assert_allclose(float(as_list), float(loss), rtol=1e-6)


def test_sinkhorn_with_queue_is_sinkhorn_on_queue_plus_batch():
  rng = np.random.default_rng(1)
  queue, batch = rng.uniform(-1, 1, size=(6, 5)), rng.uniform(-1, 1, size=(4, 5))
  codes = losses.sinkhorn_knopp(jnp.asarray(batch), 0.05, 3, extra_scores=jnp.asarray(queue))
  expected = sinkhorn_numpy(np.concatenate([queue, batch]), 0.05, 3)[-4:]
  np.testing.assert_allclose(np.asarray(codes), expected, rtol=1e-5, atol=1e-7)
  unused = losses.sinkhorn_knopp(
    jnp.asarray(batch), 0.05, 3, extra_scores=jnp.asarray(queue), use_extra=False
  )
  np.testing.assert_allclose(
    np.asarray(unused), sinkhorn_numpy(batch, 0.05, 3), rtol=1e-5, atol=1e-7
  )


def _sharded(fn, mesh, num_local, num_replicated):
  return jax.shard_map(
    lambda *a: fn(*a, axis_name=AXES),
    mesh=mesh,
    in_specs=(P(AXES),) * num_local + (P(),) * num_replicated,
    out_specs=P(),
  )


def test_sinkhorn_eight_devices_equal_one_device(devices):
  """The row/column sums are psum'd: codes of the global batch, with and without a queue."""
  rng = np.random.default_rng(2)
  scores = jnp.asarray(rng.uniform(-1, 1, size=(32, 10)), jnp.float32)
  queue_scores = jnp.asarray(rng.uniform(-1, 1, size=(16, 10)), jnp.float32)
  expected = {
    False: sinkhorn_numpy(scores, 0.05, 3),
    True: sinkhorn_numpy(np.concatenate([queue_scores, scores]), 0.05, 3)[16:],
  }
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    fn = jax.jit(
      jax.shard_map(
        lambda s, e, use: losses.sinkhorn_knopp(
          s, 0.05, 3, axis_name=AXES, extra_scores=e, use_extra=use
        ),
        mesh=mesh,
        in_specs=(P(AXES), P(), P()),
        out_specs=P(AXES),
      )
    )
    put = jax.device_put(scores, sharding.batch_sharding(mesh))
    for use in (False, True):
      np.testing.assert_allclose(
        np.asarray(fn(put, queue_scores, use)), expected[use], rtol=1e-5, atol=1e-7
      )


def test_loss_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(3)
  scores = jnp.asarray(rng.uniform(-1, 1, size=(32, 4, 10)), jnp.float32)  # 2 global + 2 local
  queue_scores = jnp.asarray(rng.uniform(-1, 1, size=(2, 16, 10)), jnp.float32)
  results = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    loss_fn = _sharded(
      lambda s, qs, axis_name: losses.swapped_prediction_loss(
        s, 0.1, 0.05, 3, axis_name=axis_name, queue_scores=qs
      )[0],
      mesh,
      1,
      1,
    )
    put = jax.device_put(scores, sharding.batch_sharding(mesh))
    loss, grad = jax.jit(jax.value_and_grad(loss_fn))(put, queue_scores)
    results.append((np.asarray(loss), np.asarray(grad)))
  (l1, g1), (l8, g8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  with_queue = [
    np.concatenate([np.asarray(queue_scores[i]), np.asarray(scores[:, i])]) for i in range(2)
  ]
  np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-7)
  # Against the numpy formula (queue rows take part in Sinkhorn only) ...
  expected = 0.0
  for i in range(2):
    q = sinkhorn_numpy(with_queue[i], 0.05, 3)[16:]
    logits = np.asarray(scores, np.float64) / 0.1
    log_p = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    expected += np.mean(-np.sum(q[:, None] * np.delete(log_p, i, axis=1), axis=2).sum(1) / 3)
  np.testing.assert_allclose(l1, expected / 2, rtol=1e-5)
  # ... and the single-device gradient: codes carry no gradient, scores do.
  ref = jax.grad(
    lambda s: losses.swapped_prediction_loss(s, 0.1, 0.05, 3, queue_scores=queue_scores)[0]
  )(scores)
  np.testing.assert_allclose(g8, np.asarray(ref), rtol=1e-5, atol=1e-7)
  assert np.abs(g8).max() > 1e-4


def test_push_queue_eight_devices_equal_one_device(devices):
  rng = np.random.default_rng(4)
  queue0 = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
  rows = [jnp.asarray(rng.normal(size=(32, 8)), jnp.float32) for _ in range(3)]
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    push = jax.jit(
      _sharded(
        lambda z, queue, axis_name: losses.push_queue(queue, z, axis_name=axis_name), mesh, 1, 1
      )
    )
    queue = queue0
    for r in rows:
      queue = push(jax.device_put(r, sharding.batch_sharding(mesh)), queue)
    # Newest batch first, then the one before; the oldest (queue0 and rows[0]) fell out.
    np.testing.assert_array_equal(np.asarray(queue), np.concatenate([rows[2], rows[1]]))
  with pytest.raises(ValueError, match="multiple of the global batch"):
    losses.push_queue(jnp.zeros((48, 8)), jnp.zeros((32, 8)))
