"""Evaluation protocols on tiny data whose answer is known: kNN, linear probes (SGD/LARS sweep and
closed form), class-balanced low-shot subsets, fine-tuning, retrieval mAP / precision@k."""

import math

import jax
import ml_collections
import numpy as np
import pytest

from sslax import models, sharding
from sslax.data.sources import ArraySource
from sslax.evaluation import finetune as finetune_lib
from sslax.evaluation.knn import knn_accuracy
from sslax.evaluation.linear import linear_probe_sweep, ridge_probe
from sslax.evaluation.retrieval import nearest_neighbours, retrieval_metrics


def _clusters(n_per_class, num_classes=4, dim=8, spread=0.05, seed=0):
  """Well separated clusters: a random unit centre per class plus small noise."""
  rng = np.random.default_rng(seed)
  centres = np.eye(dim)[:num_classes] * 3.0
  y = np.repeat(np.arange(num_classes), n_per_class)
  x = centres[y] + rng.normal(scale=spread, size=(len(y), dim))
  perm = rng.permutation(len(y))
  return x[perm].astype(np.float32), y[perm].astype(np.int32)


def _blobs(seed=0):
  """Linearly separable Gaussian blobs with a large offset and very different scales per dim."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(scale=3.0, size=(3, 16))
  y = np.repeat(np.arange(3), 200)
  x = (centres[y] + rng.normal(size=(600, 16))) * np.logspace(-2, 2, 16) + 1e4
  perm = rng.permutation(600)
  x, y = x[perm].astype(np.float32), y[perm].astype(np.int32)
  return x[:400], y[:400], x[400:], y[400:]


# ---------------------------------------------------------------------------------------- kNN


def test_knn_on_separable_features_is_perfect():
  x_train, y_train = _clusters(30, seed=0)
  x_test, y_test = _clusters(10, seed=1)
  acc = knn_accuracy(
    x_train, y_train, x_test, y_test, num_classes=4, ks=(1, 5, 20), temperature=0.07
  )
  assert acc == {1: 1.0, 5: 1.0, 20: 1.0}


# ------------------------------------------------------------------------------- linear probe


@pytest.mark.parametrize("optimizer,grid", [("sgd", (0.01, 0.1, 1.0)), ("lars", (0.1, 1.0, 10.0))])
def test_linear_probe_sweep_converges_on_separable_features(optimizer, grid):
  x_tr, y_tr, x_te, y_te = _blobs()
  res = linear_probe_sweep(
    x_tr,
    y_tr,
    x_te,
    y_te,
    num_classes=3,
    learning_rates=grid,
    val_fraction=0.2,
    epochs=10,
    batch_size=64,
    optimizer=optimizer,
  )
  assert res["test_accuracy"] >= 0.98 and res["train_accuracy"] >= 0.98, res
  assert res["optimizer"] == optimizer and res["train_loss"] < 0.5, res
  # The chosen lr is one with the best held-out accuracy, and is the lr of the final run.
  val = {float(k): v for k, v in res["val_accuracy_by_lr"].items()}
  assert set(val) == set(grid)
  assert val[res["best_lr"]] == max(val.values()) and res["learning_rate"] == res["best_lr"]


def test_linear_probe_sweep_rejects_bad_grid():
  x_tr, y_tr, x_te, y_te = _blobs()
  with pytest.raises(ValueError, match="learning_rates"):
    linear_probe_sweep(x_tr, y_tr, x_te, y_te, num_classes=3, learning_rates=())
  with pytest.raises(ValueError, match="optimizer"):
    linear_probe_sweep(
      x_tr, y_tr, x_te, y_te, num_classes=3, learning_rates=(0.1,), optimizer="adagrad", epochs=1
    )


def test_closed_form_probe_separates_blobs_and_picks_l2_on_val():
  x_tr, y_tr, x_te, y_te = _blobs()
  res = ridge_probe(x_tr, y_tr, x_te, y_te, num_classes=3, l2_grid=(1e-4, 1e-2, 1.0))
  assert res["test_accuracy"] >= 0.98 and res["train_accuracy"] >= 0.98, res
  assert res["l2"] in (1e-4, 1e-2, 1.0) and len(res["val_accuracy_by_l2"]) == 3


def test_closed_form_probe_is_least_squares_on_one_hot_targets():
  """With l2 = 0 the head is the least-squares fit of [x 1] to one-hot targets (hand check:
  any exact solution of a consistent system predicts its training labels)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 3)).astype(np.float32)
  y = np.arange(12) % 3
  res = ridge_probe(x, y, x, y, num_classes=3, l2_grid=(0.0,))
  # Reference: predictions of the plain least-squares fit on standardised x with a bias column.
  z = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-6)
  design = np.concatenate([z, np.ones((12, 1))], axis=1)
  coef = np.linalg.lstsq(design, np.eye(3)[y], rcond=None)[0]
  expected = float(np.mean(np.argmax(design @ coef, 1) == y))
  assert res["train_accuracy"] == pytest.approx(expected) and res["l2"] == 0.0
  # Three points in 3-D (with a bias) are interpolated exactly.
  small = ridge_probe(x[:3], y[:3], x[:3], y[:3], num_classes=3, l2_grid=(0.0,))
  assert small["train_accuracy"] == 1.0


# --------------------------------------------------------------------------------- low-shot


