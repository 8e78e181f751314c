"""CIFAR-10 and CIFAR-100 from the original "python version" batches.

The batches are Python pickles: they are read with `safe_pickle.safe_unpickle`, which cannot
run code. When the batches are not found, a prepared TFDS copy is used if there is one.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import numpy as np

from sslax.data.sources import base, registry, tfds
from sslax.data.sources.base import ArraySource, CorruptDatasetError, DatasetNotFoundError, Source
from sslax.data.sources.safe_pickle import safe_unpickle

CIFAR10_CLASSES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)


def _load_pickle_file(path: str) -> Any:
  try:
    with open(path, "rb") as f:
      return safe_unpickle(f.read())
  except CorruptDatasetError as e:
    raise type(e)(f"{path}: {e}") from e


def _dict_get(d: Any, key: str, path: str) -> Any:
  if not isinstance(d, dict):
    raise CorruptDatasetError(f"{path}: expected a dict, got {type(d).__name__}")
  for k in (key.encode(), key):
    if k in d:
      return d[k]
  raise CorruptDatasetError(f"{path}: no {key!r} entry (has {sorted(map(str, d))[:8]})")


_CIFAR_INFO = {
  "cifar10": dict(
    subdirs=(
      "cifar-10-batches-py",
      os.path.join("cifar10", "cifar-10-batches-py"),
      "cifar10",
      "cifar-10",
    ),
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    meta="batches.meta",
    names_key="label_names",
    labels_key="labels",
    num_classes=10,
    archive="cifar-10-python.tar.gz",
  ),
  "cifar100": dict(
    subdirs=(
      "cifar-100-python",
      os.path.join("cifar100", "cifar-100-python"),
      "cifar100",
      "cifar-100",
    ),
    files={"train": ("train",), "test": ("test",)},
    meta="meta",
    names_key="fine_label_names",
    labels_key="fine_labels",
    num_classes=100,
    archive="cifar-100-python.tar.gz",
  ),
}


def _read_cifar_batch(path: str, labels_key: str, num_classes: int):
  batch = _load_pickle_file(path)
  data = _dict_get(batch, "data", path)
  labels = _dict_get(batch, labels_key, path)
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
    raise CorruptDatasetError(f"{path}: 'data' must be a uint8 array")
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise CorruptDatasetError(f"{path}: 'data' has shape {data.shape}, expected [N, 3072]")
  try:
    labels = np.asarray(labels, dtype=np.int64)
  except (TypeError, ValueError, OverflowError) as e:
    raise CorruptDatasetError(f"{path}: {labels_key!r} is not a list of ints") from e
  if labels.shape != (data.shape[0],):
    raise CorruptDatasetError(f"{path}: {data.shape[0]} images but {labels.size} labels")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise CorruptDatasetError(f"{path}: labels out of range [0, {num_classes})")
  # Rows are channel-major (R plane, G plane, B plane, each 32x32 row-major) -> HWC.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels.astype(np.int32)


def cifar_source(key: str, split: str, data_dir: str | None) -> ArraySource:
  """Every example of `split` ("train" / "test") of "cifar10" or "cifar100"."""
  info = _CIFAR_INFO[key]
  base.check_split(key, split, tuple(info["files"]))
  names = info["files"][split]
  searched = []
  for d in base.candidate_dirs(data_dir, info["subdirs"]):
    paths = [os.path.join(d, n) for n in names]
    present = [p for p in paths if os.path.isfile(p)]
    if len(present) == len(paths):
      parts = [_read_cifar_batch(p, info["labels_key"], info["num_classes"]) for p in paths]
      images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
      labels = np.concatenate([p[1] for p in parts])
      class_names = _cifar_class_names(key, d)
      logging.info("%s/%s: %d examples from %s", key, split, len(labels), d)
      return ArraySource(
        images=images,
        labels=labels,
        num_classes=info["num_classes"],
        class_names=class_names,
        name=key,
      )
    note = ""
    if present:
      missing = sorted(set(paths) - set(present))
      note = f" (incomplete: missing {', '.join(os.path.basename(m) for m in missing)})"
    searched.append(d + note)

  tfds_source, tfds_note = tfds.try_prepared_tfds(key, split, data_dir)
  if tfds_source is not None:
    return tfds_source
  searched.append(tfds_note)
  raise DatasetNotFoundError(
    f"{key} split {split!r} not found: need {', '.join(names)} from the original "
    f"{info['archive']} (python version). Searched (explicit data_dir, ${base.DATA_DIR_ENV}, "
    f"{base.USER_CACHE_DIR}, {', '.join(base.SYSTEM_DATA_DIRS)}, TFDS):\n"
    + "".join(f"  - {s}\n" for s in searched)
    + "To get the data (this machine cannot "
    f"download): on a machine with internet get {info['archive']} from the CIFAR page "
    f"(www.cs.toronto.edu/~kriz/cifar.html), extract it into $SSLAX_DATA_DIR (giving "
    f"$SSLAX_DATA_DIR/{info['subdirs'][0]}/) or into ~/.cache/sslax/datasets/, or pass "
    f"data_dir; or run `tfds build {key}` there and copy the TFDS data dir."
  )


def _cifar_class_names(key: str, directory: str) -> tuple[str, ...]:
  info = _CIFAR_INFO[key]
  meta_path = os.path.join(directory, info["meta"])
  if os.path.isfile(meta_path):
    names = _dict_get(_load_pickle_file(meta_path), info["names_key"], meta_path)
    if (
      not isinstance(names, list)
      or len(names) != info["num_classes"]
      or not all(isinstance(n, (str, bytes)) for n in names)
    ):
      raise CorruptDatasetError(
        f"{meta_path}: {info['names_key']!r} is not a list of {info['num_classes']} names"
      )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
  logging.warning("%s not found; using default class names", meta_path)
  if key == "cifar10":
    return CIFAR10_CLASSES
  return tuple(str(i) for i in range(info["num_classes"]))


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
  """The registry's loader of "cifar10" and "cifar100": the first `num_examples`."""
  del image_size, seed, verify_images
  return base.take_first(cifar_source(key, split, data_dir), num_examples)


registry.register(tuple(_CIFAR_INFO), load)
