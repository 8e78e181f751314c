"""Weighted kNN evaluation: exact vote arithmetic, agreement with a NumPy reference, chunking;
the row-sharded kNN (1 and 8 devices) gives the single-device kNN's predictions."""

import math

import numpy as np
import pytest

from sslax import sharding
from sslax.evaluation import knn as knn_lib
from sslax.evaluation.knn import (
  knn_accuracy,
  knn_accuracy_sharded,
  knn_predict,
  knn_predict_sharded,
)
from sslax.features import bank_from_arrays


def _reference_knn(train, train_labels, test, *, num_classes, k, temperature):
  """Independent brute-force NumPy (float64) weighted kNN."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  sims = unit(test.astype(np.float64)) @ unit(train.astype(np.float64)).T
  order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
  preds = []
  for row, idx in zip(sims, order):
    votes = np.zeros(num_classes)
    np.add.at(votes, train_labels[idx], np.exp(row[idx] / temperature))
    preds.append(np.argmax(votes))
  return np.array(preds)


# Six 2-D train points. Around query q0 = +x: one class-1 point exactly on it (cos = 1) and
# two class-0 points at +-0.3 rad (cos 0.3 = 0.955); the rest point elsewhere. Norms vary
# on purpose, to check that only directions matter.
_A = 0.3
_TRAIN = np.array(
  [[1, 0], [math.cos(_A), math.sin(_A)], [math.cos(_A), -math.sin(_A)], [0, 2], [-3, 0], [0, -1]],
  np.float32,
)
_LABELS = np.array([1, 0, 0, 2, 1, 2])
_QUERIES = np.array([[5, 0], [0.1, 1]], np.float32)


def test_hand_example_weighting_beats_majority():
  # q0, k=3: neighbours are class 1 (sim 1) and two class-0 (sim cos 0.3). Votes per class:
  #   T=0.01: class 1 -> e^(1/T), class 0 -> 2 e^(cos0.3/T): the close point wins.
  #   T=1:    class 1 -> e^1 = 2.72, class 0 -> 2 e^0.955 = 5.20: the majority wins.
  assert math.exp(1 / 0.01) > 2 * math.exp(math.cos(_A) / 0.01)
  assert math.exp(1 / 1.0) < 2 * math.exp(math.cos(_A) / 1.0)
  # q1 ~ +y: its 3 neighbours (0,2), (cos.3, sin.3), (1,0) all have different classes, so the
  # most similar one, class 2, wins at any temperature.
  kw = dict(num_classes=3, k=3)
  np.testing.assert_array_equal(
    knn_predict(_TRAIN, _LABELS, _QUERIES, temperature=0.01, **kw), [1, 2]
  )
  np.testing.assert_array_equal(
    knn_predict(_TRAIN, _LABELS, _QUERIES, temperature=1.0, **kw), [0, 2]
  )
  np.testing.assert_array_equal(knn_predict(_TRAIN, _LABELS, _QUERIES, num_classes=3, k=1), [1, 2])
  for t in (0.01, 1.0):
    np.testing.assert_array_equal(
      knn_predict(_TRAIN, _LABELS, _QUERIES, temperature=t, **kw),
      _reference_knn(_TRAIN, _LABELS, _QUERIES, temperature=t, **kw),
    )


def test_k_larger_than_train_set_uses_all_points():
  all6 = knn_predict(_TRAIN, _LABELS, _QUERIES, num_classes=3, k=6, temperature=1.0)
  np.testing.assert_array_equal(
    knn_predict(_TRAIN, _LABELS, _QUERIES, num_classes=3, k=1000, temperature=1.0), all6
  )
  acc = knn_accuracy(_TRAIN, _LABELS, _QUERIES, np.array([1, 2]), num_classes=3, ks=(1, 1000))
  assert set(acc) == {1, 1000}  # Keyed by the requested k, not the clipped one.


def test_clustered_features_are_classified_perfectly():
  rng = np.random.default_rng(0)
  centers = 10.0 * np.eye(8)[:4]

  def sample(n):
    y = np.repeat(np.arange(4), n)
    return (centers[y] + rng.normal(scale=0.5, size=(len(y), 8))).astype(np.float32), y

  x_tr, y_tr = sample(40)
  x_te, y_te = sample(10)
  acc = knn_accuracy(x_tr, y_tr, x_te, y_te, num_classes=4, ks=(1, 5, 20, 200))
  assert acc == {1: 1.0, 5: 1.0, 20: 1.0, 200: 1.0}
  # Shuffled labels break the cluster structure: accuracy must drop (the test can fail).
  wrong = knn_accuracy(x_tr, rng.permutation(y_tr), x_te, y_te, num_classes=4, ks=(20,))
  assert wrong[20] < 0.7


@pytest.fixture(scope="module")
def random_data():
  rng = np.random.default_rng(1)
  x_tr = rng.normal(size=(200, 16)).astype(np.float32)
  y_tr = rng.integers(0, 5, size=200)
  x_te = rng.normal(size=(50, 16)).astype(np.float32)
  y_te = rng.integers(0, 5, size=50)
  return x_tr, y_tr, x_te, y_te


@pytest.mark.parametrize("k", [1, 5])
def test_matches_numpy_brute_force(random_data, k):
  x_tr, y_tr, x_te, _ = random_data
  got = knn_predict(x_tr, y_tr, x_te, num_classes=5, k=k, temperature=0.07)
  want = _reference_knn(x_tr, y_tr, x_te, num_classes=5, k=k, temperature=0.07)
  assert got.dtype == np.int32 and got.shape == (50,)
  np.testing.assert_array_equal(got, want)


def test_accuracy_reuses_topk_consistently_and_chunking_is_invisible(random_data):
  x_tr, y_tr, x_te, y_te = random_data
  big = knn_predict(x_tr, y_tr, x_te, num_classes=5, k=5, batch_size=1024)
  small = knn_predict(x_tr, y_tr, x_te, num_classes=5, k=5, batch_size=7)  # 8 chunks, padded.
  np.testing.assert_array_equal(big, small)
  acc = knn_accuracy(x_tr, y_tr, x_te, y_te, num_classes=5, ks=(1, 5), batch_size=7)
  for k in (1, 5):
    want = _reference_knn(x_tr, y_tr, x_te, num_classes=5, k=k, temperature=0.07)
    assert acc[k] == pytest.approx(np.mean(want == y_te))


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(train_features=np.zeros((6, 3))), "dim 2 != train_features dim 3"),
    (dict(train_labels=np.array([1, 0, 0, 2, 1, 5])), "label 5"),
    (dict(train_labels=np.array([1, 0, 0, 2, 1, -1])), "label -1"),
    (dict(train_labels=_LABELS[:5]), r"shape \(6,\)"),
    (dict(train_labels=_LABELS.astype(float)), "integers"),
    (dict(test_features=np.zeros(2)), "2-D"),
    (dict(test_features=np.array([[np.nan, 0.0]])), "NaN"),
    (dict(k=0), "got 0"),
    (dict(temperature=0.0), "temperature"),
    (dict(batch_size=0), "batch_size"),
    (dict(num_classes=0), "num_classes"),
  ],
)
def test_bad_inputs_raise(kwargs, match):
  args = dict(
    train_features=_TRAIN, train_labels=_LABELS, test_features=_QUERIES, num_classes=3, k=3
  )
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    knn_predict(
      args.pop("train_features"), args.pop("train_labels"), args.pop("test_features"), **args
    )


def test_bad_accuracy_inputs_raise():
  with pytest.raises(ValueError, match="test_labels"):
    knn_accuracy(_TRAIN, _LABELS, _QUERIES, np.array([0, 1, 2]), num_classes=3)
  with pytest.raises(ValueError, match="label 3"):
    knn_accuracy(_TRAIN, _LABELS, _QUERIES, np.array([0, 3]), num_classes=3)
  with pytest.raises(ValueError, match="ks"):
    knn_accuracy(_TRAIN, _LABELS, _QUERIES, np.array([0, 1]), num_classes=3, ks=())


# ------------------------------------------------------------------ row-sharded banks


@pytest.mark.parametrize("route", ["all_to_all", "gathered"])
@pytest.mark.parametrize("num_devices, batch_size", [(1, 1024), (8, 16)])
def test_sharded_knn_equals_single_device_knn(
  random_data, devices, num_devices, batch_size, route, monkeypatch, request
):
  """Banks sharded over 1 or 8 devices (200 train / 50 test rows: the last devices' blocks end
  in padding), queries in one or several chunks: the single-device kNN's predictions, for k
  below, at and above N; by either route of the candidates (accelerators: all_to_all; CPU: an
  all_gather)."""
  routes = {"all_to_all": knn_lib._all_to_all_rows, "gathered": knn_lib._gathered_rows}
  monkeypatch.setattr(knn_lib, "_candidate_route", lambda mesh: routes[route])
  knn_lib._sharded_knn_fns.cache_clear()  # built with this route, and forgotten after
  request.addfinalizer(knn_lib._sharded_knn_fns.cache_clear)
  x_tr, y_tr, x_te, y_te = random_data
  mesh = sharding.make_mesh({"data": -1}, devices=devices[:num_devices])
  train, test = bank_from_arrays(x_tr, y_tr, mesh), bank_from_arrays(x_te, y_te, mesh)
  assert len(train.features.addressable_shards) == num_devices
  ks = (1, 5, 20, 300)
  preds, labels = knn_predict_sharded(train, test, num_classes=5, ks=ks, batch_size=batch_size)
  np.testing.assert_array_equal(labels, y_te)
  for k, got in zip(ks, preds):
    np.testing.assert_array_equal(got, knn_predict(x_tr, y_tr, x_te, num_classes=5, k=k))
  acc = knn_accuracy_sharded(train, test, num_classes=5, ks=(1, 5), batch_size=batch_size)
  assert acc == knn_accuracy(x_tr, y_tr, x_te, y_te, num_classes=5, ks=(1, 5))


def test_sharded_knn_ignores_padding_rows(devices):
  """3 train points over 8 devices (5 blocks hold only padding, whose features are zeros and
  labels 0): k=3 votes with exactly the 3 real points."""
  mesh = sharding.make_mesh({"data": -1}, devices=devices)
  train = bank_from_arrays(_TRAIN[3:], _LABELS[3:], mesh)  # (0, 2) -> 2, (-3, 0) -> 1, (0, -1) -> 2
  test = bank_from_arrays(_QUERIES, np.array([1, 2]), mesh)
  preds, _ = knn_predict_sharded(train, test, num_classes=3, ks=(3, 50), temperature=1.0)
  want = knn_predict(_TRAIN[3:], _LABELS[3:], _QUERIES, num_classes=3, k=3, temperature=1.0)
  np.testing.assert_array_equal(preds[0], want)
  np.testing.assert_array_equal(preds[1], want)
  with pytest.raises(ValueError, match="label 7"):
    knn_predict_sharded(bank_from_arrays(_TRAIN, np.full(6, 7), mesh), test, num_classes=3)
