"""The training stream: a pure function of (seed, step), split disjointly over processes."""

import numpy as np

from sslax.data import pipeline, sources
from sslax.data.augment import ViewSpec

VIEWS = (ViewSpec(size=12, crop_scale=(0.3, 1.0)), ViewSpec(size=8, crop_scale=(0.1, 0.3)))


def _batches(source, *, steps, start_step=0, process_index=0, process_count=1, batch=8, seed=3):
  ds = pipeline.train_dataset(
    source,
    VIEWS,
    global_batch=batch,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
  )
  return list(ds.take(steps).as_numpy_iterator())


def test_shapes_and_multi_size_views():
  src = sources.get_source("fake", "train", image_size=16, num_examples=32)
  (b,) = _batches(src, steps=1)
  assert b["views"][0].shape == (8, 12, 12, 3) and b["views"][1].shape == (8, 8, 8, 3)
  assert b["views"][0].dtype == np.float32 and 0 <= b["views"][0].min() and b["views"][0].max() <= 1
  np.testing.assert_array_equal(b["label"], src.labels[b["index"]])


def test_resume_continues_the_same_stream():
  src = sources.get_source("fake", "train", image_size=16, num_examples=32)
  full = _batches(src, steps=7)
  resumed = _batches(src, steps=2, start_step=5)  # crosses the epoch boundary at step 4
  for a, b in zip(full[5:], resumed):
    np.testing.assert_array_equal(a["index"], b["index"])
    for va, vb in zip(a["views"], b["views"]):
      np.testing.assert_array_equal(va, vb)


def test_epochs_are_permutations_and_differ():
  src = sources.get_source("fake", "train", image_size=16, num_examples=32)
  batches = _batches(src, steps=8)  # two epochs of 4 steps
  epoch1 = np.concatenate([b["index"] for b in batches[:4]])
  epoch2 = np.concatenate([b["index"] for b in batches[4:]])
  assert sorted(epoch1) == list(range(32)) and sorted(epoch2) == list(range(32))
  assert not np.array_equal(epoch1, epoch2)


def test_two_processes_read_disjoint_halves_of_the_same_global_batches():
  src = sources.get_source("fake", "train", image_size=16, num_examples=32)
  single = _batches(src, steps=4)
  p0 = _batches(src, steps=4, process_index=0, process_count=2)
  p1 = _batches(src, steps=4, process_index=1, process_count=2)
  seen0 = np.concatenate([b["index"] for b in p0])
  seen1 = np.concatenate([b["index"] for b in p1])
  assert not set(seen0) & set(seen1)  # disjoint within the epoch
  assert sorted(np.concatenate([seen0, seen1])) == list(range(32))  # union is the split
  for g, a, b in zip(single, p0, p1):  # and together they are the 1-process global batch
    np.testing.assert_array_equal(g["index"], np.concatenate([a["index"], b["index"]]))
    for v, va, vb in zip(g["views"], a["views"], b["views"]):
      np.testing.assert_array_equal(v, np.concatenate([va, vb]))


def test_seed_changes_order_and_augmentation():
  src = sources.get_source("fake", "train", image_size=16, num_examples=32)
  (a,) = _batches(src, steps=1, seed=0)
  (b,) = _batches(src, steps=1, seed=1)
  assert not np.array_equal(a["index"], b["index"])
