"""Features of a whole split through a frozen network, computed on the mesh and kept there.

The bottom layer shared by evaluation (frozen-feature protocols, fine-tuning's test pass) and by
methods that embed their own training set (DeepCluster's per-epoch k-means): it needs only the
input pipeline and the mesh helpers, nothing about methods, checkpoints or workdirs.

What is sharded, and where anything is gathered:

* Input: each process reads and decodes only its own rows of the split
  (`pipeline.eval_batches`).
* Output: a `FeatureBank`, a global [R, D] float32 `jax.Array` whose rows are sharded over every
  mesh axis (`sharding.BATCH_AXES`), with each row's label and example id (-1 on padding rows).
  R = ceil(N / B) * B for the eval batch B; device i holds its slice of every eval batch, in
  batch order (device-major rows), so the features never leave the devices that computed them
  and a process holds only its addressable shards. Within each device's block the padding rows
  come last (the bank's invariant; the feature cache relies on it).
* `FeatureBank.gather()` is the one place a bank is gathered: every process gets [N, D] in
  example order. `extract_features(..., sharded=False)` returns that, for callers whose arrays are
  small (fine-tuning's test logits [N, C]) or that need host arrays (DeepCluster's k-means input);
  the frozen-feature protocols take the sharded bank.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sslax import sharding
from sslax.data import pipeline

ROWS = P(sharding.BATCH_AXES)  # a bank's rows: split over every mesh axis


@dataclasses.dataclass(frozen=True)
class LocalShard:
  """One addressable device's block of a bank, on the host, valid rows only."""

  device: jax.Device
  rows: range  # the block's rows in the global [R, D] bank (padding included)
  features: np.ndarray  # [v, D] float32, v = valid rows of the block (they come first)
  labels: np.ndarray  # [v] int32
  index: np.ndarray  # [v] int32 example ids


@dataclasses.dataclass(frozen=True)
class FeatureBank:
  """Features of a split, rows sharded over the mesh (see the module docstring).

  features [R, D] float32, labels [R] int32, index [R] int32 (example id in [0, N), -1 on padding
  rows): three global arrays with the same row sharding (`ROWS` on `mesh`). Every id in [0, N)
  appears exactly once.
  """

  features: jax.Array
  labels: jax.Array
  index: jax.Array
  num_examples: int

  @property
  def mesh(self):
    return self.features.sharding.mesh

  @property
  def dim(self) -> int:
    return int(self.features.shape[1])

  @property
  def num_rows(self) -> int:
    return int(self.features.shape[0])

  def local_shards(self, features: jax.Array | None = None) -> list[LocalShard]:
    """This process's blocks as host arrays (valid rows only), in row order. `features`: another
    [R, D] array with this bank's sharding to read instead (e.g. standardised features)."""
    x = self.features if features is None else features
    out = []
    for f, y, i in zip(*(_by_row(a) for a in (x, self.labels, self.index))):
      index = np.asarray(i.data)
      valid = int(np.sum(index >= 0))  # a prefix of the block (the bank's invariant)
      rows = f.index[0]
      out.append(
        LocalShard(
          f.device,
          range(rows.start or 0, self.num_rows if rows.stop is None else rows.stop),
          np.asarray(f.data)[:valid],  # whole block to the host, then a view: no device op
          np.asarray(y.data)[:valid],
          index[:valid],
        )
      )
    return out

  def gather(self) -> tuple[np.ndarray, np.ndarray]:
    """-> (features [N, D] float32, labels [N] int32) in example order, on every process.

    The explicit gather: the whole bank on every host. Use it only where the data are small.
    """
    if jax.process_count() == 1:
      x, y, i = (np.asarray(a) for a in (self.features, self.labels, self.index))
    else:
      x, y, i = multihost_utils.process_allgather(
        (self.features, self.labels, self.index), tiled=True
      )
    valid = i >= 0
    order = np.argsort(i[valid], kind="stable")
    return np.asarray(x[valid][order], np.float32), np.asarray(y[valid][order], np.int32)


def _by_row(array: jax.Array) -> list:
  return sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)


def device_blocks(mesh, num_rows: int) -> dict:
  """{addressable device: (start, stop)}: each device's block of rows in a [num_rows, ...] bank."""
  where = NamedSharding(mesh, ROWS)
  return {
    device: (rows.start or 0, num_rows if rows.stop is None else rows.stop)
    for device, (rows,) in where.addressable_devices_indices_map((num_rows,)).items()
  }


