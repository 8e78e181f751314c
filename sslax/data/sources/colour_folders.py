"""Labelled colour clip-art / photo cut-outs (Open Clip Art, Tux Paint stamps): category
folders of PNGs from Debian packages (scripts/get_image_text_data.sh), decoded once into memory.

The same images with captions are image-text datasets (`image_text.py`).
"""

from __future__ import annotations

import concurrent.futures
import os
import zlib

from absl import logging
import numpy as np

from sslax.data.sources import base, registry
from sslax.data.sources.base import ArraySource, DatasetNotFoundError, Source
from sslax.data.sources.folders import IMAGE_EXTENSIONS, list_class_dirs

# name -> the folder (under a search root) whose sub-directories are the categories.
COLOUR_FOLDER_DATASETS = {
  "openclipart": os.path.join("openclipart", "png"),  # 8,121 PNGs, 22 categories
  "tuxpaint_stamps": os.path.join("tuxpaint-stamps", "stamps"),  # 796 PNGs, 16 categories
}
COLOUR_FOLDER_TEST_PERCENT = 20  # a file is in "test" iff crc32(its relative path) % 100 < this
COLOUR_FOLDER_MIN_STORED_SIZE = 64  # decoded once to a square of max(this, image_size) px


def _colour_folder_files(folder: str) -> tuple[list[str], list[str], tuple[str, ...]]:
  """-> (relative paths, their top-level category, sorted category names)."""
  categories = tuple(list_class_dirs(folder))
  paths, cats = [], []
  for c in categories:
    for dirpath, dirnames, filenames in os.walk(os.path.join(folder, c)):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      for fn in sorted(filenames):
        if fn.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(os.path.relpath(os.path.join(dirpath, fn), folder))
          cats.append(c)
  return paths, cats, categories


def _decode_on_white(path: str, size: int) -> np.ndarray | None:
  """A PNG/JPEG (any mode, transparency composited on white) -> uint8 [size, size, 3], its
  longer side scaled to `size` and centred on a white square; None if unreadable."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as im:
      im = im.convert("RGBA")
      canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
      im = Image.alpha_composite(canvas, im).convert("RGB")
      scale = size / max(im.size)
      w, h = max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))
      im = im.resize((w, h), Image.BICUBIC)
      square = Image.new("RGB", (size, size), (255, 255, 255))
      square.paste(im, ((size - w) // 2, (size - h) // 2))
      return np.asarray(square, np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("skipping unreadable image %s: %s", path, e)
    return None


def colour_folder_source(
  key: str, split: str, data_dir: str | None, *, image_size: int
) -> ArraySource:
  """Every image of one split, decoded once into memory (and cached beside the data as .npz)."""
  base.check_split(key, split, ("train", "test"))
  sub = COLOUR_FOLDER_DATASETS[key]
  searched = []
  for root in base.search_roots(data_dir):
    folder = os.path.join(root, sub)
    if list_class_dirs(folder):
      break
    searched.append(folder)
  else:
    raise DatasetNotFoundError(
      f"{key}: no category folders found; searched:\n"
      + "".join(f"  - {s}\n" for s in searched)
      + "Get the data (Debian packages, no root needed) with `bash scripts/get_image_text_data.sh` "
      f"(it unpacks into ${base.DATA_DIR_ENV} or {base.USER_CACHE_DIR}), "
      "or pass --config.dataset.data_dir."
    )
  paths, cats, categories = _colour_folder_files(folder)
  test = np.array([zlib.crc32(p.encode()) % 100 < COLOUR_FOLDER_TEST_PERCENT for p in paths])
  # Order by a hash of the path, not by category, so "the first n" is a mixed subset.
  keep = [
    i
    for i in sorted(range(len(paths)), key=lambda i: (zlib.crc32(paths[i].encode()), paths[i]))
    if test[i] == (split == "test")
  ]
  size = max(COLOUR_FOLDER_MIN_STORED_SIZE, int(image_size))
  fingerprint = zlib.crc32("\n".join(paths[i] for i in keep).encode())
  cache = os.path.join(
    os.path.dirname(folder.rstrip(os.sep)), f".sslax_{key}_{split}_{size}px_{fingerprint:08x}.npz"
  )
  images = None
  if os.path.exists(cache):
    try:
      with np.load(cache, allow_pickle=False) as f:
        images, ok = f["images"], f["ok"]
    except (OSError, ValueError, KeyError) as e:
      logging.warning("ignoring unreadable cache %s: %s", cache, e)
  if images is None:
    workers = min(16, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      decoded = list(
        pool.map(lambda i: _decode_on_white(os.path.join(folder, paths[i]), size), keep)
      )
    ok = np.array([d is not None for d in decoded])
    images = (
      np.stack([d for d in decoded if d is not None])
      if ok.any()
      else np.zeros((0, size, size, 3), np.uint8)
    )
    try:
      tmp = cache + f".tmp{os.getpid()}.npz"
      np.savez(tmp, images=images, ok=ok)
      os.replace(tmp, cache)
    except OSError as e:  # read-only data dir: decode again next time
      logging.info("not caching %s: %s", cache, e)
  index = {c: i for i, c in enumerate(categories)}
  labels = np.array([index[cats[i]] for i, good in zip(keep, ok) if good], np.int32)
  if not len(labels):
    raise DatasetNotFoundError(f"{key}: no readable images in the {split!r} split of {folder}.")
  return ArraySource(
    images=images, labels=labels, num_classes=len(categories), class_names=categories, name=key
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
  """The registry's loader of COLOUR_FOLDER_DATASETS: the first `num_examples`."""
  del seed, verify_images
  return base.take_first(
    colour_folder_source(key, split, data_dir, image_size=image_size), num_examples
  )


registry.register(tuple(COLOUR_FOLDER_DATASETS), load)
