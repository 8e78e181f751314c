"""DeepCluster: uniform-over-clusters weights, weighted CE vs NumPy, the per-epoch clustering
hook (pseudo-labels, classifier reset, resume), 8 devices == 1 for loss and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import sharding
from sslax.methods.deepcluster import (
  reset_first_moments,
  uniform_cluster_weights,
  weighted_cross_entropy,
)


def test_uniform_cluster_weights():
  counts = np.array([2.0, 6.0, 0.0, 4.0])
  w = np.asarray(uniform_cluster_weights(jnp.asarray(counts)))
  np.testing.assert_allclose(w, [12 / 6, 12 / 18, 0.0, 12 / 12], rtol=1e-6)  # N / (K' n_c)
  # Every non-empty cluster carries the same total weight, N / K': uniform over clusters.
  np.testing.assert_allclose((w * counts)[counts > 0], 4.0, rtol=1e-6)


def test_weighted_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 1, 1, 3, 2, 0])
  w = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
  loss, metrics = weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  np.testing.assert_allclose(
    float(loss), np.mean(-w[labels] * logp[np.arange(6), labels]), rtol=1e-5
  )
  assert float(metrics["pretext_accuracy"]) == pytest.approx(np.mean(logits.argmax(1) == labels))


def dc_config():
  c = tiny_config("deepcluster")
  c.deepcluster.num_clusters = 4
  c.deepcluster.pca_dims = 4
  c.deepcluster.kmeans_iters = 5
  c.eval.batch_size = 16
  c.optimizer.name = "sgd"
  return c


def test_before_epoch_clusters_resets_classifier_and_skips_on_resume(devices):
  s = setup_lib.build(dc_config(), devices=devices)
  state = setup_lib.init_state(s)
  # Give the classifier's momentum something to reset.
  state = state.replace(opt_state=jax.tree.map(lambda x: x + 1.0, state.opt_state))
  new = s.method.before_epoch(state, 0, s.epoch_context())
  ms = jax.device_get(new.method_state)
  labels = ms["pseudo_labels"]
  assert labels.shape == (64,) and labels.min() >= 0 and labels.max() < 4
  counts = np.bincount(labels, minlength=4)
  np.testing.assert_allclose(
    ms["class_weights"],
    np.where(counts > 0, 64 / ((counts > 0).sum() * np.maximum(counts, 1)), 0),
    rtol=1e-5,
  )
  assert ms["largest_cluster"] == pytest.approx(counts.max() / 64)
  assert ms["clustered_epoch"] == 0
  old_cls, new_cls = (jax.device_get(x.params["classifier"]["kernel"]) for x in (state, new))
  assert not np.allclose(old_cls, new_cls)  # re-initialised
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(a, b),  # backbone untouched
    jax.device_get(state.params["backbone"]),
    jax.device_get(new.params["backbone"]),
  )
  # Momentum of the classifier reset, of the backbone kept.
  moments = reset_first_moments(jax.device_get(state.opt_state), "classifier")
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(new.opt_state), moments
  )
  assert any(not np.any(x) for x in jax.tree.leaves(moments)) and any(
    np.all(x == 1.0) for x in jax.tree.leaves(moments)
  )
  assert (
    s.method.before_epoch(new, 0, s.epoch_context()) is new
  )  # resume: same epoch, no re-clustering
  later = s.method.before_epoch(new, 1, s.epoch_context())
  assert (
    0.0 <= float(later.method_state["cluster_nmi"]) <= 1.0
    and int(later.method_state["clustered_epoch"]) == 1
  )


def loss_and_grads(config, devices, images, index, labels, weights):
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  ms = dict(
    state.method_state, pseudo_labels=jnp.asarray(labels), class_weights=jnp.asarray(weights)
  )
  batch = sharding.make_global_batch(s.mesh, {"views": (images,), "index": index})
  fn = jax.jit(
    jax.value_and_grad(
      lambda p: s.method.loss(p, state.batch_stats, ms, batch, jax.random.key(0)), has_aux=True
    )
  )
  (loss, (metrics, stats, _)), grads = fn(state.params)
  return jax.device_get((loss, metrics, stats, grads))


def test_eight_devices_equal_one_loss_and_grads(devices):
  config = dc_config()
  rng = np.random.default_rng(1)
  images = (
    rng.uniform(0.1, 0.7, size=(16, 1, 1, 3)) + 0.3 * rng.uniform(size=(16, 16, 16, 3))
  ).astype(np.float32)
  index = rng.permutation(64)[:16].astype(np.int32)
  labels = rng.integers(0, 4, size=64).astype(np.int32)
  weights = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
  l1, m1, s1, g1 = loss_and_grads(config, devices[:1], images, index, labels, weights)
  l8, m8, s8, g8 = loss_and_grads(config, devices, images, index, labels, weights)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s8, s1)
  # The loss used the pseudo-labels of the batch's example indices (not e.g. batch rows).
  assert float(m1["pretext_accuracy"]) * 16 == pytest.approx(
    round(float(m1["pretext_accuracy"]) * 16)
  )
