"""VQ-KD's quantiser (beit2/norm_ema_quantizer.py) against independent NumPy versions of the
reference's formulas: nearest code, straight-through gradient, commitment term, EMA codebook
update, k-means initialisation, dead-code restarts, and 8 fake devices == 1 device for the
global-batch statistics and the losses."""

import jax
import jax.numpy as jnp
import numpy as np
from testkit.steps import check_loss_eight_devices_equal_one

from sslax import sharding
from sslax.losses import vq


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _data(seed=0, m=48, k=10, d=6):
  rng = np.random.default_rng(seed)
  z = _unit(rng.normal(size=(m, d))).astype(np.float32)
  codebook = _unit(rng.normal(size=(k, d))).astype(np.float32)
  return z, codebook


def np_nearest(z, codebook):
  # The reference: d = |z|^2 + |e|^2 - 2 z e, argmin.
  d = (z**2).sum(1, keepdims=True) + (codebook**2).sum(1)[None] - 2 * z @ codebook.T
  return d.argmin(1)


def np_ema_update(codebook, z, ids, decay):
  """NormEMAVectorQuantizer.forward's training branch, written out with the one-hot matrix."""
  k = codebook.shape[0]
  enc = np.eye(k)[ids]  # [M, K]
  bins = enc.sum(0)
  zero = bins == 0
  bins = np.where(zero, 1.0, bins)
  embed_sum = z.T @ enc  # [d, K]
  with np.errstate(invalid="ignore"):  # unused codes: 0 / 0, replaced just below
    normalized = _unit((embed_sum / bins[None]).T)
  normalized = np.where(zero[:, None], codebook, normalized)
  return _unit(decay * codebook + (1 - decay) * normalized)


