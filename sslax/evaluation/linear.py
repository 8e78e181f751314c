"""Linear probe on frozen, precomputed features.

Features are standardised with the train split's per-dimension mean/std (what MAE gets from a
BatchNorm without affine parameters in front of the linear head), then a softmax-regression
head is trained on shuffled minibatches. One epoch is a single jitted ``lax.scan`` over
minibatches, so the Python loop only runs once per epoch.

Three ways to fit the head:

* ``linear_probe``: one run, AdamW at a constant lr (the demo's default), or SGD / LARS with
  momentum and a cosine schedule (the SimCLR / MoCo recipe).
* ``linear_probe_sweep``: the standard recipe's lr sweep: every lr of a small grid is trained
  with a held-out val split of the train rows; the best val accuracy picks the lr, which is then
  retrained on all train rows and reported on test. Train-time augmentation of the standard
  recipe is not done here: the features are precomputed once (centre view).
* ``ridge_probe``: closed form (ridge regression on one-hot targets), seconds on small data;
  the ridge strength is picked by val accuracy when several are given.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sslax.evaluation.knn import (
  _as_features,
  _as_labels,
  _check_positive_int,
  _is_positive_number,
)
from sslax.features import ROWS, FeatureBank, assemble_bank, bank_from_arrays


def standardize(train, *others, eps: float = 1e-6) -> tuple[np.ndarray, ...]:
  """Standardises features with the statistics of ``train`` only.

  Args:
    train: [N, D] features the mean/variance are computed on (N >= 1).
    *others: any number of [M_i, D] arrays (val/test) transformed with the same statistics.
    eps: added to the variance, as in BatchNorm, so constant dimensions map to 0, not NaN.

  Returns:
    A tuple ``(train_std, *others_std)`` of float32 arrays, always a tuple (even if no others).
  """
  train = _as_features(train, "train")
  if train.shape[0] == 0:
    raise ValueError("train is empty: cannot compute standardisation statistics")
  # float64 statistics: a large common offset (e.g. all features ~1e3) would lose the
  # small per-sample variation to float32 cancellation.
  mean = train.mean(axis=0, dtype=np.float64)
  scale = 1.0 / np.sqrt(train.var(axis=0, dtype=np.float64) + eps)
  out = []
  for i, x in enumerate((train, *others)):
    x = _as_features(x, "train" if i == 0 else f"others[{i - 1}]")
    if x.shape[1] != train.shape[1]:
      raise ValueError(f"others[{i - 1}] has dim {x.shape[1]}, train has dim {train.shape[1]}")
    out.append(((x - mean) * scale).astype(np.float32))
  return tuple(out)


def _accuracy(params, x: np.ndarray, y: np.ndarray, chunk: int) -> float:
  """Top-1 accuracy of the linear head; NumPy in chunks (no compile, bounded memory)."""
  return _num_correct(params, x, y, chunk) / x.shape[0]


def _num_correct(params, x: np.ndarray, y: np.ndarray, chunk: int) -> int:
  """How many rows the linear head gets right; NumPy in chunks."""
  w, b = np.asarray(params["w"]), np.asarray(params["b"])
  return sum(
    int(np.sum(np.argmax(x[i : i + chunk] @ w + b, axis=1) == y[i : i + chunk]))
    for i in range(0, x.shape[0], chunk)
  )


SOLVERS = ("adamw", "sgd", "lars", "closed_form")


def _make_optimizer(
  name: str, learning_rate: float, weight_decay: float, total_steps: int, momentum: float = 0.9
) -> optax.GradientTransformation:
  mask = {"w": True, "b": False}
  if name == "adamw":
    return optax.adamw(learning_rate, weight_decay=weight_decay, mask=mask)
  schedule = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
  if name == "sgd":
    return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=mask),
      optax.sgd(schedule, momentum=momentum, nesterov=True),
    )
  if name == "lars":
    return optax.lars(
      schedule,
      weight_decay=weight_decay,
      weight_decay_mask=mask,
      trust_ratio_mask=mask,
      momentum=momentum,
    )
  raise ValueError(f"Unknown linear-probe optimizer {name!r}; choose one of {SOLVERS[:3]}.")


@functools.lru_cache(maxsize=8)  # the same probe again (report, then linear) compiles once
def _make_epoch_fn(solver: str, hyper: tuple, mesh, n: int, batch_size: int):
  """-> (optimizer, epoch): `_make_optimizer(solver, *hyper)` and a jitted (params, opt_state,
  key, x [R, D], y [R], slot [S * N], ids [n]) -> (params, opt_state, loss) over the n train examples `ids` of a row-sharded bank (x, y).

  slot: each device's [N] map from example id to its row in the device's block (-1: elsewhere).
  Every step, each device picks the minibatch rows it holds and a psum assembles the [batch, D]
  minibatch on every device (exact: each row comes from one device, the others add zeros); the
  head's update is then computed, replicated, on that minibatch, so the result does not depend
  on the number of devices or processes.
  """
  optimizer = _make_optimizer(solver, *hyper)
  num_batches = math.ceil(n / batch_size)
  pad = num_batches * batch_size - n
  axes = ROWS[0]

  def loss_fn(params, x, y, mask):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(ce * mask) / jnp.sum(mask)

  def epoch(params, opt_state, key, x_block, y_block, slot, ids):
    def step(carry, batch):
      params, opt_state = carry
      idx, mask = batch
      pos = slot[ids[idx]]  # this device's rows of the minibatch, -1 where another holds it
      mine = pos >= 0
      row = jnp.maximum(pos, 0)
      x = jax.lax.psum(jnp.where(mine[:, None], x_block[row], 0.0), axes)
      y = jax.lax.psum(jnp.where(mine, y_block[row], 0), axes)
      loss, grads = jax.value_and_grad(loss_fn)(params, x, y, mask)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    # Pad the permutation to whole batches and mask the padding out of the loss, so every
    # example is seen exactly once per epoch (no dropped ragged tail) with a static shape.
    perm = jnp.concatenate([jax.random.permutation(key, n), jnp.zeros(pad, jnp.int32)])
    mask = (jnp.arange(n + pad) < n).astype(jnp.float32)
    batches = (perm.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size))
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state, jnp.mean(losses)

  return optimizer, jax.jit(
    jax.shard_map(epoch, mesh=mesh, in_specs=(P(), P(), P(), ROWS, ROWS, ROWS, P()), out_specs=P())
  )


def _slots(bank: FeatureBank, ids: dict) -> jax.Array:
  """Per device: [N] example id -> row of the device's block, -1 for ids other devices hold
  ([S * N] int32, rows sharded: N ints per device). Built on the host from each addressable
  device's block ids `ids` {device: [v] int32} (valid rows first, as in every bank)."""
  n, where = bank.num_examples, NamedSharding(bank.mesh, ROWS)
  parts = []
  for device in where.addressable_devices_indices_map((bank.mesh.devices.size * n,)):
    slot = np.full(n, -1, np.int32)
    slot[ids[device]] = np.arange(len(ids[device]), dtype=np.int32)
    parts.append(jax.device_put(slot, device))
  return jax.make_array_from_single_device_arrays((bank.mesh.devices.size * n,), where, parts)


