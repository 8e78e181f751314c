"""PCA whitening and sharded k-means: toy clusters recovered, empty clusters re-seeded,
8 devices == 1, NMI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import sharding
from sslax.pretext import kmeans


def blobs(n_per=30, k=3, dim=4, seed=0):
  """k well separated Gaussian blobs: centres 10 apart, std 0.3."""
  rng = np.random.default_rng(seed)
  centres = 10.0 * np.eye(k, dim)
  x = np.concatenate([c + 0.3 * rng.normal(size=(n_per, dim)) for c in centres])
  labels = np.repeat(np.arange(k), n_per)
  perm = rng.permutation(len(x))
  return x[perm].astype(np.float32), labels[perm]


def is_same_partition(a, b):
  """Labelings equal up to a permutation of the cluster ids."""
  pairs = set(zip(a.tolist(), b.tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def run(x, k, devices, **kw):
  mesh = sharding.make_mesh({"data": -1}, devices)
  xs, valid = kmeans.put_rows(x, mesh)
  out = kmeans.kmeans(xs, valid, k, jax.random.key(0), mesh=mesh, **kw)
  return jax.device_get(out), len(x)


def test_recovers_separable_clusters(devices):
  x, labels = blobs()
  out, n = run(x, 3, devices[:1])
  assign = out["assignments"][:n]
  assert is_same_partition(assign, labels)
  np.testing.assert_array_equal(np.sort(out["counts"]), [30, 30, 30])
  # Centroids are the blob means (independent NumPy).
  means = np.stack([x[labels == c].mean(0) for c in range(3)])
  for c in range(3):
    np.testing.assert_allclose(out["centroids"][assign[labels == c][0]], means[c], atol=1e-4)


def test_empty_cluster_is_reseeded_from_a_large_one(devices):
  x, labels = blobs()
  mesh = sharding.make_mesh({"data": -1}, devices[:1])
  xs, valid = kmeans.put_rows(x, mesh)
  # Two centroids start in blob 0, none near blob 1, one far from everything: the far one
  # gets no point in the first assignment (empty), must be re-seeded, and k-means must
  # still end with the three blobs.
  b0 = x[labels == 0]
  init = jnp.asarray(np.stack([b0[0], b0[1], np.full(4, 100.0)]), jnp.float32)
  out = jax.device_get(
    kmeans.kmeans(xs, valid, 3, jax.random.key(1), mesh=mesh, num_iters=10, init_centroids=init)
  )
  assert out["reseeded"] >= 1
  assert np.all(out["counts"] > 0)
  assert is_same_partition(out["assignments"], labels)


def test_eight_devices_equal_one(devices):
  x, _ = blobs(n_per=41, k=5, dim=6, seed=3)  # 205 rows: padding on 8 devices
  x = x + np.random.default_rng(0).normal(size=x.shape).astype(np.float32) * 3  # overlapping
  one, n = run(x, 7, devices[:1], num_iters=8)
  eight, _ = run(x, 7, devices, num_iters=8)
  np.testing.assert_array_equal(eight["assignments"][:n], one["assignments"][:n])
  assert np.all(eight["assignments"][n:] == -1)  # padding rows are marked
  np.testing.assert_allclose(eight["centroids"], one["centroids"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(eight["counts"], one["counts"])
  np.testing.assert_allclose(eight["inertia"], one["inertia"], rtol=1e-5)
  assert np.all(one["assignments"][:n] >= 0) and one["counts"].sum() == n


def pca_whiten_numpy(x, dims, eps=1e-5):
  x = np.asarray(x, np.float64)
  c = x - x.mean(0)
  vals, vecs = np.linalg.eigh(c.T @ c / len(x))
  order = np.argsort(vals)[::-1][:dims]
  z = c @ vecs[:, order] / np.sqrt(vals[order] + eps)
  return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_pca_whitening_matches_numpy(devices, num_devices):
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(37, 6)) @ rng.normal(size=(6, 6)) + 2.0).astype(np.float32)
  mesh = sharding.make_mesh({"data": -1}, devices[:num_devices])
  xs, valid = kmeans.put_rows(x, mesh)
  z = np.asarray(kmeans.pca_whiten(xs, valid, dims=3))[:37]
  ref = pca_whiten_numpy(x, 3)
  # Eigenvector signs are arbitrary: compare the Gram matrices (sign-invariant).
  np.testing.assert_allclose(z @ z.T, ref @ ref.T, atol=2e-4)
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)


def test_nmi():
  a = np.array([0, 0, 1, 1, 2, 2])
  assert kmeans.normalized_mutual_information(a, a) == pytest.approx(1.0)
  assert kmeans.normalized_mutual_information(a, (a + 1) % 3 * 7) == pytest.approx(1.0)
  # Hand-checkable: b merges clusters 1 and 2. H(a) = log 3, H(b) = H(1/3, 2/3), I = H(b).
  b = np.array([0, 0, 1, 1, 1, 1])
  hb = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))
  assert kmeans.normalized_mutual_information(a, b) == pytest.approx(hb / np.sqrt(np.log(3) * hb))
  # Independent labelings: 0.
  assert kmeans.normalized_mutual_information(
    np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
  ) == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError, match="same length"):
    kmeans.normalized_mutual_information(a, b[:3])


def test_too_many_clusters_is_a_clear_error(devices):
  x, _ = blobs(n_per=2)
  with pytest.raises(ValueError, match="num_clusters=10"):
    run(x, 10, devices[:1])
