"""PCA whitening and k-means in JAX, sharded over the mesh (DeepCluster's clustering step).

Rows of the data [N, D] are split over the mesh's batch axes. Each k-means iteration assigns
each device's rows to the nearest centroid and adds up per-cluster sums and counts with one
`psum`, so every device ends the iteration with the same centroids; memory per device is
O(N / devices * K). The result does not depend on the number of devices (tested: 8 == 1).

Empty clusters are re-seeded as in DeepCluster (and faiss, which it used): pick a cluster
with probability proportional to its size (minus one, so singletons are never split), give
the empty cluster that centroid scaled by (1 + eps) per coordinate with alternating signs,
scale the donor's by (1 - eps) the same way, and split the donor's count between them; the
next assignment step then divides the donor's points between the two.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sslax import sharding

RESEED_EPS = 1.0 / 1024  # faiss's EPS for splitting a cluster


def put_rows(x: np.ndarray, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
  """Host rows [N, ...] (the same on every process) -> (rows [N_pad, ...], valid [N_pad] bool)
  sharded over the mesh's batch axes; N_pad is N rounded up to a multiple of the shards."""
  shards = sharding.num_batch_shards(mesh)
  n = x.shape[0]
  n_pad = -(-n // shards) * shards
  padded = np.concatenate([x, np.zeros((n_pad - n,) + x.shape[1:], x.dtype)])
  valid = np.arange(n_pad) < n
  spec = sharding.batch_sharding(mesh)
  put = lambda a: jax.make_array_from_callback(a.shape, spec, lambda idx: a[idx])
  return put(padded), put(valid)


@functools.partial(jax.jit, static_argnames=("dims",))
def pca_whiten(x: jax.Array, valid: jax.Array, dims: int, eps: float = 1e-5) -> jax.Array:
  """Rows [N, D] -> [N, dims]: centred, projected on the top `dims` principal axes, each axis
  divided by its standard deviation (whitening), then each row L2-normalised (DeepCluster).

  valid: bool [N]; invalid (padding) rows do not enter the statistics (their output is junk).
  Under jit on a row-sharded x the mean and covariance reduce across devices.
  """
  if not 1 <= dims <= x.shape[1]:
    raise ValueError(
      f"PCA dims={dims} must be in [1, feature dim {x.shape[1]}]; lower deepcluster.pca_dims."
    )
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.sum(w)
  mean = jnp.sum(x * w, axis=0) / n
  centred = (x - mean) * w
  cov = centred.T @ centred / n
  eigvals, eigvecs = jnp.linalg.eigh(cov)  # ascending
  top = eigvecs[:, ::-1][:, :dims] / jnp.sqrt(eigvals[::-1][:dims] + eps)
  z = (x - mean) @ top
  return z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _reseed_empty(key: jax.Array, centroids: jax.Array, counts: jax.Array):
  """Gives every empty cluster a perturbed copy of a large cluster's centroid (faiss's rule)."""
  k, d = centroids.shape
  signs = jnp.where(jnp.arange(d) % 2 == 0, 1.0, -1.0) * RESEED_EPS

  def fix(j, carry):
    centroids, counts, key = carry
    key, sub = jax.random.split(key)
    donor = jax.random.categorical(sub, jnp.log(jnp.maximum(counts - 1, 0.0)))
    splittable = jnp.any(counts > 1)
    empty = (counts[j] == 0) & splittable
    base = centroids[donor]
    new_c = centroids.at[j].set(base * (1 + signs)).at[donor].set(base * (1 - signs))
    half = jnp.floor(counts[donor] / 2)
    new_n = counts.at[j].set(half).at[donor].add(-half)
    return (jnp.where(empty, new_c, centroids), jnp.where(empty, new_n, counts), key)

  centroids, counts, _ = lax.fori_loop(0, k, fix, (centroids, counts, key))
  return centroids, counts


def _assign(x, valid, centroids):
  """Local rows [n, d] -> (nearest centroid [n] int32, squared distance [n])."""
  d2 = (
    jnp.sum(x**2, axis=1, keepdims=True)
    - 2 * x @ centroids.T
    + jnp.sum(centroids**2, axis=1)[None, :]
  )
  assign = jnp.argmin(d2, axis=1).astype(jnp.int32)
  return assign, jnp.where(valid, jnp.min(d2, axis=1), 0.0)


def kmeans(
  x: jax.Array,
  valid: jax.Array,
  num_clusters: int,
  key: jax.Array,
  *,
  mesh: Mesh,
  num_iters: int = 20,
  init_centroids: jax.Array | None = None,
) -> dict:
  """Lloyd's k-means on the valid rows of x [N, d] (row-sharded over `mesh`, see `put_rows`).

  Centroids start at `num_clusters` distinct valid rows drawn with `key` (or init_centroids
  [K, d]). Each of `num_iters` iterations: assign, recompute centroids, re-seed empty ones.

  Returns a dict of replicated arrays: "centroids" [K, d], "assignments" [N] int32 (-1 on
  invalid rows), "counts" [K] (of the final assignment), "inertia" (mean squared distance of
  the valid rows to their centroid), "reseeded" (empty clusters re-seeded, all iterations).
  """
  n_valid = int(jnp.sum(valid))
  if not 1 <= num_clusters <= n_valid:
    raise ValueError(
      f"k-means with num_clusters={num_clusters} needs at least that many rows, "
      f"got {n_valid}; lower the number of clusters."
    )
  axes = sharding.BATCH_AXES
  if init_centroids is None:
    init_key, key = jax.random.split(key)
    # Valid rows come first (padding is at the end), so draw among the first n_valid.
    rows = jax.random.choice(init_key, n_valid, (num_clusters,), replace=False)
    init_centroids = jax.jit(lambda x, r: x[r], out_shardings=NamedSharding(mesh, P()))(x, rows)

  def local(x, valid, centroids, key):
    w = valid.astype(x.dtype)

    def step(i, carry):
      centroids, reseeded = carry
      assign, _ = _assign(x, valid, centroids)
      onehot = jax.nn.one_hot(assign, num_clusters, dtype=x.dtype) * w[:, None]
      sums = lax.psum(onehot.T @ x, axes)  # [K, d]
      counts = lax.psum(jnp.sum(onehot, axis=0), axes)  # [K]
      new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centroids)
      # Identical on every device: same centroids, counts and key.
      new, _ = _reseed_empty(jax.random.fold_in(key, i), new, counts)
      return new, reseeded + jnp.sum(counts == 0)

    centroids, reseeded = lax.fori_loop(0, num_iters, step, (centroids, jnp.zeros((), jnp.int32)))
    assign, d2 = _assign(x, valid, centroids)
    counts = lax.psum(jnp.sum(jax.nn.one_hot(assign, num_clusters) * w[:, None], axis=0), axes)
    inertia = lax.psum(jnp.sum(d2), axes) / lax.psum(jnp.sum(w), axes)
    assign = lax.all_gather(jnp.where(valid, assign, -1), axes, tiled=True)
    return centroids, assign, counts, inertia, reseeded

  # check_vma off: all_gather's result is replicated, but its type stays "varying".
  fn = jax.jit(
    jax.shard_map(
      local, mesh=mesh, in_specs=(P(axes), P(axes), P(), P()), out_specs=(P(),) * 5, check_vma=False
    )
  )
  centroids, assign, counts, inertia, reseeded = fn(x, valid, init_centroids, key)
  return {
    "centroids": centroids,
    "assignments": assign,
    "counts": counts,
    "inertia": inertia,
    "reseeded": reseeded,
  }


def normalized_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
  """NMI(a; b) = I(a; b) / sqrt(H(a) H(b)) of two labelings [N] (DeepCluster's measure of how
  much the assignment changed between epochs). 1 = same partition; 0 = independent."""
  a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(
      f"NMI needs two non-empty labelings of the same length, got {a.shape} and {b.shape}."
    )
  _, a = np.unique(a, return_inverse=True)
  _, b = np.unique(b, return_inverse=True)
  n = a.size
  # Sparse contingency table: only the (a, b) pairs that occur.
  _, joint = np.unique(a * (b.max() + 1) + b, return_counts=True)
  pa, pb, pab = np.bincount(a) / n, np.bincount(b) / n, joint / n
  h = lambda p: -float(np.sum(p * np.log(p)))
  ha, hb = h(pa), h(pb)
  if ha == 0 or hb == 0:
    return 1.0 if ha == hb else 0.0
  mutual = ha + hb - h(pab)
  return float(mutual / np.sqrt(ha * hb))