def _combine_statistics(stats: list) -> tuple[np.ndarray, np.ndarray]:
  """[(count, mean [D], var [D]) per device block, float64] of every process -> (mean, var).

  One block (one device): its own mean and var, bit for bit what NumPy gives on the whole
  array. More: Chan et al.'s pairwise update, in block order (float64; the float32 features
  see differences below 1e-15 relative). Gathered across processes: [blocks, 2D] float64.
  """
  if jax.process_count() > 1:
    counts = np.array([c for c, _, _ in stats], np.int64)
    moments = np.stack([np.concatenate([m, v]) for _, m, v in stats])
    # float64 travels as pairs of uint32 (jax arrays are 32-bit unless x64 is enabled).
    counts, moments = multihost_utils.process_allgather(
      (counts.view(np.uint32), moments.view(np.uint32))
    )
    counts = np.asarray(counts).reshape(-1).view(np.int64)
    moments = np.ascontiguousarray(np.asarray(moments).reshape(len(counts), -1)).view(np.float64)
    dim = moments.shape[1] // 2
    stats = [(int(c), m[:dim], m[dim:]) for c, m in zip(counts, moments)]
  stats = [s for s in stats if s[0] > 0]
  count, mean, var = stats[0]
  if len(stats) == 1:
    return mean, var
  m2 = var * count
  for c, m, v in stats[1:]:
    delta = m - mean
    total = count + c
    mean = mean + delta * (c / total)
    m2 = m2 + v * c + delta**2 * (count * c / total)
    count = total
  return mean, m2 / count


