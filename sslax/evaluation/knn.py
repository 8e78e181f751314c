"""Weighted k-nearest-neighbour evaluation of frozen features.

The protocol of Wu et al. 2018 (InstDisc), reused by DINO: features are L2-normalised, the
cosine similarity of each test feature to every train feature is computed, and each of the
top-k train neighbours votes for its own label with weight ``exp(sim / T)``. The prediction
is the class with the largest summed vote (ties go to the lowest class index).

Two entry points with the same arithmetic:

* `knn_predict` / `knn_accuracy`: host arrays, on one device (jax's default). Test rows are
  processed in fixed-size chunks, so peak memory is O(batch_size x N) rather than O(M x N);
  the last chunk is zero-padded to the same size so XLA compiles once.
* `knn_predict_sharded` / `knn_accuracy_sharded`: row-sharded `FeatureBank`s
  (`sslax.features`), on every device of their mesh, for banks that fit no single device (the
  ImageNet train set). Nothing of either bank is gathered: each step every device takes a chunk
  of its own test rows, the chunks are all-gathered (batch_size queries in all), each device
  scores them against its own bank rows and keeps its top-k, and an all-to-all hands each device
  the k x devices candidates of its own queries, from which it takes the exact global top-k and
  votes. Only the predictions, test labels and test ids (three ints per test example) are
  gathered, to score them. Equal to the single-device kNN up to exact ties in similarity (which
  of two equally similar neighbours is k-th depends on the row layout).

If k exceeds the number of train points N, all N train points vote (k is clipped to N).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from sslax.features import ROWS, FeatureBank

_EPS = 1e-12


def _as_features(x, name: str) -> np.ndarray:
  """Returns ``x`` as a finite float32 [rows, D] array, or raises ValueError."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be 2-D [rows, dim], got shape {x.shape}")
  if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
    raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
  x = x.astype(np.float32, copy=False)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or inf values")
  return x


def _as_labels(y, name: str, rows: int, num_classes: int) -> np.ndarray:
  """Returns ``y`` as an int32 [rows] array with values in [0, num_classes), or raises."""
  y = np.asarray(y)
  if y.shape != (rows,):
    raise ValueError(f"{name} must have shape ({rows},) to match its features, got {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name} must be integers, got dtype {y.dtype}")
  if rows and (y.min() < 0 or y.max() >= num_classes):
    bad = y.min() if y.min() < 0 else y.max()
    raise ValueError(f"{name} has label {bad} outside [0, num_classes={num_classes})")
  return y.astype(np.int32)


def _check_positive_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  return int(value)


def _is_positive_number(value) -> bool:
  try:
    return bool(np.ndim(value) == 0 and np.isfinite(float(value)) and float(value) > 0)
  except (TypeError, ValueError):
    return False


def _l2_normalize(x: jax.Array) -> jax.Array:
  # The eps keeps an all-zero feature (e.g. chunk padding) at zero instead of NaN.
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _EPS)


@functools.partial(jax.jit, static_argnames=("kmax",))
def _topk_chunk(bank, bank_labels, queries, *, kmax):
  """bank [N, D] (normalised), bank_labels [N], queries [B, D] -> top sims, labels [B, kmax].

  lax.top_k returns neighbours sorted by decreasing similarity, so the top-k for any
  k <= kmax is just the first k columns. This is kept in its own jit on purpose: fusing the
  vote into the same program made XLA:CPU lower top_k as a full sort of every [N] row
  (measured: ~8 s instead of ~0.4 s for a 1024 x 50k x 512 chunk).
  """
  sims = _l2_normalize(queries) @ bank.T  # [B, N] cosine similarities.
  top_sims, top_idx = jax.lax.top_k(sims, kmax)
  return top_sims, bank_labels[top_idx]


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def _vote(top_sims, top_labels, temperature, *, ks, num_classes):
  """top_sims, top_labels [B, kmax] (sorted) -> predictions [len(ks), B] int32."""
  # Subtracting the per-row best similarity scales every vote of a row by the same factor,
  # which leaves the argmax unchanged but keeps exp() from overflowing at small T.
  weights = jnp.exp((top_sims - top_sims[:, :1]) / temperature)
  rows = jnp.arange(top_sims.shape[0])[:, None]
  preds = []
  for k in ks:
    # Scatter-add is O(B x k); a one-hot would cost O(B x k x C) memory.
    votes = jnp.zeros((top_sims.shape[0], num_classes), jnp.float32)
    votes = votes.at[rows, top_labels[:, :k]].add(weights[:, :k])
    preds.append(jnp.argmax(votes, axis=-1).astype(jnp.int32))
  return jnp.stack(preds)