def test_nearest_code_and_commitment_equal_numpy():
  z, codebook = _data()
  z_q, ids, commit = vq.quantize(jnp.asarray(z), jnp.asarray(codebook), beta=0.7)
  want = np_nearest(z.astype(np.float64), codebook.astype(np.float64))
  np.testing.assert_array_equal(ids, want)
  np.testing.assert_allclose(z_q, codebook[want], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(commit, 0.7 * np.mean((codebook[want] - z) ** 2), rtol=1e-5)


def test_straight_through_gradient_reaches_the_features_unchanged():
  """d/dz of sum(w * z_q) + commitment = w + beta * 2 (z - e) / (M d): the codes' gradient
  passes to z as if z_q were z, and the commitment pulls z to its code; the codebook gets none."""
  z, codebook = _data(1)
  w = np.random.default_rng(2).normal(size=z.shape).astype(np.float32)
  beta = 0.5

  def f(z, codebook):
    z_q, _, commit = vq.quantize(z, codebook, beta=beta)
    return jnp.sum(w * z_q) + commit

  gz, gc = jax.grad(f, argnums=(0, 1))(jnp.asarray(z), jnp.asarray(codebook))
  e = codebook[np_nearest(z, codebook)]
  np.testing.assert_allclose(gz, w + beta * 2 * (z - e) / z.size, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(gc) == 0)


def test_ema_codebook_update_equals_numpy_and_keeps_unused_codes():
  z, codebook = _data(3, m=40, k=12)
  ids = np_nearest(z, codebook)
  counts, sums = vq.codebook_statistics(jnp.asarray(z), jnp.asarray(ids), 12)
  new = vq.ema_codebook_update(jnp.asarray(codebook), counts, sums, 0.9)
  want = np_ema_update(codebook.astype(np.float64), z.astype(np.float64), ids, 0.9)
  np.testing.assert_allclose(new, want, rtol=1e-5, atol=1e-6)
  unused = np.setdiff1d(np.arange(12), ids)
  assert len(unused) > 0  # the case is exercised
  np.testing.assert_allclose(np.asarray(new)[unused], codebook[unused], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(counts, np.bincount(ids, minlength=12))
  usage = vq.ema_usage_update(jnp.ones(12), counts, 0.9)
  np.testing.assert_allclose(usage, 0.9 + 0.1 * np.bincount(ids, minlength=12), rtol=1e-6)


def test_statistics_of_a_sharded_batch_are_the_global_batchs(devices):
  """8 devices == 1 == unsharded: counts and sums are psum'd over the batch axes."""
  z, codebook = _data(4, m=64, k=10)
  ids = np_nearest(z, codebook).astype(np.int32)
  z3, ids3 = z.reshape(16, 4, -1), ids.reshape(16, 4)  # [B, N, d]: patches of 16 images

  def run(devs):
    mesh = sharding.make_mesh({"data": -1}, devs)
    fn = sharding.shard_over_batch(
      lambda z, i, *, axis_name: vq.codebook_statistics(z, i, 10, axis_name=axis_name), mesh, 2
    )
    put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
    return jax.device_get(jax.jit(fn)(put(z3), put(ids3)))

  c1, s1 = run(devices[:1])
  c8, s8 = run(devices)
  np.testing.assert_array_equal(c8, c1)
  np.testing.assert_allclose(s8, s1, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(c1, np.bincount(ids, minlength=10))
  want = np.stack([z[ids == k].sum(0) for k in range(10)])
  np.testing.assert_allclose(s1, want, rtol=1e-5, atol=1e-6)


def test_losses_eight_devices_equal_one(devices):
  """Commitment + cosine distillation loss and their gradients: 8 devices == 1 == unsharded."""
  rng = np.random.default_rng(5)
  z = _unit(rng.normal(size=(16, 4, 6))).astype(np.float32)
  pred = rng.normal(size=(16, 4, 5)).astype(np.float32)
  target = rng.normal(size=(16, 4, 5)).astype(np.float32)
  codebook = jnp.asarray(_unit(rng.normal(size=(10, 6))).astype(np.float32))

  def loss(z, pred, target, axis_name):
    z_q, _, commit = vq.quantize(z, codebook, beta=1.0, axis_name=axis_name)
    rec = vq.cosine_distance_loss(
      pred + jnp.mean(z_q, -1, keepdims=True), target, axis_name=axis_name
    )
    return commit + rec

  check_loss_eight_devices_equal_one(loss, [z, pred, target], devices, rtol=1e-5, atol=1e-6)


def test_cosine_distance_loss_equals_numpy():
  rng = np.random.default_rng(6)
  pred, target = rng.normal(size=(2, 3, 4, 8)).astype(np.float32)
  cos = (_unit(pred) * _unit(target)).sum(-1)
  np.testing.assert_allclose(
    vq.cosine_distance_loss(jnp.asarray(pred), jnp.asarray(target)), np.mean(1 - cos), rtol=1e-5
  )


def test_dead_codes_restart_at_their_candidates_and_live_codes_stay():
  rng = np.random.default_rng(7)
  codebook = _unit(rng.normal(size=(6, 4))).astype(np.float32)
  candidates = rng.normal(size=(6, 4)).astype(np.float32)
  usage = np.array([5.0, 0.2, 3.0, 0.0, 1.0, 0.99], np.float32)
  new, new_usage, n = vq.restart_dead_codes(
    jnp.asarray(codebook), jnp.asarray(usage), jnp.asarray(candidates), 1.0
  )
  dead = usage < 1.0
  np.testing.assert_allclose(
    new, np.where(dead[:, None], _unit(candidates), codebook), rtol=1e-6, atol=1e-6
  )
  np.testing.assert_allclose(new_usage, np.where(dead, 1.0, usage))
  assert int(n) == 3
  off = vq.restart_dead_codes(jnp.asarray(codebook), jnp.asarray(usage), jnp.asarray(candidates), 0)
  np.testing.assert_array_equal(off[0], codebook)
  assert int(off[2]) == 0


def test_sampled_rows_are_distinct_rows_and_the_same_on_any_sharding(devices):
  rows = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
  got = np.asarray(vq.sample_rows(jax.random.key(0), jnp.asarray(rows), 16))
  assert len({tuple(r) for r in got}) == 16 and all(tuple(r) in set(map(tuple, rows)) for r in got)
  mesh = sharding.make_mesh({"data": -1}, devices)
  sharded = jax.device_put(rows, sharding.batch_sharding(mesh))
  np.testing.assert_array_equal(
    jax.jit(vq.sample_rows, static_argnums=2)(jax.random.key(0), sharded, 16), got
  )
  few = np.asarray(vq.sample_rows(jax.random.key(1), jnp.asarray(rows[:4]), 10))  # M < K
  assert few.shape == (10, 3) and all(tuple(r) in set(map(tuple, rows[:4])) for r in few)


def test_weighted_rows_follow_the_weights_and_the_same_on_any_sharding(devices):
  """Row i is drawn with probability w_i / sum(w): zero-weight rows never, the frequencies of
  many draws match; all-zero weights draw uniformly; a sharded array gives the same rows."""
  rows = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
  weights = np.array([0, 1, 0, 2, 0, 0, 4, 1], np.float32)
  got = np.asarray(vq.sample_rows_by_weight(jax.random.key(0), rows, weights, 16000))
  freq = np.bincount((got[:, 0] // 2).astype(int), minlength=8) / 16000
  np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.015)
  assert freq[weights == 0].sum() == 0
  flat = np.asarray(vq.sample_rows_by_weight(jax.random.key(1), rows, 0 * weights, 16000))
  np.testing.assert_allclose(np.bincount((flat[:, 0] // 2).astype(int)) / 16000, 1 / 8, atol=0.015)
  mesh = sharding.make_mesh({"data": -1}, devices)
  put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
  draw = jax.jit(vq.sample_rows_by_weight, static_argnums=3)
  np.testing.assert_array_equal(
    draw(jax.random.key(0), put(rows), put(weights), 64),
    vq.sample_rows_by_weight(jax.random.key(0), rows, weights, 64),
  )


def test_spherical_kmeans_equals_numpy_from_the_same_start():
  rng = np.random.default_rng(8)
  centres = _unit(rng.normal(size=(4, 5)))
  z = _unit(np.repeat(centres, 12, axis=0) + 0.1 * rng.normal(size=(48, 5))).astype(np.float32)
  key = jax.random.key(3)
  means, counts = vq.spherical_kmeans(key, jnp.asarray(z), 6, num_iters=4)
  start = np.asarray(vq.sample_rows(key, jnp.asarray(z), 6), np.float64)
  m = start.copy()
  for _ in range(4):  # the reference's kmeans(use_cosine_sim=True)
    buckets = (z @ m.T).argmax(1)
    bins = np.bincount(buckets, minlength=6)
    sums = np.zeros_like(m)
    np.add.at(sums, buckets, z)
    new = _unit(sums / np.maximum(bins, 1)[:, None])
    m = np.where((bins == 0)[:, None], m, new)
  np.testing.assert_allclose(means, m, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(counts, bins)


def test_code_statistics_are_usage_fraction_and_perplexity():
  counts = np.array([4.0, 0.0, 2.0, 2.0])
  used, perplexity = vq.code_statistics(jnp.asarray(counts))
  p = np.array([0.5, 0.25, 0.25])
  assert float(used) == 0.75
  np.testing.assert_allclose(perplexity, np.exp(-(p * np.log(p)).sum()), rtol=1e-6)
  np.testing.assert_allclose(vq.code_statistics(jnp.ones(7))[1], 7.0, rtol=1e-6)


def test_constant_code_floor_is_the_best_per_position_constant():
  rng = np.random.default_rng(9)
  target = (rng.normal(size=(32, 3, 5)) + np.array([2.0, 0, 0, 0, 1])).astype(np.float32)
  floor = float(vq.constant_code_rec_loss(jnp.asarray(target)))
  mean_dir = _unit(_unit(target).mean(0))  # [N, D]: the best unit vector per position
  best = vq.cosine_distance_loss(jnp.broadcast_to(mean_dir, target.shape), jnp.asarray(target))
  np.testing.assert_allclose(floor, best, rtol=1e-5)
  for _ in range(5):  # any other per-position constant does worse
    other = jnp.broadcast_to(mean_dir + 0.3 * rng.normal(size=mean_dir.shape), target.shape)
    assert vq.cosine_distance_loss(other, jnp.asarray(target)) > floor
