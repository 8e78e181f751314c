"""image_folder: data_dir/<split>/<class>/*.{png,jpg,jpeg}, read as a `FileSource` (the files
are decoded in the tf.data pipeline); corrupt files are found once with PIL and skipped."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

from absl import logging
import numpy as np

from sslax.data.sources import registry
from sslax.data.sources.base import DatasetNotFoundError, FileSource, Source

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_DECODABLE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # What tf.io.decode_image reads.
_OTHER_SPLIT_DIRS = ("train", "val", "validation", "test")
_MAX_LISTED = 5


def check_image_file(path: str) -> str | None:
  """None if `path` is an image TensorFlow can decode, else why not (read once, via PIL)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as im:
      fmt = im.format
      im.verify()
    if fmt not in _DECODABLE_FORMATS:
      return f"unsupported format {fmt}"
    if fmt == "JPEG":
      # verify() does not decode JPEG data: a file cut short can pass it. A complete JPEG ends
      # with the EOI marker; if it does not, decode it fully to decide.
      with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 64, 0))
        tail = f.read().rstrip(b"\x00\r\n\t ")
      if not tail.endswith(b"\xff\xd9"):
        with Image.open(path) as im:
          im.load()
  except Exception as e:  # pylint: disable=broad-except
    return f"{type(e).__name__}: {e}"
  return None


def list_class_dirs(directory: str) -> list[str]:
  """The sorted sub-directories of `directory` (hidden ones left out); [] if it is missing."""
  try:
    return sorted(
      e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
    )
  except FileNotFoundError:
    return []


def image_folder_source(
  split: str, data_dir: str | None, *, num_examples: int | None, seed: int, verify_images: bool
) -> FileSource:
  if not data_dir:
    raise DatasetNotFoundError(
      "image_folder needs data_dir (--config.dataset.data_dir): a "
      "directory with <split>/<class>/*.{png,jpg,jpeg}."
    )
  root = os.path.expanduser(data_dir)
  split_dir = os.path.join(root, split)
  classes = list_class_dirs(split_dir)
  expected = f"{split_dir}/<class>/*.{{png,jpg,jpeg}} (one sub-directory per class)"
  if not classes:
    present = list_class_dirs(root)
    raise DatasetNotFoundError(
      f"image_folder: no class directories in {split_dir}; expected {expected}. "
      + (f"{root} has: {', '.join(present)}." if present else f"{root} is missing or empty.")
    )
  # Class ids must agree across splits even when one split lacks a class: use the union of the
  # class directories of this split and of the usual sibling splits.
  union = set(classes)
  for other in _OTHER_SPLIT_DIRS:
    if other != split:
      union.update(list_class_dirs(os.path.join(root, other)))
  class_names = tuple(sorted(union))
  class_index = {c: i for i, c in enumerate(class_names)}

  paths, labels, non_images = [], [], []
  for c in classes:
    for dirpath, dirnames, filenames in os.walk(os.path.join(split_dir, c)):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      for fn in sorted(filenames):
        p = os.path.join(dirpath, fn)
        if fn.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(p)
          labels.append(class_index[c])
        else:
          non_images.append(p)
  if non_images:
    logging.info(
      "ignored %d non-image files (not %s) in %s: first few: %s",
      len(non_images),
      "/".join(IMAGE_EXTENSIONS),
      split_dir,
      non_images[:_MAX_LISTED],
    )
  if not paths:
    raise DatasetNotFoundError(f"image_folder: no image files in {split_dir}; expected {expected}.")

  order = np.arange(len(paths))
  want = len(paths)
  if num_examples is not None and num_examples < len(paths):
    # Files are sorted by class, so "the first n" would be one class: take a seeded subset.
    order = np.random.default_rng(seed).permutation(len(paths))
    want = num_examples

  keep, corrupt = [], []
  if verify_images:
    workers = min(32, 4 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      start = 0
      while len(keep) < want and start < len(order):
        # When subsetting, check a little more than still needed, chunk by chunk.
        chunk = order[start : start + max(2 * (want - len(keep)), 64)]
        start += len(chunk)
        for i, problem in zip(chunk, pool.map(check_image_file, [paths[i] for i in chunk])):
          if problem is None:
            keep.append(i)
          else:
            corrupt.append((paths[i], problem))
    if corrupt:
      logging.warning(
        "skipped %d corrupt image files in %s: first few: %s",
        len(corrupt),
        split_dir,
        [f"{p} ({why})" for p, why in corrupt[:_MAX_LISTED]],
      )
  else:
    keep = list(order)
  keep = np.sort(np.asarray(keep[:want], dtype=np.int64))
  if keep.size == 0:
    raise DatasetNotFoundError(
      f"image_folder: no readable image files in {split_dir} ({len(corrupt)} corrupt)."
    )
  return FileSource(
    paths=np.asarray(paths)[keep],
    labels=np.asarray(labels, np.int32)[keep],
    num_classes=len(class_names),
    class_names=class_names,
    name="image_folder",
    channels=3,
  )


def verify_files(source: FileSource) -> FileSource:
  """`source` without the files that do not decode (each checked once with `check_image_file`;
  a training subset checks only its own files, not the whole folder's)."""
  paths = [str(p) for p in source.paths]
  workers = min(32, 4 * (os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    problems = list(pool.map(lambda p: check_image_file(p), paths))
  keep = np.asarray([i for i, why in enumerate(problems) if why is None], np.int64)
  corrupt = [(p, why) for p, why in zip(paths, problems) if why is not None]
  if corrupt:
    logging.warning(
      "skipped %d corrupt image files of %d: first few: %s",
      len(corrupt),
      len(paths),
      [f"{p} ({why})" for p, why in corrupt[:_MAX_LISTED]],
    )
  if keep.size == 0:
    raise DatasetNotFoundError(f"image_folder: none of the {len(paths)} files is a readable image.")
  if keep.size == len(paths):
    return source
  return dataclasses.replace(source, paths=source.paths[keep], labels=source.labels[keep])


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
  """The registry's loader of "image_folder" (`split` is the directory name)."""
  del key, image_size
  return image_folder_source(
    split, data_dir, num_examples=num_examples, seed=seed, verify_images=verify_images
  )


registry.register(("image_folder",), load)