def _knn_predict_many(
  train_features,
  train_labels,
  test_features,
  test_labels=None,
  *,
  num_classes,
  ks,
  temperature,
  batch_size,
):
  """Validates all inputs before any compute; returns (predictions [len(ks), M] int32,
  test_labels as int32 [M] or None)."""
  num_classes = _check_positive_int(num_classes, "num_classes")
  batch_size = _check_positive_int(batch_size, "batch_size")
  if isinstance(ks, (int, np.integer)) or not isinstance(ks, Sequence) or len(ks) == 0:
    raise ValueError(f"ks must be a non-empty sequence of integers, got {ks!r}")
  ks = tuple(_check_positive_int(k, "k") for k in ks)
  if not _is_positive_number(temperature):
    raise ValueError(f"temperature must be a positive number, got {temperature!r}")
  train = _as_features(train_features, "train_features")
  test = _as_features(test_features, "test_features")
  if train.shape[0] == 0:
    raise ValueError("train_features is empty: kNN needs at least one train point")
  if test.shape[1] != train.shape[1]:
    raise ValueError(f"test_features dim {test.shape[1]} != train_features dim {train.shape[1]}")
  labels = _as_labels(train_labels, "train_labels", train.shape[0], num_classes)
  if test_labels is not None:
    test_labels = _as_labels(test_labels, "test_labels", test.shape[0], num_classes)

  n, m = train.shape[0], test.shape[0]
  clipped = tuple(min(k, n) for k in ks)  # k > N: every train point votes.
  if m == 0:
    return np.zeros((len(ks), 0), np.int32), test_labels
  bank = _l2_normalize(jnp.asarray(train))
  bank_labels = jnp.asarray(labels)
  chunk = min(batch_size, m)  # Don't pad a handful of queries up to a large batch.
  out = []
  for start in range(0, m, chunk):
    queries = test[start : start + chunk]
    valid = queries.shape[0]
    if valid < chunk:  # Zero-pad so every call has the same shape -> one compilation.
      queries = np.concatenate([queries, np.zeros((chunk - valid, test.shape[1]), np.float32)])
    top_sims, top_labels = _topk_chunk(bank, bank_labels, jnp.asarray(queries), kmax=max(clipped))
    preds = _vote(
      top_sims, top_labels, jnp.float32(temperature), ks=clipped, num_classes=num_classes
    )
    out.append(np.asarray(preds)[:, :valid])
  return np.concatenate(out, axis=1), test_labels


def knn_predict(
  train_features,
  train_labels,
  test_features,
  *,
  num_classes,
  k=20,
  temperature=0.07,
  batch_size=1024,
) -> np.ndarray:
  """Weighted kNN predictions.

  Args:
    train_features: [N, D] float features of the labelled bank.
    train_labels: [N] int labels in [0, num_classes).
    test_features: [M, D] float query features.
    num_classes: number of classes C.
    k: neighbours per query; clipped to N.
    temperature: T in the vote weight exp(cosine_sim / T).
    batch_size: test rows per jitted chunk (memory is O(batch_size x N)).

  Returns:
    [M] int32 predicted labels.
  """
  preds, _ = _knn_predict_many(
    train_features,
    train_labels,
    test_features,
    num_classes=num_classes,
    ks=(k,),
    temperature=temperature,
    batch_size=batch_size,
  )
  return preds[0]


def knn_accuracy(
  train_features,
  train_labels,
  test_features,
  test_labels,
  *,
  num_classes,
  ks=(20, 200),
  temperature=0.07,
  batch_size=1024,
) -> dict[int, float]:
  """Top-1 weighted-kNN accuracy for several k at once.

  Shapes as in :func:`knn_predict`, plus test_labels [M] int. The similarity top-max(ks) is
  computed once per test chunk and reused for every k. Returns {k: accuracy in [0, 1]},
  keyed by the requested k (a k > N is evaluated with all N train points).
  """
  preds, labels = _knn_predict_many(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes=num_classes,
    ks=ks,
    temperature=temperature,
    batch_size=batch_size,
  )
  if labels.shape[0] == 0:
    raise ValueError("test_features is empty: accuracy is undefined")
  return {int(k): float(np.mean(p == labels)) for k, p in zip(ks, preds)}


# ------------------------------------------------------------------------------------------
# Row-sharded banks: the kNN on every device of the mesh.
# ------------------------------------------------------------------------------------------


def _check_bank(bank, name: str, num_classes: int) -> None:
  """Fails on a bank that is not a FeatureBank, is empty, not finite, or has bad labels."""
  if not isinstance(bank, FeatureBank):
    raise TypeError(f"{name} must be a sslax.features.FeatureBank, got {type(bank).__name__}")
  if bank.num_examples == 0:
    raise ValueError(f"{name} is empty")
  finite, lo, hi = _bank_stats(bank.features, bank.labels, bank.index)
  if not bool(finite):
    raise ValueError(f"{name} contains NaN or inf values")
  if int(lo) < 0 or int(hi) >= num_classes:
    bad = int(lo) if int(lo) < 0 else int(hi)
    raise ValueError(f"{name} has label {bad} outside [0, num_classes={num_classes})")


