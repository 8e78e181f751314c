"""Linear probe: standardisation, learns separable data, does not generalise random labels."""

import numpy as np
import pytest

from sslax.evaluation.linear import linear_probe, standardize


def _blobs(n_per_class, rng, num_classes=3, dim=16):
  """Gaussian blobs, then a large common offset and per-dimension scales from 0.01 to 100.
  Without standardisation the probe below scores ~0.35 on these (measured), not >= 0.98."""
  centers = rng.normal(scale=3.0, size=(num_classes, dim))
  y = np.repeat(np.arange(num_classes), n_per_class)
  x = centers[y] + rng.normal(size=(len(y), dim))
  scale = np.logspace(-2, 2, dim)
  return (x * scale + 1e4).astype(np.float32), y


@pytest.fixture(scope="module")
def blobs():
  rng = np.random.default_rng(0)
  x, y = _blobs(200, rng)
  perm = rng.permutation(len(y))
  x, y = x[perm], y[perm]
  return x[:300], y[:300], x[300:], y[300:]


def test_standardize_uses_train_statistics_only():
  rng = np.random.default_rng(0)
  train = rng.normal(loc=100.0, scale=7.0, size=(500, 4)).astype(np.float32)
  train[:, 3] = 5.0  # A constant dimension must map to 0, not NaN.
  z_train, z_test = standardize(train, train + 7.0)
  np.testing.assert_allclose(z_train[:, :3].mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(z_train[:, :3].std(0), 1.0, atol=1e-3)
  np.testing.assert_array_equal(z_train[:, 3], 0.0)
  # Shifted by +7 (about one train std), measured in train units: mean ~ 7 / std.
  np.testing.assert_allclose(z_test[:, :3].mean(0), 7.0 / train[:, :3].std(0), rtol=1e-3)
  assert z_test.dtype == np.float32
  assert len(standardize(train)) == 1
  with pytest.raises(ValueError, match="dim 3"):
    standardize(train, np.zeros((2, 3)))


def test_separable_blobs_are_learned(blobs):
  x_tr, y_tr, x_te, y_te = blobs
  res = linear_probe(
    x_tr, y_tr, x_te, y_te, num_classes=3, epochs=10, batch_size=64, learning_rate=1e-2
  )
  assert res["test_accuracy"] >= 0.98
  assert res["train_accuracy"] >= 0.98
  assert res["epochs"] == 10
  assert "val_accuracy" not in res


def test_val_split_is_reported(blobs):
  x_tr, y_tr, x_te, y_te = blobs
  res = linear_probe(
    x_tr,
    y_tr,
    x_te,
    y_te,
    num_classes=3,
    epochs=10,
    batch_size=64,
    learning_rate=1e-2,
    val_fraction=0.2,
  )
  assert res["val_accuracy"] >= 0.95 and res["test_accuracy"] >= 0.95


def test_random_labels_do_not_generalise():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2200, 128)).astype(np.float32)
  y = rng.integers(0, 2, size=2200)
  res = linear_probe(
    x[:200], y[:200], x[200:], y[200:], num_classes=2, epochs=100, batch_size=50, learning_rate=1e-2
  )
  # 128 dims for 200 points: the probe memorises the train set (capacity ~2 x dim) ...
  assert res["train_accuracy"] > 0.95
  # ... but 2000 test points at chance have accuracy 0.5 +- 0.011 (one std).
  assert res["test_accuracy"] < 0.6


def test_deterministic_given_seed(blobs):
  x_tr, y_tr, x_te, y_te = blobs
  kw = dict(num_classes=3, epochs=3, batch_size=32, val_fraction=0.1)
  a = linear_probe(x_tr, y_tr, x_te, y_te, seed=3, **kw)
  b = linear_probe(x_tr, y_tr, x_te, y_te, seed=3, **kw)
  c = linear_probe(x_tr, y_tr, x_te, y_te, seed=4, **kw)
  assert a == b
  assert a["train_loss"] != c["train_loss"]  # The seed is actually used.


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(test_features=np.zeros((4, 5), np.float32)), "dim 5 != train_features dim 16"),
    (dict(train_labels=np.full(300, 3)), "label 3"),
    (dict(test_labels=np.zeros(7, int)), "test_labels"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=-1), "batch_size"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(val_fraction=0.001), "val_fraction"),  # Rounds to 0 held-out rows.
  ],
)
def test_bad_inputs_raise(blobs, kwargs, match):
  x_tr, y_tr, x_te, y_te = blobs
  args = dict(
    train_features=x_tr,
    train_labels=y_tr,
    test_features=x_te,
    test_labels=y_te,
    num_classes=3,
    epochs=1,
  )
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    linear_probe(
      args.pop("train_features"),
      args.pop("train_labels"),
      args.pop("test_features"),
      args.pop("test_labels"),
      **args,
    )
