"""NT-Xent: the reference code's formula (loss_a + loss_b), and 8 devices == 1 device on the
global batch (loss and grads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import losses, sharding


def nt_xent_numpy(z1, z2, tau):
  """SimCLR's objective as google-research/simclr computes it: loss_a + loss_b.

  Written independently of sslax: per view, the [B, 2B] logits [cross-view | same-view] with
  self-similarity pushed down by LARGE_NUM = 1e9, a softmax cross entropy against the
  partner's column, averaged over the B rows; the two views' losses are added.
  """
  large_num = 1e9
  h1 = z1.astype(np.float64) / np.linalg.norm(z1, axis=1, keepdims=True)
  h2 = z2.astype(np.float64) / np.linalg.norm(z2, axis=1, keepdims=True)
  n = h1.shape[0]
  labels = np.eye(n, 2 * n)  # the positive is column i of the cross-view block
  masks = np.eye(n)

  def cross_entropy(logits):
    m = logits.max(axis=1, keepdims=True)
    log_softmax = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return -(labels * log_softmax).sum(axis=1)

  logits_aa = h1 @ h1.T / tau - masks * large_num
  logits_bb = h2 @ h2.T / tau - masks * large_num
  logits_ab = h1 @ h2.T / tau
  logits_ba = h2 @ h1.T / tau
  loss_a = cross_entropy(np.concatenate([logits_ab, logits_aa], axis=1))
  loss_b = cross_entropy(np.concatenate([logits_ba, logits_bb], axis=1))
  return float(np.mean(loss_a + loss_b))


def eq1_mean_numpy(z1, z2, tau):
  """SimCLR eq. (1) written out, l(i,j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), averaged
  over the 2N anchors as the paper's L = 1/2N sum_k [l(2k-1,2k) + l(2k,2k-1)]."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = z1.shape[0]
  sim = z @ z.T
  total = 0.0
  for i in range(2 * n):
    j = (i + n) % (2 * n)
    denom = sum(np.exp(sim[i, k] / tau) for k in range(2 * n) if k != i)
    total += -np.log(np.exp(sim[i, j] / tau) / denom)
  return total / (2 * n)


def test_value_is_the_reference_code_sum_not_the_paper_mean():
  """The reference code's loss_a + loss_b is twice the paper's mean over 2N anchors; sslax
  returns the code's value (the mean, half of it, was returned before)."""
  rng = np.random.default_rng(3)
  z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  np.testing.assert_allclose(nt_xent_numpy(z1, z2, 0.2), 2 * eq1_mean_numpy(z1, z2, 0.2), rtol=1e-9)
  loss, _ = losses.nt_xent_loss(jnp.asarray(z1), jnp.asarray(z2), 0.2)
  np.testing.assert_allclose(float(loss), nt_xent_numpy(z1, z2, 0.2), rtol=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_reference_formula_on_hand_made_batch(tau):
  z1 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
  z2 = np.array([[0.9, 0.1, 0.0], [0.1, 1.0, 0.2], [0.5, 0.0, 0.5]])
  loss, metrics = losses.nt_xent_loss(jnp.asarray(z1), jnp.asarray(z2), tau)
  np.testing.assert_allclose(float(loss), nt_xent_numpy(z1, z2, tau), rtol=1e-5)
  # Rows 0 and 1 of each view find their partner first; row 2 of view 2 ([.5,0,.5]) is
  # closer to z1[2]=[0,0,1]... and to z1[0]: check the metric against a direct count.
  z = np.concatenate([z1, z2])
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  sim = z @ z.T - 10 * np.eye(6)
  expected_acc = np.mean(np.argmax(sim, 1) == (np.arange(6) + 3) % 6)
  np.testing.assert_allclose(float(metrics["contrastive_acc"]), expected_acc)


def test_perfect_alignment_gives_low_loss_and_random_high():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(16, 32))
  aligned, _ = losses.nt_xent_loss(jnp.asarray(z), jnp.asarray(z), 0.1)
  shuffled, _ = losses.nt_xent_loss(jnp.asarray(z), jnp.asarray(rng.normal(size=(16, 32))), 0.1)
  assert float(aligned) < float(shuffled)
  np.testing.assert_allclose(float(aligned), nt_xent_numpy(z, z, 0.1), rtol=1e-5)


def _sharded_loss(mesh, tau):
  return sharding.shard_over_batch(
    lambda a, b, axis_name: losses.nt_xent_loss(a, b, tau, axis_name=axis_name)[0], mesh, 2
  )


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(1)
  z1 = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
  z2 = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
  results = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    fn = jax.jit(jax.value_and_grad(_sharded_loss(mesh, 0.2), argnums=(0, 1)))
    put = lambda x, mesh=mesh: jax.device_put(x, sharding.batch_sharding(mesh))
    loss, grads = fn(put(z1), put(z2))
    results.append((np.asarray(loss), [np.asarray(g) for g in grads]))
  (l1, g1), (l8, g8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  np.testing.assert_allclose(l1, nt_xent_numpy(np.asarray(z1), np.asarray(z2), 0.2), rtol=1e-5)
  for a, b in zip(g8, g1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The gradient is the single-device gradient, not scaled by the device count.
  ref = jax.grad(lambda a, b: losses.nt_xent_loss(a, b, 0.2)[0], argnums=(0, 1))(z1, z2)
  for a, b in zip(g8, ref):
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-7)


def test_per_device_logits_are_local_by_global(devices):
  """Memory: each device builds [2b, 2B] logits, not [2B, 2B] (checked in the jaxpr)."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  z = jnp.zeros((64, 8))
  shapes = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
      for sub in eqn.params.values():
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          walk(inner)

  walk(jax.make_jaxpr(_sharded_loss(mesh, 0.1))(z, z).jaxpr)
  assert (16, 128) in shapes  # [2b, 2B] with b = 64 / 8
  assert (128, 128) not in shapes