@jax.jit
def _bank_stats(features, labels, index):
  valid = index >= 0
  return (
    jnp.all(jnp.isfinite(features)),
    jnp.min(jnp.where(valid, labels, jnp.iinfo(jnp.int32).max)),
    jnp.max(jnp.where(valid, labels, -1)),
  )


def _all_to_all_rows(x, axes, chunk: int):
  """[S*c, k] on every device -> [c, S*k]: this device's c rows from every device, in device
  order. Moves S*c*k values per device: the route for accelerators and pods."""
  del chunk
  return jax.lax.all_to_all(x, axes, 0, 1, tiled=True)


def _gathered_rows(x, axes, chunk: int):
  """What `_all_to_all_rows` gives, through an all_gather of everything (S times the bytes).

  The route on CPU devices: there the all_to_all slices top_k's output per destination, after
  which XLA:CPU no longer sees sort + slice as a top-k and sorts every row in full instead of
  running its top-k kernel (15x slower: 64 s against 4 s for 10k queries on 2 CPU devices).
  """
  every = jax.lax.all_gather(x, axes)  # [S, S*c, k]
  mine = jax.lax.dynamic_slice_in_dim(every, jax.lax.axis_index(axes) * chunk, chunk, axis=1)
  return jnp.swapaxes(mine, 0, 1).reshape(chunk, -1)


def _candidate_route(mesh):
  cpu = mesh.devices.flat[0].platform == "cpu"
  return _gathered_rows if cpu else _all_to_all_rows


@functools.lru_cache(maxsize=16)  # built once per mesh and shapes: jit then compiles once
def _sharded_knn_fns(mesh, *, chunk: int, local_k: int, kmax: int, ks, num_classes: int):
  """(topk, vote) for one mesh and chunk size; both run per device (shard_map).

  topk(bank [R, D] (normalised), bank_labels [R], bank_index [R], queries [Rq, D], query_index
  [Rq], start) -> (top sims [S*chunk, kmax], their labels, query ids [S*chunk]): rows
  start..start+chunk of every device's query block, each against the whole bank.
  vote(top sims, top labels, temperature) -> predictions [len(ks), S*chunk].
  Kept as two programs: fused with the vote, XLA:CPU lowers top_k as a full sort (see
  `_topk_chunk`).
  """
  axes = ROWS[0]  # every mesh axis
  route = _candidate_route(mesh)

  def topk(bank, bank_labels, bank_index, queries, query_index, start):
    mine = jax.lax.dynamic_slice_in_dim(queries, start, chunk)  # [c, D] this device's queries
    ids = jax.lax.dynamic_slice_in_dim(query_index, start, chunk)
    q = jax.lax.all_gather(mine, axes, tiled=True)  # [S*c, D]: every device's chunk
    sims = _l2_normalize(q) @ bank.T  # [S*c, L] against this device's bank rows
    sims = jnp.where(bank_index[None, :] >= 0, sims, -jnp.inf)  # padding rows never vote
    top_sims, top_idx = jax.lax.top_k(sims, local_k)
    top_labels = bank_labels[top_idx]
    # Device d receives, for its own c queries, the local_k candidates of every device, in
    # device order: [c, S * local_k]; the exact global top-k is among them.
    top_sims, top_labels = (route(x, axes, chunk) for x in (top_sims, top_labels))
    top_sims, pick = jax.lax.top_k(top_sims, kmax)
    return top_sims, jnp.take_along_axis(top_labels, pick, axis=1), ids

  def vote(top_sims, top_labels, temperature):
    return _vote(top_sims, top_labels, temperature, ks=ks, num_classes=num_classes)

  topk_fn = jax.jit(
    jax.shard_map(topk, mesh=mesh, in_specs=(ROWS,) * 5 + (P(),), out_specs=(ROWS, ROWS, ROWS))
  )
  vote_fn = jax.jit(
    jax.shard_map(
      vote,
      mesh=mesh,
      in_specs=(ROWS, ROWS, P()),
      out_specs=P(None, ROWS[0]),
    )
  )
  return topk_fn, vote_fn


@jax.jit
def _normalized(features):
  return _l2_normalize(features)


def _pad_rows(mesh, array, fill, multiple: int):
  """Pads every device's block of a row-sharded array to a multiple of `multiple` rows."""
  return _pad_fn(mesh, multiple)(array, fill)


