"""tf.data input pipelines: per-process shard -> shuffle -> views -> batch -> prefetch.

The training stream is a pure function of (seed, process index, step): example order comes
from a stateless index shuffle per epoch and every augmentation seed from the position in the
stream, so a run resumed at step s sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from sslax.data import augment
from sslax.data.sources import ArraySource, FileSource, TFDSSource

Source = ArraySource | FileSource | TFDSSource


def _example_reader(source: Source):
  """index -> uint8 image [H, W, C] for random-access sources."""
  if isinstance(source, ArraySource):
    images = tf.constant(source.images)
    return lambda i: tf.gather(images, i)
  paths = tf.constant(source.paths)
  return lambda i: source.decode(tf.gather(paths, i))


def local_indices(num_examples: int, process_index: int, process_count: int) -> np.ndarray:
  """The examples this process reads: disjoint across processes, their union is the split."""
  return np.arange(process_index, num_examples, process_count, dtype=np.int64)


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  return max(num_examples // global_batch, 1)


def train_dataset(source: Source, views: Sequence[augment.ViewSpec], *, global_batch: int,
                  seed: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1, with_labels: bool = True) -> tf.data.Dataset:
  """Infinite dataset of local batches {"views": ([b,S,S,C] float32, ...), "label": [b]}.

  b = global_batch / process_count. Each epoch every process visits a fresh permutation of its
  own examples; the last incomplete batch of an epoch is dropped.
  """
  local_batch = global_batch // process_count
  if isinstance(source, TFDSSource):
    # Streaming sources cannot be indexed: use a seeded shuffle and skip what was consumed.
    ds = source.as_dataset(process_index=process_index, process_count=process_count,
                           shuffle_seed=seed).repeat()
    ds = ds.shuffle(16 * local_batch, seed=seed, reshuffle_each_iteration=True)
    ds = ds.skip(start_step * local_batch)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(start_step * local_batch, 2**62), ds)
    images_of = lambda pos, ex: (pos, ex["image"], ex["label"])
    ds = ds.map(images_of)
  else:
    idx = tf.constant(local_indices(len(source.labels), process_index, process_count))
    labels = tf.constant(source.labels.astype(np.int32))
    per_epoch = steps_per_epoch(int(idx.shape[0]) * process_count, global_batch) * local_batch
    read = _example_reader(source)

    def lookup(pos):
      epoch, offset = pos // per_epoch, pos % per_epoch
      shuffle_seed = tf.stack([tf.constant(seed * 7919 + process_index, tf.int64), epoch])
      i = tf.gather(idx, tf.random.experimental.index_shuffle(
          offset, shuffle_seed, tf.cast(tf.shape(idx)[0] - 1, tf.int64)))
      return pos, read(i), tf.gather(labels, i)

    ds = tf.data.Dataset.range(start_step * local_batch, 2**62)
    ds = ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def make_example(pos, image, label):
    # Seed of this example's augmentations: (seed, process) folded with its stream position.
    view_seed = tf.stack([tf.constant(seed * 7919 + process_index, tf.int64), pos])
    example = {"views": augment.make_views(image, view_seed, views)}
    if with_labels:
      example["label"] = tf.cast(label, tf.int32)
    return example

  ds = ds.map(make_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  ds = ds.with_options(options)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(source: Source, *, image_size: int, global_batch: int, process_index: int = 0,
                 process_count: int = 1, channels: int | None = None) -> Iterator[dict]:
  """Deterministic pass over a whole split for feature extraction.

  Yields local batches {"image": [b,S,S,C] float32, "label": [b], "mask": [b] bool}; the split is
  padded to a multiple of global_batch (mask False on padding) so every batch has one shape and
  every process runs the same number of steps. Global batch j holds examples
  [j*B, (j+1)*B) with process p owning rows [p*b, (p+1)*b).
  """
  if isinstance(source, TFDSSource):
    ds = source.as_dataset(process_index=0, process_count=1, shuffle_seed=0)
    ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    num = source.num_examples
  else:
    read = _example_reader(source)
    num = len(source.labels)
    labels = tf.constant(source.labels.astype(np.int32))
    ds = tf.data.Dataset.range(num).map(lambda i: (read(i), tf.gather(labels, i)),
                                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  local_batch = global_batch // process_count
  ds = ds.map(lambda im, lab: {"image": augment.center_view(im, image_size),
                               "label": tf.cast(lab, tf.int32), "mask": True},
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(global_batch).prefetch(tf.data.AUTOTUNE)
  lo, hi = process_index * local_batch, (process_index + 1) * local_batch
  for batch in ds.as_numpy_iterator():
    n = batch["label"].shape[0]
    if n < global_batch:  # pad the last batch
      batch = {k: np.concatenate([v, np.zeros((global_batch - n,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    yield {k: v[lo:hi] for k, v in batch.items()}


def num_examples(source: Source) -> int:
  return source.num_examples if isinstance(source, TFDSSource) else len(source.labels)