def _rows_of(index: np.ndarray, rank: np.ndarray) -> np.ndarray:
  """Positions of a host block's rows (example ids `index`) whose rank is >= 0, in rank order."""
  r = rank[index]
  keep = np.flatnonzero(r >= 0)
  return keep[np.argsort(r[keep], kind="stable")]


def _ranks(ids: np.ndarray, n: int) -> np.ndarray:
  """[N] example id -> its position in `ids`, -1 if absent."""
  rank = np.full(n, -1, np.int64)
  rank[ids] = np.arange(len(ids))
  return rank


def _standardized(shards: list, mean, scale, rows_per_step: int = 65536) -> dict:
  """(x - mean) * scale in float64 on the host, one device block at a time, cast to float32
  (what `standardize` computes) -> {device: (features, labels, index)} host blocks."""
  blocks = {}
  for shard in shards:
    x = shard.features
    z = np.empty_like(x)
    for i in range(0, x.shape[0], rows_per_step):  # elementwise: chunking changes no bit
      z[i : i + rows_per_step] = ((x[i : i + rows_per_step] - mean) * scale).astype(np.float32)
    blocks[shard.device] = (z, shard.labels, shard.index)
  return blocks


def _count_correct(params, blocks: dict, rank: np.ndarray, chunk: int) -> int:
  """Correct predictions of the head on the host blocks' rows with rank >= 0 (in rank order),
  summed over processes."""
  correct = 0
  for z, labels, index in blocks.values():
    rows = _rows_of(index, rank)
    correct += _num_correct(params, z[rows], labels[rows], chunk)
  if jax.process_count() > 1:
    correct = int(np.sum(multihost_utils.process_allgather(np.array([correct], np.int32))))
  return correct


def _check_blocks(shards: list, name: str, num_classes: int) -> None:
  """Finite features and labels in [0, num_classes) in every process's blocks (host arrays)."""
  finite = all(np.all(np.isfinite(s.features)) for s in shards)
  labels = [s.labels for s in shards if len(s.labels)]
  lo = min((int(y.min()) for y in labels), default=0)
  hi = max((int(y.max()) for y in labels), default=0)
  if jax.process_count() > 1:
    got = multihost_utils.process_allgather(np.array([finite, lo, hi], np.int32))
    got = np.asarray(got).reshape(-1, 3)
    finite, lo, hi = bool(got[:, 0].all()), int(got[:, 1].min()), int(got[:, 2].max())
  if not finite:
    raise ValueError(f"{name} contains NaN or inf values")
  if lo < 0 or hi >= num_classes:
    raise ValueError(
      f"{name} has label {lo if lo < 0 else hi} outside [0, num_classes={num_classes})"
    )