@functools.lru_cache(maxsize=16)
def _pad_fn(mesh, multiple: int):
  def pad(block, fill):
    extra = -block.shape[0] % multiple
    widths = [(0, extra)] + [(0, 0)] * (block.ndim - 1)
    return jnp.pad(block, widths, constant_values=fill)

  return jax.jit(jax.shard_map(pad, mesh=mesh, in_specs=(ROWS, P()), out_specs=ROWS))


def knn_predict_sharded(
  train: FeatureBank,
  test: FeatureBank,
  *,
  num_classes,
  ks=(20,),
  temperature=0.07,
  batch_size=1024,
) -> tuple[np.ndarray, np.ndarray]:
  """Weighted kNN of every test example against the row-sharded train bank, on the mesh.

  Args:
    train: bank of N labelled train features (rows sharded over the mesh).
    test: bank of M query features on the same mesh.
    num_classes, ks, temperature: as in `knn_accuracy`.
    batch_size: queries per step over all devices (each device contributes batch_size /
      devices of its own rows); memory per device is O(batch_size x N / devices).

  Returns:
    (predictions [len(ks), M] int32, test labels [M] int32), in test example order: gathered
    to every process (small: ints per test example).
  """
  num_classes = _check_positive_int(num_classes, "num_classes")
  batch_size = _check_positive_int(batch_size, "batch_size")
  if isinstance(ks, (int, np.integer)) or not isinstance(ks, Sequence) or len(ks) == 0:
    raise ValueError(f"ks must be a non-empty sequence of integers, got {ks!r}")
  ks = tuple(_check_positive_int(k, "k") for k in ks)
  if not _is_positive_number(temperature):
    raise ValueError(f"temperature must be a positive number, got {temperature!r}")
  _check_bank(train, "train bank", num_classes)
  _check_bank(test, "test bank", num_classes)
  if test.dim != train.dim:
    raise ValueError(f"test features dim {test.dim} != train features dim {train.dim}")
  mesh = train.mesh
  if test.mesh != mesh:
    raise ValueError("the train and test banks must be sharded over the same mesh")

  shards = math.prod(mesh.devices.shape)
  clipped = tuple(min(k, train.num_examples) for k in ks)  # k > N: every train point votes.
  kmax = max(clipped)
  local_k = min(kmax, train.num_rows // shards)
  test_block = test.num_rows // shards
  chunk = max(1, min(batch_size // shards, test_block))
  topk, vote = _sharded_knn_fns(
    mesh, chunk=chunk, local_k=local_k, kmax=kmax, ks=clipped, num_classes=num_classes
  )
  bank = _normalized(train.features)
  queries, query_index = test.features, test.index
  if test_block % chunk:
    queries = _pad_rows(mesh, queries, 0.0, chunk)
    query_index = _pad_rows(mesh, query_index, -1, chunk)
  preds, ids = [], []
  for start in range(0, queries.shape[0] // shards, chunk):
    top_sims, top_labels, chunk_ids = topk(
      bank, train.labels, train.index, queries, query_index, np.int32(start)
    )
    preds.append(vote(top_sims, top_labels, jnp.float32(temperature)))
    ids.append(chunk_ids)
  preds = _to_host(jnp.stack(preds))  # [chunks, K, S * chunk]
  ids = _to_host(jnp.stack(ids)).reshape(-1)  # [chunks * S * chunk]
  preds = preds.transpose(1, 0, 2).reshape(len(ks), -1)
  valid = ids >= 0
  order = np.argsort(ids[valid], kind="stable")
  _, test_labels = _labels_in_order(test)
  return preds[:, valid][:, order].astype(np.int32), test_labels


def _to_host(array: jax.Array) -> np.ndarray:
  """The explicit gather of small sharded arrays (predictions, ids): every process gets all."""
  if jax.process_count() == 1:
    return np.asarray(array)
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _labels_in_order(bank: FeatureBank) -> tuple[np.ndarray, np.ndarray]:
  """(ids, labels) of a bank's valid rows in example order, on every process (small)."""
  ids, labels = _to_host(bank.index), _to_host(bank.labels)
  valid = ids >= 0
  order = np.argsort(ids[valid], kind="stable")
  return ids[valid][order], labels[valid][order].astype(np.int32)


def knn_accuracy_sharded(
  train: FeatureBank,
  test: FeatureBank,
  *,
  num_classes,
  ks=(20, 200),
  temperature=0.07,
  batch_size=1024,
) -> dict[int, float]:
  """Top-1 weighted-kNN accuracy for several k at once on row-sharded banks: {k: accuracy}, as
  `knn_accuracy` (same vote; see `knn_predict_sharded` for how the work is split)."""
  preds, labels = knn_predict_sharded(
    train, test, num_classes=num_classes, ks=ks, temperature=temperature, batch_size=batch_size
  )
  return {int(k): float(np.mean(p == labels)) for k, p in zip(ks, preds)}
