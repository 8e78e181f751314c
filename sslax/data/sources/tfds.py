"""TFDS datasets: any prepared TFDS dataset (the fallback of every unregistered name), and the
prepared TFDS copy of a built-in dataset whose original files are missing.

Small datasets are decoded into an `ArraySource`. Large ones (or ones with variable image
sizes) prepared in ArrayRecord format (`tfds build --file_format=array_record`) are read in
place by random access (`TFDSRecordSource`: the same (seed, position) stream as every other
random-access source, O(1) resume, per-example indices); in TFRecord format (`tfds build`'s
default) they can only be streamed (`TFDSSource`), with a warning that says what it costs and
how to convert. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import math
import os

from absl import logging
import numpy as np

from sslax.data.sources import registry
from sslax.data.sources.base import ArraySource, DatasetNotFoundError, Source, TFDSSource
from sslax.data.sources.records import RecordSource


# TFDS datasets whose decoded images fit in this many bytes are loaded into an ArraySource;
# larger ones (or ones with variable image sizes) are streamed as a TFDSSource.
TFDS_IN_MEMORY_MAX_BYTES = 2 * 1024**3


def tfds_default_dir() -> str:
  """TFDS's default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def tfds_builder(name: str, data_dir: str | None):
  """(builder or None, note saying where TFDS looked)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  where = data_dir or tfds_default_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ != "DatasetNotFoundError":
      raise
    return None, f"TFDS {name}: not found in {where} ({str(e).splitlines()[0]})"
  if not builder.is_prepared():
    return None, f"TFDS {name}: not prepared in {where}"
  return builder, f"TFDS {name} in {where}"


def try_prepared_tfds(key: str, split: str, data_dir: str | None):
  """A built-in dataset from an already prepared TFDS copy, if there is one.

  -> (source or None, a note saying where TFDS looked, for the not-found message).
  """
  where = data_dir or tfds_default_dir()
  if "://" not in where and not os.path.isdir(os.path.join(os.path.expanduser(where), key)):
    return None, f"TFDS {key}: not prepared in {where}"  # Skip TFDS and its warnings.
  try:
    builder, note = tfds_builder(key, data_dir)
  except ImportError:
    return None, "TFDS: tensorflow_datasets not installed"
  if builder is None:
    return None, note
  logging.info("%s/%s: reading the prepared TFDS copy (%s)", key, split, note)
  return tfds_source(key, split, data_dir, num_examples=None, builder=builder), note


STREAMING_WARNING = (
  "TFDS %s/%s is prepared in %s format, which can only be streamed: each process reads its "
  "part of the split through a shuffle buffer, resuming skips every example the run consumed "
  "before (the longer the run, the slower the restart), and examples have no index (methods "
  "with per-example state refuse it). Prepare it for random access instead: `tfds build %s "
  "--file_format=array_record` (read in place), or convert it to record shards: `python -m "
  "sslax.data.shards --from tfds --input %s --output DIR` and train with dataset.name=shards."
)


@dataclasses.dataclass(eq=False)
class TFDSRecordSource(RecordSource):
  """A TFDS split prepared in ArrayRecord format, read by random access (no conversion).

  Records are read through TFDS's data source with the image left encoded and decoded by
  `RecordSource.read` (an unreadable one is replaced by the next index, counted). Labels are
  read with their image, so nothing is scanned at start-up; `labels` (every label of the split,
  for low-shot subsets) is read on first use, one pass over the records.
  """

  name: str
  split: str
  data_dir: str | None
  num_examples: int
  num_classes: int
  class_names: tuple[str, ...]
  channels: int = 3
  captions: bool = False
  image_key: str = "image"
  label_key: str = "label"
  index_map: np.ndarray | None = None  # int64 [n]: a subset's indices in the split (None: all)

  def __post_init__(self):
    self._init_counters()
    self._data = None
    self._labels = None

  def __len__(self) -> int:
    return self.num_examples if self.index_map is None else len(self.index_map)

  def describe(self) -> str:
    return f"TFDS {self.name}/{self.split}"

  def _data_source(self):
    if self._data is None:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

      builder = tfds.builder(self.name, data_dir=self.data_dir)
      self._data = builder.as_data_source(
        split=self.split, decoders={self.image_key: tfds.decode.SkipDecoding()}
      )
    return self._data

  def read_raw(self, index: int) -> tuple[bytes, int, str]:
    i = int(index if self.index_map is None else self.index_map[index])
    ex = self._data_source()[i]
    return bytes(ex[self.image_key]), int(ex[self.label_key]), ""

  @property
  def labels(self) -> np.ndarray:
    if self._labels is None:
      logging.info("%s: reading every label (one pass over the records)", self.describe())
      data = self._data_source()
      ids = range(self.num_examples) if self.index_map is None else self.index_map
      self._labels = np.asarray([int(data[int(i)][self.label_key]) for i in ids], np.int32)
    return self._labels

  def subset(self, indices) -> TFDSRecordSource:
    """The examples `indices` of this source, in that order."""
    indices = np.asarray(indices, np.int64)
    base = indices if self.index_map is None else self.index_map[indices]
    return dataclasses.replace(self, index_map=base)


def is_array_record(builder) -> bool:
  fmt = getattr(builder.info, "file_format", None)
  return "array_record" in str(getattr(fmt, "value", fmt)).lower()


def tfds_source(
  name: str,
  split: str,
  data_dir: str | None,
  *,
  num_examples: int | None,
  builder=None,
  seed: int = 0,
) -> ArraySource | TFDSSource | TFDSRecordSource:
  """Split `split` of the prepared TFDS dataset `name`: in memory if small, else read by random
  access (ArrayRecord format) or streamed (TFRecord format, with a warning)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if builder is None:
    builder, note = tfds_builder(name, data_dir)
    if builder is None:
      where = data_dir or tfds_default_dir()
      reason = "" if note.endswith("not prepared in " + where) else f" ({note})"
      raise DatasetNotFoundError(
        f"TFDS dataset {name} is not prepared in {where}{reason}; this machine cannot "
        f"download; run `tfds build {name}` on a machine with internet (or for manual-"
        "download datasets like imagenet2012 place the archives in "
        "~/tensorflow_datasets/downloads/manual) and copy the data dir, or pass "
        "--config.dataset.data_dir. Built-in datasets (no TFDS needed): "
        f"{', '.join(registry.dataset_names())}."
      )
  info = builder.info
  available = sorted(info.splits.keys())
  bases = [part.split("[", 1)[0].strip() for part in split.split("+")]
  if not all(b in info.splits for b in bases):
    raise ValueError(
      f"unknown split {split!r} for TFDS dataset {name}; available splits: {', '.join(available)}"
    )
  image_key, label_key = "image", "label"
  features = info.features
  for k in (image_key, label_key):
    if k not in features:
      raise ValueError(
        f"TFDS dataset {name} has no {k!r} feature (features: {', '.join(features.keys())})"
      )
  label_feature = features[label_key]
  if not isinstance(label_feature, tfds.features.ClassLabel):
    raise ValueError(f"TFDS dataset {name}: {label_key!r} is not a ClassLabel")
  class_names = tuple(label_feature.names)
  num_classes = int(label_feature.num_classes)

  requested = split
  total = int(info.splits[split].num_examples)
  cut = None  # Keep only the first n examples after reading (split already sliced).
  if num_examples is not None and num_examples < total:
    if "[" in split or "+" in split:
      cut = num_examples
    else:
      split = f"{split}[:{num_examples}]"
    total = num_examples
  shape = tuple(features[image_key].shape)
  known = all(s is not None for s in shape)
  size = total * math.prod(shape) if known else None
  if (size is None or size > TFDS_IN_MEMORY_MAX_BYTES) and is_array_record(builder):
    source = TFDSRecordSource(
      name=name,
      split=requested,
      data_dir=data_dir,
      num_examples=int(info.splits[requested].num_examples),
      num_classes=num_classes,
      class_names=class_names,
      channels=int(shape[-1]) if shape and shape[-1] else 3,
      image_key=image_key,
      label_key=label_key,
    )
    if num_examples is not None and num_examples < len(source):
      # A seeded random subset (the split may be sorted by class), kept in stored order.
      keep = np.random.default_rng(seed).permutation(len(source))[:num_examples]
      source = source.subset(np.sort(keep))
    logging.info("%s/%s: %d examples, random access (ArrayRecord)", name, requested, len(source))
    return source
  if size is None or size > TFDS_IN_MEMORY_MAX_BYTES:
    fmt = getattr(builder.info, "file_format", None)
    logging.warning(STREAMING_WARNING, name, split, getattr(fmt, "value", fmt), name, name)
    if cut is not None:
      raise ValueError(
        f"num_examples cannot be combined with the sliced split {split!r} of "
        f"the streamed TFDS dataset {name}: put the limit in the split instead, "
        f"e.g. 'train[:{num_examples}]'."
      )
    return TFDSSource(
      name=name,
      split=split,
      data_dir=data_dir,
      num_examples=total,
      num_classes=num_classes,
      class_names=class_names,
      image_key=image_key,
      label_key=label_key,
    )

  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda ex: (ex[image_key], ex[label_key]))
  images, labels = [], []
  for im, lb in tfds.as_numpy(ds.batch(4096)):
    images.append(im)
    labels.append(lb)
  images = np.concatenate(images)[:total] if images else np.zeros((0, *shape), np.uint8)
  labels = np.concatenate(labels)[:total] if labels else np.zeros((0,), np.int64)
  if images.dtype != np.uint8:
    raise ValueError(f"TFDS dataset {name}: images are {images.dtype}, expected uint8")
  if images.ndim == 3:
    images = images[..., None]
  logging.info("%s/%s: %d examples loaded from TFDS", name, split, len(labels))
  return ArraySource(
    images=np.ascontiguousarray(images),
    labels=labels.astype(np.int32),
    num_classes=num_classes,
    class_names=class_names,
    name=name,
  )


def load(
  key: str,
  split: str,
  *,
  data_dir: str | None,
  image_size: int,
  num_examples: int | None,
  seed: int,
  verify_images: bool,
) -> Source:
  """The registry's fallback: `key` is any TFDS dataset name, as given."""
  del image_size, verify_images
  return tfds_source(key, split, data_dir, num_examples=num_examples, seed=seed)


registry.register_fallback(load)