def _check_probe_args(
  num_classes, optimizer, epochs, batch_size, learning_rate, weight_decay, val_fraction
):
  num_classes = _check_positive_int(num_classes, "num_classes")
  if optimizer not in SOLVERS[:3]:
    raise ValueError(
      f"Unknown linear-probe optimizer {optimizer!r}; choose one of "
      f"{SOLVERS[:3]} (or ridge_probe for 'closed_form')."
    )
  epochs = _check_positive_int(epochs, "epochs")
  batch_size = _check_positive_int(batch_size, "batch_size")
  if not _is_positive_number(learning_rate):
    raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
  if not (_is_positive_number(weight_decay) or weight_decay == 0):
    raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
  if not ((_is_positive_number(val_fraction) or val_fraction == 0) and val_fraction < 1):
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
  return num_classes, epochs, batch_size


def _host_banks(train_features, train_labels, test_features, test_labels, num_classes):
  """Validated host arrays -> (train bank, test bank) on this process's first device."""
  x_train = _as_features(train_features, "train_features")
  x_test = _as_features(test_features, "test_features")
  if x_test.shape[1] != x_train.shape[1]:
    raise ValueError(
      f"test_features dim {x_test.shape[1]} != train_features dim {x_train.shape[1]}"
    )
  y_train = _as_labels(train_labels, "train_labels", x_train.shape[0], num_classes)
  y_test = _as_labels(test_labels, "test_labels", x_test.shape[0], num_classes)
  if x_train.shape[0] == 0 or x_test.shape[0] == 0:
    raise ValueError(
      f"need non-empty train and test sets, got {x_train.shape[0]} train "
      f"and {x_test.shape[0]} test rows"
    )
  return bank_from_arrays(x_train, y_train), bank_from_arrays(x_test, y_test)


def linear_probe(
  train_features,
  train_labels,
  test_features,
  test_labels,
  *,
  num_classes,
  epochs=100,
  batch_size=1024,
  learning_rate=1e-3,
  weight_decay=1e-4,
  seed=0,
  val_fraction=0.0,
  optimizer="adamw",
) -> dict:
  """Trains a linear softmax classifier on frozen features and reports top-1 accuracy.

  Args:
    train_features: [N, D] float; train_labels: [N] int in [0, num_classes).
    test_features: [M, D] float; test_labels: [M] int in [0, num_classes).
    num_classes: number of classes C.
    epochs: passes over the train split (each one a fresh permutation).
    batch_size: minibatch size, clipped to the train split size.
    learning_rate, weight_decay: optimizer hyper-parameters (decay on the weights, not the bias).
    seed: seeds the val split and per-epoch shuffles; same seed -> same result.
    val_fraction: in [0, 1); this fraction of the train rows is held out (randomly) and
      reported as "val_accuracy". Standardisation statistics use the remaining rows only.
    optimizer: "adamw" (constant lr), "sgd" (Nesterov momentum 0.9) or "lars" (momentum 0.9,
      trust coefficient 1e-3); sgd and lars decay the lr to 0 on a cosine over all steps.

  Returns:
    {"train_accuracy", "test_accuracy", "epochs", "train_loss" (mean loss of the last epoch),
    "optimizer", "learning_rate"} plus "val_accuracy" when val_fraction > 0. Accuracies are
    floats in [0, 1]. The arrays go to jax's default device as one-device banks
    (`linear_probe_sharded`, the one implementation).
  """
  num_classes = _check_positive_int(num_classes, "num_classes")
  _check_probe_args(
    num_classes, optimizer, epochs, batch_size, learning_rate, weight_decay, val_fraction
  )
  train, test = _host_banks(train_features, train_labels, test_features, test_labels, num_classes)
  return linear_probe_sharded(
    train,
    test,
    num_classes=num_classes,
    epochs=epochs,
    batch_size=batch_size,
    learning_rate=learning_rate,
    weight_decay=weight_decay,
    seed=seed,
    val_fraction=val_fraction,
    optimizer=optimizer,
  )


