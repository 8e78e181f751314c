"""CPC's patch InfoNCE: the paper's formula written out in NumPy (positive: the patch k rows
below in the same image; candidates: every patch of every image of the global batch), the
candidate set probed by hand, 8 devices == 1 device (loss and gradients), and local x global
logits per device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import sharding
from sslax.losses.cpc import cpc_loss


def cpc_numpy(predictions, targets, offsets):
  """L = sum_k mean_{n, i < G-k, j} -log softmax_{m,u,v}(zhat^k_{n,i,j} . z_{m,u,v})[n,i+k,j].

  predictions [B, O, G, G, T], targets [B, G, G, T]; loops, float64. Returns (loss, per-offset
  terms, accuracy over every prediction)."""
  p = np.asarray(predictions, np.float64)
  z = np.asarray(targets, np.float64)
  batch, g = z.shape[0], z.shape[1]
  candidates = [(m, u, v) for m in range(batch) for u in range(g) for v in range(g)]
  loss, terms, hits, count = 0.0, [], 0, 0
  for o, k in enumerate(offsets):
    term = []
    for n in range(batch):
      for i in range(g - k):
        for j in range(g):
          scores = np.array([p[n, o, i, j] @ z[m, u, v] for m, u, v in candidates])
          positive = candidates.index((n, i + k, j))
          term.append(np.log(np.sum(np.exp(scores))) - scores[positive])
          hits += int(np.argmax(scores) == positive)
          count += 1
    terms.append(np.mean(term))
    loss += terms[-1]
  return loss, terms, hits / count


def _random(batch=4, g=4, offsets=(1, 2), dim=6, seed=0):
  rng = np.random.default_rng(seed)
  predictions = rng.normal(size=(batch, len(offsets), g, g, dim)).astype(np.float32)
  targets = rng.normal(size=(batch, g, g, dim)).astype(np.float32)
  return predictions, targets


@pytest.mark.parametrize("offsets", [(1, 2, 3), (3,)])
def test_loss_matches_the_formula_in_numpy(offsets):
  predictions, targets = _random(batch=3, g=4, offsets=offsets)
  loss, metrics = jax.jit(lambda p, t: cpc_loss(p, t, offsets))(predictions, targets)
  want, terms, accuracy = cpc_numpy(predictions, targets, offsets)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  for k, term in zip(offsets, terms):
    np.testing.assert_allclose(float(metrics[f"cpc_loss_k{k}"]), term, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["cpc_accuracy"]), accuracy)


def test_positive_is_the_patch_below_and_other_patches_are_negatives():
  """One-hot targets (each of the B G^2 patches its own direction): a prediction that points
  at the patch k rows below wins; one that points at another patch of the same image, or at
  the same position of another image, loses to it."""
  batch, g, k = 2, 3, 1
  codes = np.eye(batch * g * g, dtype=np.float32).reshape(batch, g, g, -1)
  right = np.zeros((batch, 1, g, g, batch * g * g), np.float32)
  same_image = np.zeros_like(right)
  other_image = np.zeros_like(right)
  for n in range(batch):
    for i in range(g - k):
      for j in range(g):
        right[n, 0, i, j] = 10 * codes[n, i + k, j]
        same_image[n, 0, i, j] = 10 * codes[n, i, j]  # this patch, not the one below
        other_image[n, 0, i, j] = 10 * codes[1 - n, i + k, j]
  for predictions, accuracy in ((right, 1.0), (same_image, 0.0), (other_image, 0.0)):
    loss, metrics = cpc_loss(jnp.asarray(predictions), jnp.asarray(codes), (k,))
    assert float(metrics["cpc_accuracy"]) == accuracy
    assert (float(loss) < 1e-3) == (accuracy == 1.0)
  # Only the G - k rows with a target below are scored: the last row's predictions are unused.
  noisy = right.copy()
  noisy[:, :, g - k :] = 123.0
  np.testing.assert_allclose(
    float(cpc_loss(jnp.asarray(noisy), jnp.asarray(codes), (k,))[0]),
    float(cpc_loss(jnp.asarray(right), jnp.asarray(codes), (k,))[0]),
  )


def test_offsets_must_fit_the_grid():
  predictions, targets = _random(g=3, offsets=(3,))
  with pytest.raises(ValueError, match=r"offsets \(3,\) must lie in \[1, 3\)"):
    cpc_loss(jnp.asarray(predictions), jnp.asarray(targets), (3,))


def _sharded(mesh, offsets):
  return sharding.shard_over_batch(
    lambda p, t, axis_name: cpc_loss(p, t, offsets, axis_name=axis_name), mesh, 2
  )


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  offsets = (1, 2)
  predictions, targets = _random(batch=8, g=3, offsets=offsets, seed=1)
  results = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    fn = jax.jit(jax.value_and_grad(_sharded(mesh, offsets), argnums=(0, 1), has_aux=True))
    put = lambda x, mesh=mesh: jax.device_put(jnp.asarray(x), sharding.batch_sharding(mesh))
    results.append(jax.device_get(fn(put(predictions), put(targets))))
  ((l1, m1), g1), ((l8, m8), g8) = results
  np.testing.assert_allclose(l1, cpc_numpy(predictions, targets, offsets)[0], rtol=1e-5)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5, err_msg=key)
  # Gradients w.r.t. predictions and targets equal the single-device ones (targets reach every
  # device through the gather; its transpose sums their gradients back), not scaled by 8.
  for a, b in zip(g8, g1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert all(np.abs(g).max() > 0 for g in g1)


def test_per_device_logits_are_local_by_global(devices):
  """Memory: each device scores its b (G-k) G predictions against the B G^2 targets."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  predictions, targets = _random(batch=16, g=4, offsets=(1,))
  shapes = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
      for sub in eqn.params.values():
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          walk(inner)

  walk(jax.make_jaxpr(_sharded(mesh, (1,)))(predictions, targets).jaxpr)
  assert (2 * 3 * 4, 16 * 4 * 4) in shapes  # b = 16 / 8 images, G - k = 3 rows, G = 4
  assert (16 * 3 * 4, 16 * 4 * 4) not in shapes
