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

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sslax.evaluation.knn import _as_features, _as_labels, _check_positive_int, _is_positive_number


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
  w, b = np.asarray(params["w"]), np.asarray(params["b"])
  correct = sum(
    int(np.sum(np.argmax(x[i : i + chunk] @ w + b, axis=1) == y[i : i + chunk]))
    for i in range(0, x.shape[0], chunk)
  )
  return correct / x.shape[0]


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


def _make_epoch_fn(optimizer: optax.GradientTransformation, n: int, batch_size: int):
  """Builds a jitted (params, opt_state, key, x [n, D], y [n]) -> (params, opt_state, loss)."""
  num_batches = math.ceil(n / batch_size)
  pad = num_batches * batch_size - n

  def loss_fn(params, x, y, mask):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(ce * mask) / jnp.sum(mask)

  def step(carry, batch):
    params, opt_state, x, y = carry
    idx, mask = batch
    loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx], mask)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, x, y), loss

  @jax.jit
  def epoch(params, opt_state, key, x, y):
    # Pad the permutation to whole batches and mask the padding out of the loss, so every
    # example is seen exactly once per epoch (no dropped ragged tail) with a static shape.
    perm = jnp.concatenate([jax.random.permutation(key, n), jnp.zeros(pad, jnp.int32)])
    mask = (jnp.arange(n + pad) < n).astype(jnp.float32)
    batches = (perm.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size))
    (params, opt_state, _, _), losses = jax.lax.scan(step, (params, opt_state, x, y), batches)
    return params, opt_state, jnp.mean(losses)

  return epoch


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
    floats in [0, 1].
  """
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

  split_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
  n_val = int(round(val_fraction * x_train.shape[0]))
  if val_fraction > 0 and not 1 <= n_val < x_train.shape[0]:
    raise ValueError(
      f"val_fraction={val_fraction} leaves {n_val} val and "
      f"{x_train.shape[0] - n_val} train rows; both must be >= 1"
    )
  if n_val:
    order = np.asarray(jax.random.permutation(split_key, x_train.shape[0]))
    x_val, y_val = x_train[order[:n_val]], y_train[order[:n_val]]
    x_train, y_train = x_train[order[n_val:]], y_train[order[n_val:]]
    x_train, x_val, x_test = standardize(x_train, x_val, x_test)
  else:
    x_train, x_test = standardize(x_train, x_test)

  n, dim = x_train.shape
  batch_size = min(batch_size, n)
  # Zero init: the problem is convex, so this loses nothing and needs no init RNG.
  params = {"w": jnp.zeros((dim, num_classes)), "b": jnp.zeros((num_classes,))}
  tx = _make_optimizer(
    optimizer, learning_rate, weight_decay, total_steps=epochs * math.ceil(n / batch_size)
  )
  opt_state = tx.init(params)
  epoch_fn = _make_epoch_fn(tx, n, batch_size)
  x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)  # Transfer once, not per epoch.
  for e in range(epochs):
    params, opt_state, loss = epoch_fn(
      params, opt_state, jax.random.fold_in(shuffle_key, e), x_dev, y_dev
    )

  chunk = max(batch_size, 4096)
  result = {
    "train_accuracy": _accuracy(params, x_train, y_train, chunk),
    "test_accuracy": _accuracy(params, x_test, y_test, chunk),
    "epochs": epochs,
    "train_loss": float(loss),
    "optimizer": optimizer,
    "learning_rate": float(learning_rate),
  }
  if n_val:
    result["val_accuracy"] = _accuracy(params, x_val, y_val, chunk)
  return result


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
  grid = [float(lr) for lr in learning_rates]
  if not grid or not all(_is_positive_number(lr) for lr in grid):
    raise ValueError(
      f"learning_rates must be a non-empty list of positive numbers, got {learning_rates!r}"
    )
  if not 0 < val_fraction < 1:
    raise ValueError(f"val_fraction must be in (0, 1) for a sweep, got {val_fraction!r}")
  val_acc = {}
  for lr in grid:
    run = linear_probe(
      train_features,
      train_labels,
      test_features,
      test_labels,
      num_classes=num_classes,
      learning_rate=lr,
      seed=seed,
      val_fraction=val_fraction,
      **probe_kwargs,
    )
    val_acc[lr] = run["val_accuracy"]
  best = max(grid, key=lambda lr: (val_acc[lr], -grid.index(lr)))
  final = linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes=num_classes,
    learning_rate=best,
    seed=seed,
    **probe_kwargs,
  )
  return dict(final, best_lr=best, val_accuracy_by_lr={str(k): v for k, v in val_acc.items()})


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
