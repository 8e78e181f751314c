"""Linear probe on frozen, precomputed features.

Features are standardised with the train split's per-dimension mean/std (what MAE gets from a
BatchNorm without affine parameters in front of the linear head), then a softmax-regression
head is trained with AdamW on shuffled minibatches. One epoch is a single jitted ``lax.scan``
over minibatches, so the Python loop only runs once per epoch.
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
    correct = sum(int(np.sum(np.argmax(x[i:i + chunk] @ w + b, axis=1) == y[i:i + chunk]))
                  for i in range(0, x.shape[0], chunk))
    return correct / x.shape[0]


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


def linear_probe(train_features, train_labels, test_features, test_labels, *, num_classes,
                 epochs=100, batch_size=1024, learning_rate=1e-3, weight_decay=1e-4, seed=0,
                 val_fraction=0.0) -> dict:
    """Trains a linear softmax classifier on frozen features and reports top-1 accuracy.

    Args:
      train_features: [N, D] float; train_labels: [N] int in [0, num_classes).
      test_features: [M, D] float; test_labels: [M] int in [0, num_classes).
      num_classes: number of classes C.
      epochs: passes over the train split (each one a fresh permutation).
      batch_size: minibatch size, clipped to the train split size.
      learning_rate, weight_decay: AdamW hyper-parameters (decay on the weights, not the bias).
      seed: seeds the val split and per-epoch shuffles; same seed -> same result.
      val_fraction: in [0, 1); this fraction of the train rows is held out (randomly) and
        reported as "val_accuracy". Standardisation statistics use the remaining rows only.

    Returns:
      {"train_accuracy", "test_accuracy", "epochs", "train_loss" (mean loss of the last epoch)}
      plus "val_accuracy" when val_fraction > 0. Accuracies are floats in [0, 1].
    """
    num_classes = _check_positive_int(num_classes, "num_classes")
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
        raise ValueError(f"test_features dim {x_test.shape[1]} != train_features dim {x_train.shape[1]}")
    y_train = _as_labels(train_labels, "train_labels", x_train.shape[0], num_classes)
    y_test = _as_labels(test_labels, "test_labels", x_test.shape[0], num_classes)
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise ValueError(f"need non-empty train and test sets, got {x_train.shape[0]} train "
                         f"and {x_test.shape[0]} test rows")

    split_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
    n_val = int(round(val_fraction * x_train.shape[0]))
    if val_fraction > 0 and not 1 <= n_val < x_train.shape[0]:
        raise ValueError(f"val_fraction={val_fraction} leaves {n_val} val and "
                         f"{x_train.shape[0] - n_val} train rows; both must be >= 1")
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
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay,
                            mask={"w": True, "b": False})
    opt_state = optimizer.init(params)
    epoch_fn = _make_epoch_fn(optimizer, n, batch_size)
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)  # Transfer once, not per epoch.
    for e in range(epochs):
        params, opt_state, loss = epoch_fn(params, opt_state, jax.random.fold_in(shuffle_key, e),
                                           x_dev, y_dev)

    chunk = max(batch_size, 4096)
    result = {"train_accuracy": _accuracy(params, x_train, y_train, chunk),
              "test_accuracy": _accuracy(params, x_test, y_test, chunk),
              "epochs": epochs, "train_loss": float(loss)}
    if n_val:
        result["val_accuracy"] = _accuracy(params, x_val, y_val, chunk)
    return result
