"""Nearest-neighbour image retrieval on frozen features: mAP and precision@k.

Each query (a test image) ranks the whole gallery (the train images) by cosine similarity; a
gallery item is relevant when it has the query's label. For one query with R relevant items,
average precision is AP = (1/R) * sum over relevant ranks r of precision@r, and mAP is its mean
over queries (queries with R = 0 have no AP and are left out of the mean; they are counted in
"queries_without_relevant"). precision@k is the fraction of the top k that is relevant.

Equal similarities are ranked by gallery index (stable sort), so results are deterministic.
Queries are processed in fixed-size chunks: memory is O(batch_size x N), and the last chunk is
zero-padded so XLA compiles once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sslax.evaluation.knn import _as_features, _check_positive_int, _l2_normalize


@functools.partial(jax.jit, static_argnames=("ks",))
def _chunk_metrics(gallery, gallery_labels, queries, query_labels, *, ks):
  """gallery [N, D] (normalised), queries [B, D] -> (ap [B], num_relevant [B], p@k [len(ks), B])."""
  sims = _l2_normalize(queries) @ gallery.T  # [B, N]
  order = jnp.argsort(-sims, axis=1, stable=True)
  relevant = (gallery_labels[order] == query_labels[:, None]).astype(jnp.float32)
  hits = jnp.cumsum(relevant, axis=1)
  ranks = jnp.arange(1, sims.shape[1] + 1, dtype=jnp.float32)
  num_relevant = hits[:, -1]
  ap = jnp.sum(relevant * hits / ranks, axis=1) / jnp.maximum(num_relevant, 1.0)
  precision = jnp.stack([hits[:, k - 1] / k for k in ks])
  return ap, num_relevant, precision


def nearest_neighbours(
  query_features, gallery_features, k: int, batch_size: int = 1024
) -> np.ndarray:
  """[M, D], [N, D] -> int32 [M, k]: the k most cosine-similar gallery rows per query, best first."""
  gallery = _l2_normalize(jnp.asarray(_as_features(gallery_features, "gallery_features")))
  queries = _as_features(query_features, "query_features")
  k = min(_check_positive_int(k, "k"), gallery.shape[0])
  top = jax.jit(lambda q: jax.lax.top_k(_l2_normalize(q) @ gallery.T, k)[1])
  return np.concatenate(
    [
      np.asarray(top(jnp.asarray(queries[i : i + batch_size])))
      for i in range(0, queries.shape[0], batch_size)
    ]
  ).astype(np.int32)


def retrieval_metrics(
  query_features, query_labels, gallery_features, gallery_labels, *, ks=(1, 5, 10), batch_size=None
) -> dict:
  """Retrieval quality of test queries against a labelled gallery.

  Args:
    query_features: [M, D]; query_labels: [M] int.
    gallery_features: [N, D]; gallery_labels: [N] int.
    ks: cut-offs for precision@k (each clipped to N).
    batch_size: queries per jitted chunk; default: as many as keep a chunk's ranking arrays
      near 2^26 entries (256 for galleries up to 262k items, fewer for larger ones).

  Returns:
    {"mAP", "precision@k" for each k, "num_queries", "queries_without_relevant"}, in [0, 1].
  """
  gallery = _as_features(gallery_features, "gallery_features")
  queries = _as_features(query_features, "query_features")
  if gallery.shape[0] == 0 or queries.shape[0] == 0:
    raise ValueError(
      f"need a non-empty gallery and queries, got {gallery.shape[0]} and {queries.shape[0]}"
    )
  if queries.shape[1] != gallery.shape[1]:
    raise ValueError(f"query dim {queries.shape[1]} != gallery dim {gallery.shape[1]}")
  g_labels = np.asarray(gallery_labels).astype(np.int32)
  q_labels = np.asarray(query_labels).astype(np.int32)
  if g_labels.shape != (gallery.shape[0],) or q_labels.shape != (queries.shape[0],):
    raise ValueError(
      f"labels must be [N] and [M] to match their features, got {g_labels.shape} "
      f"and {q_labels.shape}"
    )
  requested = tuple(_check_positive_int(k, "k") for k in ks)
  clipped = tuple(min(k, gallery.shape[0]) for k in requested)
  if batch_size is None:
    batch_size = max(1, min(256, (1 << 26) // gallery.shape[0]))
  batch_size = min(_check_positive_int(batch_size, "batch_size"), queries.shape[0])
  g = _l2_normalize(jnp.asarray(gallery))
  g_lab = jnp.asarray(g_labels)
  aps, nrel, precs = [], [], []
  for start in range(0, queries.shape[0], batch_size):
    q, lab = queries[start : start + batch_size], q_labels[start : start + batch_size]
    valid = q.shape[0]
    if valid < batch_size:  # pad (label -1 matches nothing) so every chunk has one shape
      q = np.concatenate([q, np.zeros((batch_size - valid, q.shape[1]), np.float32)])
      lab = np.concatenate([lab, -np.ones(batch_size - valid, np.int32)])
    ap, n, p = _chunk_metrics(g, g_lab, jnp.asarray(q), jnp.asarray(lab), ks=clipped)
    aps.append(np.asarray(ap)[:valid])
    nrel.append(np.asarray(n)[:valid])
    precs.append(np.asarray(p)[:, :valid])
  ap, nrel, prec = np.concatenate(aps), np.concatenate(nrel), np.concatenate(precs, axis=1)
  has_relevant = nrel > 0
  out = {"mAP": float(ap[has_relevant].mean()) if has_relevant.any() else 0.0}
  for k, p in zip(requested, prec):
    out[f"precision@{k}"] = float(p.mean())
  out["num_queries"] = int(queries.shape[0])
  out["queries_without_relevant"] = int((~has_relevant).sum())
  return out