def test_lowshot_subset_is_class_balanced_and_reproducible():
  counts = np.array([100, 37, 5, 1, 57])
  labels = np.random.default_rng(0).permutation(np.repeat(np.arange(5), counts))
  for fraction in (0.01, 0.1, 0.5, 1.0):
    ids = finetune_lib.class_balanced_subset(labels, fraction, num_classes=5, seed=3)
    again = finetune_lib.class_balanced_subset(labels, fraction, num_classes=5, seed=3)
    np.testing.assert_array_equal(ids, again)  # same seed -> same ids
    assert len(np.unique(ids)) == len(ids)  # no duplicates
    per_class = np.bincount(labels[ids], minlength=5)
    for c, n_c in enumerate(counts):  # floor or ceil of the fraction
      assert math.floor(fraction * n_c) <= per_class[c] <= max(math.ceil(fraction * n_c), 1), (
        fraction,
        c,
        per_class,
      )
      assert per_class[c] >= 1  # every class is represented
  ids = finetune_lib.class_balanced_subset(labels, 0.1, num_classes=5, seed=3)
  assert np.bincount(labels[ids], minlength=5).tolist() == [10, 4, 1, 1, 6]  # 0.7 rounds up
  other = finetune_lib.class_balanced_subset(labels, 0.1, num_classes=5, seed=4)
  assert not np.array_equal(ids, other)  # another seed, other ids
  np.testing.assert_array_equal(
    finetune_lib.class_balanced_subset(labels, 1.0, num_classes=5, seed=0), np.arange(200)
  )
  with pytest.raises(ValueError, match="fraction"):
    finetune_lib.class_balanced_subset(labels, 0.0, num_classes=5, seed=0)


def _colour_source(n, seed):
  """Four classes told apart by colour (red, green, blue, grey) under pixel noise."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 4
  base = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230], [128, 128, 128]], np.float32)[y]
  images = base[:, None, None, :] + rng.normal(0, 20, size=(n, 16, 16, 3))
  return ArraySource(
    images=np.clip(images, 0, 255).astype(np.uint8),
    labels=y.astype(np.int32),
    num_classes=4,
    class_names=("red", "green", "blue", "grey"),
    name="colours",
  )


def test_finetune_on_a_quarter_of_the_labels_learns_colours(devices):
  backbone = models.make_backbone(
    ml_collections.ConfigDict(dict(name="resnet", depth=10, width=0.125, stem="small"))
  )
  variables = backbone.init(jax.random.key(0), np.zeros((2, 16, 16, 3), np.float32), train=False)
  train_src = _colour_source(64, seed=0)
  ids = finetune_lib.class_balanced_subset(train_src.labels, 0.25, num_classes=4, seed=0)
  res = finetune_lib.finetune(
    backbone,
    variables,
    finetune_lib.subset_source(train_src, ids),
    _colour_source(64, seed=1),
    num_classes=4,
    image_size=16,
    mesh=sharding.make_mesh({"data": -1}),
    epochs=40,
    batch_size=16,
    eval_batch_size=64,
    learning_rate=0.1,
    crop_scale=(0.5, 1.0),
  )
  assert res["train_examples"] == 16 and res["steps"] == 40
  assert res["top1"] == 1.0, res


# -------------------------------------------------------------------------------- retrieval


def test_retrieval_on_perfect_clusters_has_map_one():
  gallery, g_labels = _clusters(20, seed=0)
  queries, q_labels = _clusters(5, seed=1)
  res = retrieval_metrics(queries, q_labels, gallery, g_labels, ks=(1, 5, 20), batch_size=7)
  assert res["mAP"] == pytest.approx(1.0)
  assert res["precision@1"] == res["precision@5"] == res["precision@20"] == pytest.approx(1.0)
  assert res["num_queries"] == 20 and res["queries_without_relevant"] == 0


def test_retrieval_matches_hand_computation():
  gallery = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)
  g_labels = np.array([0, 1, 0, 1])
  queries = np.array([[1, 0.1], [0, 1]], np.float32)
  q_labels = np.array([1, 0])
  # Query 0 ranks g0, g2, g1, g3: relevant (label 1) at ranks 3 and 4 -> AP = (1/3 + 2/4) / 2.
  # Query 1 ranks g1 (cos 1), g2 (0.707), then g0 and g3 (cos 0, tie -> lower index first):
  # relevant (label 0) at ranks 2 and 3 -> AP = (1/2 + 2/3) / 2.
  ap0, ap1 = (1 / 3 + 2 / 4) / 2, (1 / 2 + 2 / 3) / 2
  res = retrieval_metrics(queries, q_labels, gallery, g_labels, ks=(1, 2, 3))
  assert res["mAP"] == pytest.approx((ap0 + ap1) / 2, abs=1e-6)
  assert res["precision@1"] == pytest.approx(0.0)
  assert res["precision@2"] == pytest.approx((0 + 1 / 2) / 2)
  assert res["precision@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)
  np.testing.assert_array_equal(nearest_neighbours(queries, gallery, 2), [[0, 2], [1, 2]])


def test_retrieval_matches_numpy_reference_on_random_features():
  rng = np.random.default_rng(0)
  gallery, queries = rng.normal(size=(50, 6)), rng.normal(size=(13, 6))
  g_labels, q_labels = rng.integers(0, 4, 50), rng.integers(0, 4, 13)
  unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
  aps = []
  for q, lab in zip(unit(queries), q_labels):
    rel = g_labels[np.argsort(-(unit(gallery) @ q), kind="stable")] == lab
    hits = np.cumsum(rel)
    aps.append(np.sum(rel * hits / np.arange(1, 51)) / rel.sum())
  res = retrieval_metrics(
    queries.astype(np.float32),
    q_labels,
    gallery.astype(np.float32),
    g_labels,
    ks=(5,),
    batch_size=4,
  )
  assert res["mAP"] == pytest.approx(np.mean(aps), abs=1e-5)