def linear_probe_sharded(
  train: FeatureBank,
  test: FeatureBank,
  *,
  num_classes,
  epochs=100,
  batch_size=1024,
  learning_rate=1e-3,
  weight_decay=1e-4,
  seed=0,
  val_fraction=0.0,
  optimizer="adamw",
) -> dict:
  """`linear_probe` on row-sharded banks (`sslax.features.FeatureBank`, one mesh): the same
  arguments and result, and the same numbers at any number of devices or processes.

  Where things are: the standardisation statistics are float64 sums of each device block on its
  host, combined across processes ([D] vectors); the standardised banks stay row-sharded; the
  head (params, optimizer state) is replicated; each step's [batch, D] minibatch is assembled on
  every device by a psum of the rows each device holds (`_make_epoch_fn`); accuracies are counted
  per block on its host and summed across processes. No process holds more than its own blocks.
  """
  num_classes, epochs, batch_size = _check_probe_args(
    num_classes, optimizer, epochs, batch_size, learning_rate, weight_decay, val_fraction
  )
  for bank in (train, test):
    if not isinstance(bank, FeatureBank):
      raise TypeError(f"expected sslax.features.FeatureBank, got {type(bank).__name__}")
  if test.dim != train.dim:
    raise ValueError(f"test features dim {test.dim} != train features dim {train.dim}")
  if test.mesh != train.mesh:
    raise ValueError("the train and test banks must be sharded over the same mesh")
  total = train.num_examples
  if total == 0 or test.num_examples == 0:
    raise ValueError(
      f"need non-empty train and test banks, got {total} train and {test.num_examples} test rows"
    )

  split_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
  n_val = int(round(val_fraction * total))
  if val_fraction > 0 and not 1 <= n_val < total:
    raise ValueError(
      f"val_fraction={val_fraction} leaves {n_val} val and "
      f"{total - n_val} train rows; both must be >= 1"
    )
  # The val split and the train rows' order (by example id): a permutation as before.
  order = np.asarray(jax.random.permutation(split_key, total)) if n_val else np.arange(total)
  train_ids = order[n_val:]
  train_rank = _ranks(train_ids, total)

  # Each device block on its host once (validated, standardised there; counted later).
  train_shards, test_shards = train.local_shards(), test.local_shards()
  _check_blocks(train_shards, "train bank", num_classes)
  _check_blocks(test_shards, "test bank", num_classes)
  stats = []
  for shard in train_shards:
    x = shard.features[_rows_of(shard.index, train_rank)]
    zeros = np.zeros(train.dim)
    # float64 statistics: a large common offset (e.g. all features ~1e3) would lose the
    # small per-sample variation to float32 cancellation. A block without train rows still
    # sends (0, 0, 0): every process gathers the same shapes.
    mean = x.mean(axis=0, dtype=np.float64) if len(x) else zeros
    var = x.var(axis=0, dtype=np.float64) if len(x) else zeros
    stats.append((len(x), mean, var))
  mean, var = _combine_statistics(stats)
  scale = 1.0 / np.sqrt(var + 1e-6)  # the eps of `standardize`
  # Standardised on the host, block by block; the train blocks go back to their devices (the
  # probe trains there), the test blocks are only counted, on the host.
  train_blocks = _standardized(train_shards, mean, scale)
  test_blocks = _standardized(test_shards, mean, scale)
  del train_shards, test_shards
  z_train = assemble_bank(train.mesh, train.num_rows, train_blocks, train.num_examples)

  n, dim = len(train_ids), train.dim
  batch_size = min(batch_size, n)
  # Zero init: the problem is convex, so this loses nothing and needs no init RNG.
  params = {"w": jnp.zeros((dim, num_classes)), "b": jnp.zeros((num_classes,))}
  hyper = (float(learning_rate), float(weight_decay), epochs * math.ceil(n / batch_size))
  tx, epoch_fn = _make_epoch_fn(optimizer, hyper, train.mesh, n, batch_size)
  opt_state = tx.init(params)
  slots = _slots(z_train, {device: index for device, (_, _, index) in train_blocks.items()})
  ids = jnp.asarray(train_ids, jnp.int32)
  for e in range(epochs):
    params, opt_state, loss = epoch_fn(
      params,
      opt_state,
      jax.random.fold_in(shuffle_key, e),
      z_train.features,
      z_train.labels,
      slots,
      ids,
    )

  chunk = max(batch_size, 4096)
  result = {
    "train_accuracy": _count_correct(params, train_blocks, train_rank, chunk) / n,
    "test_accuracy": _count_correct(params, test_blocks, np.arange(test.num_examples), chunk)
    / test.num_examples,
    "epochs": epochs,
    "train_loss": float(loss),
    "optimizer": optimizer,
    "learning_rate": float(learning_rate),
  }
  if n_val:
    val_rank = _ranks(order[:n_val], total)
    result["val_accuracy"] = _count_correct(params, train_blocks, val_rank, chunk) / n_val
  return result


