"""TFDS datasets: any prepared TFDS dataset (the fallback of every unregistered name), and the
prepared TFDS copy of a built-in dataset whose original files are missing.

Small datasets are decoded into an `ArraySource`; large ones (or ones with variable image
sizes) are streamed as a `TFDSSource`. Nothing is downloaded.
"""

from __future__ import annotations

import math
import os

from absl import logging
import numpy as np

from sslax.data.sources import registry
from sslax.data.sources.base import ArraySource, DatasetNotFoundError, Source, TFDSSource


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


def tfds_source(
  name: str, split: str, data_dir: str | None, *, num_examples: int | None, builder=None
) -> ArraySource | TFDSSource:
  """Split `split` of the prepared TFDS dataset `name`: in memory if small, else streamed."""
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
  if size is None or size > TFDS_IN_MEMORY_MAX_BYTES:
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
  del image_size, seed, verify_images
  return tfds_source(key, split, data_dir, num_examples=num_examples)


registry.register_fallback(load)