def assemble_bank(mesh, num_rows: int, blocks: dict, num_examples: int) -> FeatureBank:
  """A bank from host blocks: {device: (features [v, D], labels [v], index [v])} for every
  addressable device of `mesh`, each the valid rows of that device's block (padded here)."""
  where = NamedSharding(mesh, ROWS)
  dims = {np.shape(x)[1] for x, _, _ in blocks.values()}
  if len(dims) != 1:
    raise ValueError(f"feature blocks disagree on the feature dim: {sorted(dims)}")
  (dim,) = dims
  parts = ([], [], [])
  for device, (start, stop) in device_blocks(mesh, num_rows).items():
    size = stop - start
    x, y, i = blocks[device]
    pad = size - len(i)
    if pad < 0:
      raise ValueError(f"{len(i)} rows do not fit the {size}-row block of device {device}")
    padded = (
      np.concatenate([np.asarray(x, np.float32), np.zeros((pad, dim), np.float32)]),
      np.concatenate([np.asarray(y, np.int32), np.zeros(pad, np.int32)]),
      np.concatenate([np.asarray(i, np.int32), np.full(pad, -1, np.int32)]),
    )
    for part, a in zip(parts, padded):
      part.append(jax.device_put(a, device))
  shapes = ((num_rows, dim), (num_rows,), (num_rows,))
  arrays = [
    jax.make_array_from_single_device_arrays(shape, where, part)
    for shape, part in zip(shapes, parts)
  ]
  return FeatureBank(*arrays, num_examples=int(num_examples))


def bank_from_arrays(features, labels, mesh=None) -> FeatureBank:
  """Host arrays [N, D], [N] (the same on every process) -> a bank on `mesh`, rows in order:
  device i gets rows [i * L, (i + 1) * L), L = ceil(N / devices). mesh None: this process's
  first device alone (where jax would put a numpy array)."""
  if mesh is None:
    mesh = sharding.make_mesh({"data": 1}, devices=jax.local_devices()[:1])
  x = np.asarray(features, np.float32)
  y = np.asarray(labels, np.int32)
  n = x.shape[0]
  shards = sharding.num_batch_shards(mesh)
  block = max(1, math.ceil(n / shards))
  blocks = {}
  for device, (start, stop) in device_blocks(mesh, block * shards).items():
    lo, hi = min(start, n), min(stop, n)
    blocks[device] = (x[lo:hi], y[lo:hi], np.arange(lo, hi, dtype=np.int32))
  return assemble_bank(mesh, block * shards, blocks, n)


def _empty_bank(num_rows: int, dim: int, where) -> tuple[jax.Array, ...]:
  """Zero features [R, D], labels [R] and ids -1 [R], created sharded (never on one device)."""
  return jax.jit(
    lambda: (
      jnp.zeros((num_rows, dim), jnp.float32),
      jnp.zeros((num_rows,), jnp.int32),
      jnp.full((num_rows,), -1, jnp.int32),
    ),
    out_shardings=(where,) * 3,
  )()


def extract_features(
  backbone,
  variables,
  source,
  *,
  image_size: int,
  batch_size: int,
  mesh,
  raw_pixels: bool = False,
  crop_fraction: float = 1.0,
  normalize: str = "none",
  sharded: bool = False,
):
  """Features of every example of `source`: a row-sharded `FeatureBank` (sharded=True), or
  (features [N, D] float32, labels [N] int32) in example order on every process (the bank,
  gathered: for small outputs only).

  backbone: anything with `apply(variables, images [B, S, S, C], train=False) -> [B, D]` (a flax
    module, or an adapter such as an image-text model's image tower); unused with raw_pixels.
  raw_pixels: return the preprocessed pixels, flattened, instead (the "raw pixels" baseline).
  Images are the evaluation view (`pipeline.eval_batches`, `augment.center_view`: with
  crop_fraction 1 the central square resized to `image_size`, with f < 1 the shorter side
  resized to image_size / f and the centre image_size crop; scaled to [0, 1], then normalised
  with `normalize`, as the training views were). Each process reads only its rows; each eval
  batch's features are written into the bank on the devices that computed them.
  """
  sharding.check_batch_size(batch_size, mesh, name="eval.batch_size")
  num = pipeline.num_examples(source)
  if num == 0:
    raise ValueError("the split is empty: there are no features to extract.")
  steps = math.ceil(num / batch_size)
  local_rows = batch_size // sharding.num_batch_shards(mesh)  # one device's rows of a batch
  rows_sharding = NamedSharding(mesh, ROWS)

  @jax.jit
  def encode(images):
    if raw_pixels:
      return images.reshape(images.shape[0], -1).astype(jnp.float32)
    return backbone.apply(variables, images, train=False).astype(jnp.float32)

  def write_block(bank, batch, step):
    """Each device copies its rows of one eval batch into its block of the bank."""
    return tuple(
      jax.lax.dynamic_update_slice_in_dim(b, x, step * local_rows, axis=0)
      for b, x in zip(bank, batch)
    )

  write = jax.jit(
    jax.shard_map(
      write_block, mesh=mesh, in_specs=((ROWS,) * 3, (ROWS,) * 3, P()), out_specs=(ROWS,) * 3
    ),
    donate_argnums=0,
  )
  bank = None
  for step, local in enumerate(
    pipeline.eval_batches(
      source,
      image_size=image_size,
      global_batch=batch_size,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      crop_fraction=crop_fraction,
      normalize=normalize,
    )
  ):
    batch = sharding.make_global_batch(
      mesh, {"image": local["image"], "label": local["label"], "index": local["index"]}
    )
    out = encode(batch["image"])
    if bank is None:
      bank = _empty_bank(steps * batch_size, out.shape[1], rows_sharding)
    bank = write(bank, (out, batch["label"], batch["index"]), np.int32(step))
  bank = FeatureBank(*bank, num_examples=num)
  return bank if sharded else bank.gather()