def _sweep(run, learning_rates, val_fraction) -> dict:
  """run(lr, val_fraction) -> linear_probe's dict; the sweep of `linear_probe_sweep`."""
  grid = [float(lr) for lr in learning_rates]
  if not grid or not all(_is_positive_number(lr) for lr in grid):
    raise ValueError(
      f"learning_rates must be a non-empty list of positive numbers, got {learning_rates!r}"
    )
  if not 0 < val_fraction < 1:
    raise ValueError(f"val_fraction must be in (0, 1) for a sweep, got {val_fraction!r}")
  val_acc = {lr: run(lr, val_fraction)["val_accuracy"] for lr in grid}
  best = max(grid, key=lambda lr: (val_acc[lr], -grid.index(lr)))
  final = run(best, 0.0)
  return dict(final, best_lr=best, val_accuracy_by_lr={str(k): v for k, v in val_acc.items()})


def linear_probe_sweep(
  train_features,
  train_labels,
  test_features,
  test_labels,
  *,
  num_classes,
  learning_rates,
  val_fraction=0.1,
  seed=0,
  **probe_kwargs,
) -> dict:
  """The standard recipe's lr sweep: pick the lr on a held-out val split, report test.

  Every lr in `learning_rates` trains on (1 - val_fraction) of the train rows and is scored
  on the held-out rest (the same split for all lrs, from `seed`); the best val accuracy (ties:
  the first in the grid) is retrained on all train rows and evaluated on test.
  probe_kwargs go to `linear_probe` (epochs, batch_size, weight_decay, optimizer).

  Returns linear_probe's dict of the final run plus "best_lr" and "val_accuracy_by_lr".
  """
  num_classes = _check_positive_int(num_classes, "num_classes")
  train, test = _host_banks(train_features, train_labels, test_features, test_labels, num_classes)
  return linear_probe_sweep_sharded(
    train,
    test,
    num_classes=num_classes,
    learning_rates=learning_rates,
    val_fraction=val_fraction,
    seed=seed,
    **probe_kwargs,
  )


def linear_probe_sweep_sharded(
  train: FeatureBank,
  test: FeatureBank,
  *,
  num_classes,
  learning_rates,
  val_fraction=0.1,
  seed=0,
  **probe_kwargs,
) -> dict:
  """`linear_probe_sweep` on row-sharded banks (each run is `linear_probe_sharded`)."""

  def run(lr, fraction):
    return linear_probe_sharded(
      train,
      test,
      num_classes=num_classes,
      learning_rate=lr,
      seed=seed,
      val_fraction=fraction,
      **probe_kwargs,
    )

  return _sweep(run, learning_rates, val_fraction)


