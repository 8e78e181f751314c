"""tf.data input pipelines: shuffle -> this process's rows -> views -> batch -> prefetch.

The training stream is a pure function of (seed, step), whatever the number of processes:
global position g = step * B + row fixes the example (a stateless index shuffle of the whole
split per epoch) and the seed of its augmentations. Process p produces rows
[p * b, (p + 1) * b) of every global batch (b = B / process count), so it reads only its own
examples, no two processes read the same example in an epoch, their union is the epoch, and a
run on 1 or N processes, or resumed at step s, sees exactly the same global batches.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from sslax import _lazy
from sslax.data import augment
from sslax.run_info import steps_per_epoch  # noqa: F401 (the stream's epoch, also pipeline's API)
from sslax.data.sources import ArraySource, FileSource, TFDSSource
from sslax.data.sources.records import RecordSource

tf = _lazy.module("tensorflow", "the input pipeline (tf.data)")

Source = ArraySource | FileSource | TFDSSource | RecordSource


def _example_reader(source: Source):
  """index -> (uint8 image [H, W, C], label, index read[, caption tokens]) for random-access
  sources. Record sources read (and, for an unreadable record, replace) on the host, so the
  label and index are those of the record actually read; the others gather them."""
  if isinstance(source, RecordSource):
    return source.read_tf
  labels = tf.constant(source.labels.astype(np.int32))
  tokens = _tokens_of(source)
  if isinstance(source, ArraySource):
    images = tf.constant(source.images)
    image_of = lambda i: tf.gather(images, i)
  else:
    paths = tf.constant(source.paths)
    image_of = lambda i: source.decode(tf.gather(paths, i))

  def read(i):
    out = (image_of(i), tf.gather(labels, i), tf.cast(i, tf.int64))
    # The caption rides with its image's index.
    return out if tokens is None else out + (tf.gather(tokens, i),)

  return read


def _tokens_of(source: Source):
  """The [N, L] int32 caption tokens of an image-text source as a constant, else None."""
  tokens = getattr(source, "tokens", None)
  return None if tokens is None else tf.constant(np.asarray(tokens, np.int32))


def example_index(position, *, num_examples: int, global_batch: int, seed: int):
  """Global stream position(s) -> example index: a fresh permutation of the split each epoch.

  The last num_examples % global_batch examples of each epoch's permutation are skipped.
  """
  per_epoch = steps_per_epoch(num_examples, global_batch) * global_batch
  position = tf.cast(position, tf.int64)
  epoch, offset = position // per_epoch, position % per_epoch
  shuffle_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
  return tf.random.experimental.index_shuffle(offset, shuffle_seed, num_examples - 1)


def local_positions(
  start_step: int, *, global_batch: int, process_index: int, process_count: int
) -> tf.data.Dataset:
  """The global stream positions this process produces, from start_step on (infinite)."""
  local_batch = global_batch // process_count
  counter = tf.data.Dataset.range(start_step * local_batch, 2**62)
  return counter.map(
    lambda c: (c // local_batch) * global_batch + process_index * local_batch + c % local_batch
  )


def train_dataset(
  source: Source,
  views: Sequence[augment.ViewSpec],
  *,
  global_batch: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
) -> tf.data.Dataset:
  """Infinite dataset of this process's batches.

  Yields {"views": ([b,S,S,C] float32, ...), "label": [b] int32, "index": [b] int32 example
  ids} with b = global_batch / process_count; image-text sources (a `tokens` [N, L] array,
  see sslax/data/sources/image_text.py) and captioned record sources (record shards made from
  image-text pairs) add "tokens": [b, L] int32, the caption of each image.
  """
  local_batch = global_batch // process_count
  if isinstance(source, TFDSSource):
    # Streaming sources cannot be indexed: each process reads its own part of the split with
    # a seeded shuffle and skips what was consumed (exact, but slow for late resumes).
    ds = source.as_dataset(
      process_index=process_index, process_count=process_count, shuffle_seed=seed
    ).repeat()
    ds = ds.shuffle(16 * local_batch, seed=seed, reshuffle_each_iteration=True)
    ds = ds.skip(start_step * local_batch)
    positions = local_positions(
      start_step,
      global_batch=global_batch,
      process_index=process_index,
      process_count=process_count,
    )
    ds = tf.data.Dataset.zip(positions, ds).map(
      lambda pos, ex: (pos, ex["image"], ex["label"], tf.constant(-1, tf.int64))
    )
  else:
    n = num_examples(source)
    read = _example_reader(source)

    def lookup(pos):
      i = example_index(pos, num_examples=n, global_batch=global_batch, seed=seed)
      return (pos, *read(i))

    ds = local_positions(
      start_step,
      global_batch=global_batch,
      process_index=process_index,
      process_count=process_count,
    )
    ds = ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def make_example(pos, image, label, index, *caption_tokens):
    view_seed = tf.stack([tf.constant(seed, tf.int64), pos])  # same on any process layout
    example = {
      "views": augment.make_views(image, view_seed, views),
      "label": tf.cast(label, tf.int32),
      "index": tf.cast(index, tf.int32),
    }
    if caption_tokens:
      example["tokens"] = caption_tokens[0]
    return example

  ds = ds.map(make_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  ds = ds.with_options(options)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(
  source: Source,
  *,
  image_size: int,
  global_batch: int,
  process_index: int = 0,
  process_count: int = 1,
  channels: int | None = None,
  crop_fraction: float = 1.0,
  normalize: str = "none",
) -> Iterator[dict]:
  """Deterministic pass over a whole split for feature extraction: this process's rows only.

  Images are the evaluation view `augment.center_view(image, image_size, crop_fraction,
  normalize)` (config.eval.crop_fraction, config.augment.normalize).
  Yields exactly ceil(N / global_batch) local batches {"image": [b,S,S,C] float32, "label": [b]
  int32, "mask": [b] bool, "index": [b] int32 example id, -1 on padding}, b = global_batch /
  process_count, so every process runs the same number of steps; padding rows (mask False) are
  zeros. Each process reads and decodes only its own examples, never the whole split:

  * random-access sources: global batch j holds examples [j*B, (j+1)*B), process p rows
    [p*b, (p+1)*b) of it; process p reads exactly those examples (the ones < N). The example
    id is the index in the source.
  * TFDS (a stream): process p reads its own part of the split (`TFDSSource.process_split`, as
    the training stream does) in the order of `as_dataset(shuffle_seed=0)`; its i-th example
    gets id offset_p + i (offset_p: the sizes of the earlier parts), so the ids run over
    0..N-1 once. One process reads the whole split, in the order it always had.
  `channels`: C of the padding images when this process has no example at all (default: the
  source's, else 3).
  """
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(
      f"eval global batch {global_batch} must be a positive multiple of the {process_count} "
      f"processes it is split over."
    )
  local_batch = global_batch // process_count
  num = num_examples(source)
  steps = -(-num // global_batch)
  if isinstance(source, TFDSSource):
    ds = source.as_dataset(process_index=process_index, process_count=process_count, shuffle_seed=0)
    offset = sum(source.process_num_examples(q, process_count) for q in range(process_index))
    ds = ds.enumerate().map(lambda i, ex: (ex["image"], ex["label"], tf.cast(i + offset, tf.int32)))
  else:
    read = _example_reader(source)
    # Process p's rows of every global batch, in order; the last batch's rows past N are padding.
    ids = np.arange(steps * global_batch).reshape(steps, process_count, local_batch)
    ids = ids[:, process_index].reshape(-1)
    ds = tf.data.Dataset.from_tensor_slices(ids[ids < num].astype(np.int64)).map(
      lambda i: (*read(i)[:2], tf.cast(i, tf.int32)),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
  ds = ds.map(
    lambda im, lab, i: {
      "image": augment.center_view(im, image_size, crop_fraction, normalize),
      "label": tf.cast(lab, tf.int32),
      "mask": True,
      "index": i,
    },
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  spec = ds.element_spec["image"].shape
  depth = spec[-1] if spec[-1] is not None else (channels or getattr(source, "channels", 3))
  empty = {
    "image": np.zeros((0, image_size, image_size, depth), np.float32),
    "label": np.zeros((0,), np.int32),
    "mask": np.zeros((0,), bool),
    "index": np.zeros((0,), np.int32),
  }
  batches = ds.batch(local_batch).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  for _ in range(steps):
    batch = next(batches, empty)
    n = batch["label"].shape[0]
    if n < local_batch:  # pad this process's last batch (and any after its rows ran out)
      fill = {k: np.full((local_batch - n,) + v.shape[1:], 0, v.dtype) for k, v in batch.items()}
      fill["index"][:] = -1
      batch = {k: np.concatenate([v, fill[k]]) for k, v in batch.items()}
    yield batch


def num_examples(source: Source) -> int:
  if isinstance(source, TFDSSource):
    return source.num_examples
  return len(source) if isinstance(source, RecordSource) else len(source.labels)
