"""What every source format shares: the three source kinds, the errors, the data-dir search path.

A source is one of three kinds:

* `ArraySource`: decoded uint8 images in memory (Fashion-MNIST, MNIST, CIFAR, small TFDS
  datasets, `fake`). Random access by index.
* `FileSource`: a list of encoded PNG/JPEG files with labels (`image_folder`); the files are
  decoded inside the tf.data pipeline by `FileSource.decode`. Random access by index.
* `TFDSSource`: a prepared TFDS dataset read as a stream (data too large for memory, e.g.
  imagenet2012). Each process reads a disjoint part.

Built-in datasets are searched for in an explicit `data_dir`, then `$SSLAX_DATA_DIR`, then
USER_CACHE_DIR, then SYSTEM_DATA_DIRS (`search_roots`). Other modules read these settings as
`base.NAME` at call time, so replacing them here (or on the package, which forwards to here)
takes effect everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # TensorFlow and TFDS are imported lazily: reading idx/CIFAR files needs neither.
  import tensorflow as tf


# Where datasets are searched for, after an explicit `data_dir` and `$SSLAX_DATA_DIR`.
# Module-level so that tests (and unusual installs) can replace them (here, or on the package).
DATA_DIR_ENV = "SSLAX_DATA_DIR"
USER_CACHE_DIR = os.path.join("~", ".cache", "sslax", "datasets")
SYSTEM_DATA_DIRS: tuple[str, ...] = ("/usr/share/datasets",)


class DatasetNotFoundError(FileNotFoundError):
  """The dataset's files are not on this machine (the message says where it looked)."""


class CorruptDatasetError(ValueError):
  """A dataset file exists but is truncated, malformed or inconsistent."""


# --------------------------------------------------------------------------------------------
# Source kinds
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ArraySource:
  """Random-access, decoded in memory.

  images: uint8 [N, H, W, C] (C = 1 grey or 3 RGB); labels: int32 [N].
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  name: str

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass
class FileSource:
  """Random-access list of encoded image files (PNG/JPEG) with labels.

  The files are decoded in the tf.data pipeline with `decode`.
  """

  paths: np.ndarray  # [N] str
  labels: np.ndarray  # [N] int32
  num_classes: int
  class_names: tuple[str, ...]
  name: str
  channels: int = 3  # 3: decode as RGB; 1: grey.

  def __len__(self) -> int:
    return len(self.labels)

  def decode(self, path: tf.Tensor) -> tf.Tensor:
    """Graph-mode: read and decode one file -> uint8 [H, W, channels]."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name

    image = tf.io.decode_image(
      tf.io.read_file(path), channels=self.channels, dtype=tf.uint8, expand_animations=False
    )
    image.set_shape([None, None, self.channels])
    return image