def _ridge_fit(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float):
  """Standardised x [N, D], labels y [N] -> (w [D, C], b [C]) of ridge on one-hot targets.

  Minimises ||x w + b - onehot(y)||^2 / N + l2 ||w||^2 with the bias unpenalised: x has zero
  mean (standardised), so b is the mean target and w solves the centred problem. The primal
  (D x D) or dual (N x N) system is solved, whichever is smaller; float64 throughout.
  """
  x = x.astype(np.float64)
  targets = np.eye(num_classes)[y]
  b = targets.mean(axis=0)
  centred = targets - b
  n, d = x.shape
  if d <= n:
    w = np.linalg.lstsq(x.T @ x + l2 * n * np.eye(d), x.T @ centred, rcond=None)[0]
  else:
    w = x.T @ np.linalg.lstsq(x @ x.T + l2 * n * np.eye(n), centred, rcond=None)[0]
  return {"w": w, "b": b}


def ridge_probe(
  train_features,
  train_labels,
  test_features,
  test_labels,
  *,
  num_classes,
  l2_grid=(1e-3, 1e-1, 10.0),
  val_fraction=0.1,
  seed=0,
) -> dict:
  """Closed-form linear probe: ridge regression on one-hot targets, argmax to predict.

  Args:
    train_features: [N, D]; train_labels: [N]; test_features: [M, D]; test_labels: [M].
    l2_grid: ridge strengths (relative to N, see `_ridge_fit`); with more than one, each is
      fitted on (1 - val_fraction) of the train rows and the best val accuracy (ties: the first)
      is refitted on all train rows. l2 = 0 is ordinary least squares (minimum-norm solution).
    seed: seeds the val split.

  Returns {"train_accuracy", "test_accuracy", "l2", "optimizer": "closed_form"} plus
  "val_accuracy_by_l2" when a grid was swept.
  """
  num_classes = _check_positive_int(num_classes, "num_classes")
  grid = [float(v) for v in l2_grid]
  if not grid or any(not (np.isfinite(v) and v >= 0) for v in grid):
    raise ValueError(f"l2_grid must be a non-empty list of numbers >= 0, got {l2_grid!r}")
  x_train = _as_features(train_features, "train_features")
  x_test = _as_features(test_features, "test_features")
  if x_test.shape[1] != x_train.shape[1]:
    raise ValueError(
      f"test_features dim {x_test.shape[1]} != train_features dim {x_train.shape[1]}"
    )
  y_train = _as_labels(train_labels, "train_labels", x_train.shape[0], num_classes)
  y_test = _as_labels(test_labels, "test_labels", x_test.shape[0], num_classes)
  if x_train.shape[0] == 0 or x_test.shape[0] == 0:
    raise ValueError("need non-empty train and test sets")

  result = {"optimizer": "closed_form"}
  best = grid[0]
  if len(grid) > 1:
    n_val = int(round(val_fraction * x_train.shape[0]))
    if not 1 <= n_val < x_train.shape[0]:
      raise ValueError(
        f"val_fraction={val_fraction} leaves {n_val} val rows of "
        f"{x_train.shape[0]}; both parts must be >= 1 to pick l2"
      )
    order = np.random.default_rng(seed).permutation(x_train.shape[0])
    tr, va = order[n_val:], order[:n_val]
    z_tr, z_va = standardize(x_train[tr], x_train[va])
    val_acc = {}
    for l2 in grid:
      val_acc[l2] = _accuracy(
        _ridge_fit(z_tr, y_train[tr], num_classes, l2), z_va, y_train[va], 4096
      )
    best = max(grid, key=lambda v: (val_acc[v], -grid.index(v)))
    result["val_accuracy_by_l2"] = {str(k): v for k, v in val_acc.items()}
  z_train, z_test = standardize(x_train, x_test)
  params = _ridge_fit(z_train, y_train, num_classes, best)
  result.update(
    train_accuracy=_accuracy(params, z_train, y_train, 4096),
    test_accuracy=_accuracy(params, z_test, y_test, 4096),
    l2=best,
  )
  return result