@dataclasses.dataclass
class TFDSSource:
  """A prepared TFDS dataset read as a stream (for data too large for memory).

  `split` may carry TFDS slicing (e.g. "train[:1000]"); `num_examples` is the size of that
  whole split (all processes together).
  """

  name: str
  split: str
  data_dir: str | None
  num_examples: int
  num_classes: int
  class_names: tuple[str, ...]
  image_key: str = "image"
  label_key: str = "label"

  def _builder(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    return tfds.builder(self.name, data_dir=self.data_dir)

  def process_split(self, process_index: int, process_count: int):
    """The TFDS split this process reads: disjoint parts whose union is the split.

    Parts differ in size by at most one example (nothing is dropped).
    """
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if process_count == 1:
      return self.split
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    return tfds.even_splits(self.split, n=process_count, drop_remainder=False)[process_index]

  def process_num_examples(self, process_index: int, process_count: int) -> int:
    """How many examples `as_dataset(process_index=..., process_count=...)` yields."""
    split = self.process_split(process_index, process_count)
    return int(self._builder().info.splits[split].num_examples)

  def as_dataset(
    self, *, process_index: int, process_count: int, shuffle_seed: int, shuffle_files: bool = True
  ) -> tf.data.Dataset:
    """This process's part of the split, once (not repeated): {"image": uint8, "label": int32}.

    The order of the files is shuffled deterministically from `shuffle_seed` (examples inside
    a file keep their order; the pipeline shuffles examples).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    split = self.process_split(process_index, process_count)
    read_config = tfds.ReadConfig(shuffle_seed=int(shuffle_seed))
    ds = self._builder().as_dataset(
      split=split, shuffle_files=shuffle_files, read_config=read_config
    )
    image_key, label_key = self.image_key, self.label_key

    def select(example):
      return {
        "image": tf.cast(example[image_key], tf.uint8),
        "label": tf.cast(example[label_key], tf.int32),
      }

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)


Source = ArraySource | FileSource | TFDSSource


# --------------------------------------------------------------------------------------------
# Helpers shared by the format modules
# --------------------------------------------------------------------------------------------


def take_first(source: Source, n: int | None) -> Source:
  """The first n examples of a random-access source (all of them when n is None)."""
  if n is None:
    return source
  if isinstance(source, ArraySource):
    return dataclasses.replace(source, images=source.images[:n], labels=source.labels[:n])
  if isinstance(source, FileSource):
    return dataclasses.replace(source, paths=source.paths[:n], labels=source.labels[:n])
  raise TypeError(type(source))


def take_indices(source: Source, indices) -> Source:
  """The examples `indices` of a random-access source, in that order: example i of the result
  is example indices[i] of `source` (so the pipeline's `batch["index"]` is a position in
  `indices`). Every per-example array of an in-memory or file source is indexed (images or
  paths, labels, an image-text source's captions and tokens); record shards keep an index map
  (`ShardSource.subset`). A TFDS stream cannot be indexed: ValueError."""
  indices = np.asarray(indices, np.int64)
  if isinstance(source, TFDSSource):
    raise ValueError(
      f"A subset of examples needs a random-access dataset, but {source.name!r} is streamed "
      "from TFDS. Use a dataset that fits in memory, an image_folder, or record shards "
      "(python -m sslax.data.shards)."
    )
  if hasattr(source, "subset"):
    return source.subset(indices)
  if isinstance(source, (ArraySource, FileSource)):
    n = len(source)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
      raise ValueError(f"indices must lie in [0, {n}), got [{indices.min()}, {indices.max()}].")
    per_example = {
      f.name: getattr(source, f.name)[indices]
      for f in dataclasses.fields(source)
      if isinstance(getattr(source, f.name), np.ndarray) and len(getattr(source, f.name)) == n
    }
    return dataclasses.replace(source, **per_example)
  raise TypeError(type(source))


def search_roots(data_dir: str | None) -> list[str]:
  """Root directories searched for built-in datasets, in order."""
  roots = []
  if data_dir:
    roots.append(os.path.expanduser(data_dir))
  env = os.environ.get(DATA_DIR_ENV)
  if env:
    roots.append(os.path.expanduser(env))
  roots.append(os.path.expanduser(USER_CACHE_DIR))
  roots.extend(SYSTEM_DATA_DIRS)
  return roots


def candidate_dirs(data_dir: str | None, subdirs: Sequence[str]) -> list[str]:
  """Each root's dataset sub-directories, then the root itself; no duplicates."""
  dirs = []
  for root in search_roots(data_dir):
    for d in [os.path.join(root, s) for s in subdirs] + [root]:
      if d not in dirs:
        dirs.append(d)
  return dirs


def check_split(dataset: str, split: str, valid: Sequence[str]) -> None:
  """Raises ValueError naming the valid splits when `split` is not one of them."""
  if split not in valid:
    hint = ""
    if split in ("validation", "val", "valid"):
      hint = (
        f" {dataset} has no separate validation split: use 'test', or hold out part of 'train'."
      )
    raise ValueError(
      f"unknown split {split!r} for {dataset}; valid splits: "
      f"{', '.join(repr(s) for s in valid)}.{hint}"
    )
