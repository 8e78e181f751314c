"""Image-text sources: (image, caption) pairs for CLIP / SigLIP, read from local files only.

Every source is an `ImageTextSource`: an `ArraySource` (decoded uint8 images, labels, class
names) that also holds the captions and their byte-level tokens [N, SOURCE_CONTEXT_LENGTH], so
the image pipeline, evaluation and export work on it unchanged and the training pipeline adds
`batch["tokens"]`. Dataset names (`config.dataset.name`):

  image_text_pairs        a .jsonl ({"image": path, "caption": str[, "label": int]} per line) or
                          .csv (header image,caption[,label]) file given as dataset.data_dir;
                          relative image paths are relative to the file.
  openclipart_captions    Open Clip Art: png/<category>/.../<name>.png; the caption is the
                          <dc:title> (+ ". " + <dc:description>) of svg/<category>/.../<name>.svg.
  tuxpaint_captions       Tux Paint stamps: stamps/<category>/.../<name>.png with the first line
                          of <name>.txt as caption.
  fashion_mnist_captions  Fashion-MNIST with label-templated captions ("a photo of a {label}.").
  coco_captions           the prepared TFDS dataset (first caption of each image).

(`openclipart` / `tuxpaint_stamps` in colour_folders.py are the same images as labelled image
sets.)

Splits: the file-based sets have no official split, so "test" is a deterministic held-out
tenth chosen by a hash of each image's file name (stable when files are added or removed),
"train" the rest and "all" everything. Fashion-MNIST and TFDS keep their own splits.
Images with an alpha channel are composited on white and fitted (aspect kept) into a white
square of side `image_size`; the decoded arrays of the large offline sets are cached as .npz
(no pickle) in DECODED_CACHE_DIR.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import html
import json
import os
import re
from typing import Sequence

import numpy as np
from absl import logging

from sslax.data import text
from sslax.data.sources import base, idx, registry, tfds
from sslax.data.sources.base import ArraySource, CorruptDatasetError, DatasetNotFoundError, Source

IMAGE_TEXT_DATASETS = (
  "image_text_pairs",
  "openclipart_captions",
  "tuxpaint_captions",
  "fashion_mnist_captions",
  "coco_captions",
)
SPLITS = ("train", "test", "all")
HELD_OUT_PER_MILLE = 100  # 10% of the files go to "test"
SOURCE_CONTEXT_LENGTH = 77  # sources tokenize at CLIP's length; the model cuts (fit_context)
DECODED_CACHE_DIR = os.path.join("~", ".cache", "sslax", "decoded")
WHITE = 255

# Readable class names for prompts; Fashion-MNIST's official names have "/" and capitals.
FASHION_MNIST_PROMPT_NAMES = (
  "t-shirt",
  "trouser",
  "pullover",
  "dress",
  "coat",
  "sandal",
  "shirt",
  "sneaker",
  "bag",
  "ankle boot",
)
# Training captions of fashion_mnist_captions: example i gets template i % len(...).
FASHION_MNIST_TRAIN_TEMPLATES = (
  "a photo of a {label}.",
  "a black and white photo of a {label}.",
  "a picture of a {label}.",
  "a small photo of the {label}.",
  "a low resolution photo of a {label}.",
  "a {label}.",
  "an image of a {label}.",
  "a grayscale photo of the {label}.",
)


@dataclasses.dataclass
class ImageTextSource(ArraySource):
  """ArraySource + captions [N] (str) and their tokens [N, L] int32 (`sslax.data.text`)."""

  captions: np.ndarray
  tokens: np.ndarray


def source_tokenizer() -> text.ByteTokenizer:
  return text.ByteTokenizer(context_length=SOURCE_CONTEXT_LENGTH)


def is_held_out(file_name: str) -> bool:
  """The deterministic "test" membership of a file: a hash of its base name."""
  digest = hashlib.sha1(os.path.basename(file_name).encode("utf-8")).digest()
  return int.from_bytes(digest[:4], "big") % 1000 < HELD_OUT_PER_MILLE


def prompt_class_names(source) -> tuple[str, ...]:
  """Class names as they read in a sentence ("signs_and_symbols" -> "signs and symbols")."""
  if source.name in ("fashion_mnist", "fashion_mnist_captions"):
    return FASHION_MNIST_PROMPT_NAMES
  return tuple(str(c).replace("_", " ").replace("/", " or ").lower() for c in source.class_names)


# --------------------------------------------------------------------------------------------
# Entry point (the registry's loader of IMAGE_TEXT_DATASETS is `load`)
# --------------------------------------------------------------------------------------------


def get_image_text_source(
  key: str,
  split: str,
  *,
  data_dir: str | None,
  image_size: int,
  num_examples: int | None,
  seed: int,
) -> ImageTextSource:
  if key == "fashion_mnist_captions":
    source = _templated_source(
      idx.idx_source("fashion_mnist", split, data_dir),
      FASHION_MNIST_PROMPT_NAMES,
      FASHION_MNIST_TRAIN_TEMPLATES,
      name=key,
    )
  elif key == "coco_captions":
    source = _tfds_image_text_source(key, split, data_dir, image_size, num_examples)
  else:
    if split not in SPLITS:
      raise ValueError(
        f"unknown split {split!r} for {key}; valid splits: {SPLITS} (test is "
        f"a fixed held-out tenth chosen by file-name hash)."
      )
    if key == "image_text_pairs":
      paths, captions, labels, class_names = _read_pairs_file(data_dir)
      cache = False
    elif key == "openclipart_captions":
      paths, captions, labels, class_names = _openclipart_pairs(data_dir)
      cache = True
    elif key == "tuxpaint_captions":
      paths, captions, labels, class_names = _tuxpaint_pairs(data_dir)
      cache = True
    else:
      raise ValueError(f"unknown image-text dataset {key!r}; choose one of {IMAGE_TEXT_DATASETS}.")
    keep = [i for i, p in enumerate(paths) if split == "all" or is_held_out(p) == (split == "test")]
    if not keep:
      raise ValueError(
        f"{key}: split {split!r} is empty ({len(paths)} pairs in all); use "
        f"split 'all' or add pairs."
      )
    paths = [paths[i] for i in keep]
    captions = [captions[i] for i in keep]
    labels = np.asarray(labels, np.int32)[keep]
    images, ok = load_images(paths, image_size, cache=cache)
    source = _make_source(
      images, labels[ok], class_names, [c for c, good in zip(captions, ok) if good], name=key
    )
  return _subset(source, num_examples, seed)


def _make_source(images, labels, class_names, captions, *, name) -> ImageTextSource:
  captions = np.asarray(list(captions), dtype=object)
  return ImageTextSource(
    images=images,
    labels=np.asarray(labels, np.int32),
    num_classes=len(class_names),
    class_names=tuple(class_names),
    name=name,
    captions=captions,
    tokens=source_tokenizer().encode_batch(list(captions)),
  )


def _subset(source: ImageTextSource, n: int | None, seed: int) -> ImageTextSource:
  """A seeded random subset of n examples (files are sorted by category: "first n" would be
  one category), kept in the original order."""
  if n is None or n >= len(source.labels):
    return source
  keep = np.sort(np.random.default_rng(seed).permutation(len(source.labels))[:n])
  return dataclasses.replace(
    source,
    images=source.images[keep],
    labels=source.labels[keep],
    captions=source.captions[keep],
    tokens=source.tokens[keep],
  )


def _templated_source(source, names: Sequence[str], templates: Sequence[str], *, name: str):
  if not isinstance(source, ArraySource):
    raise ValueError(
      f"{name}: label-templated captions need an in-memory labelled dataset, got "
      f"{type(source).__name__}."
    )
  captions = [
    templates[i % len(templates)].format(label=names[int(y)]) for i, y in enumerate(source.labels)
  ]
  return _make_source(source.images, source.labels, source.class_names, captions, name=name)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def load_image(path: str, size: int) -> np.ndarray | None:
  """A PNG/JPEG file -> uint8 [size, size, 3]: alpha composited on white, aspect kept, padded
  with white to a square. None (with a warning) for a file PIL cannot or will not decode
  (corrupt, or a "decompression bomb" over PIL's pixel limit: Open Clip Art has one)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as im:
      im.draft("RGB", (2 * size, 2 * size))  # JPEG: decode at a reduced scale
      im = im.convert("RGBA")
      im.thumbnail((size, size), Image.BILINEAR, reducing_gap=2.0)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    logging.warning("skipping image %s: %s", path, e)
    return None
  canvas = Image.new("RGBA", (size, size), (WHITE, WHITE, WHITE, 255))
  canvas.alpha_composite(im, ((size - im.width) // 2, (size - im.height) // 2))
  return np.asarray(canvas.convert("RGB"), np.uint8)


def load_images(paths: Sequence[str], size: int, *, cache: bool) -> tuple[np.ndarray, np.ndarray]:
  """-> (uint8 [M, size, size, 3] of the decodable files, bool [N] which ones they are),
  decoded in threads; cached as .npz when `cache`."""
  cache_file = None
  if cache:
    key = hashlib.sha1(
      json.dumps([size, [(p, os.path.getmtime(p)) for p in paths]]).encode()
    ).hexdigest()[:16]
    cache_file = os.path.join(os.path.expanduser(DECODED_CACHE_DIR), f"images_{size}px_{key}.npz")
    if os.path.exists(cache_file):
      with np.load(cache_file, allow_pickle=False) as f:
        return f["images"], f["ok"]
  workers = min(16, 2 * (os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    decoded = list(pool.map(lambda p: load_image(p, size), paths))
  ok = np.array([d is not None for d in decoded], bool)
  if not ok.any():
    raise CorruptDatasetError(
      f"none of the {len(paths)} images (e.g. {paths[0]}) could be decoded."
    )
  images = np.stack([d for d in decoded if d is not None])
  if cache_file:
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    tmp = cache_file + ".tmp.npz"
    np.savez(tmp, images=images, ok=ok)
    os.replace(tmp, cache_file)
    logging.info("decoded %d images to %s", len(paths), cache_file)
  return images, ok


# --------------------------------------------------------------------------------------------
# Pair files (.jsonl / .csv)
# --------------------------------------------------------------------------------------------


def _read_pairs_file(data_dir: str | None):
  if not data_dir:
    raise DatasetNotFoundError(
      "image_text_pairs needs --config.dataset.data_dir=PATH to a .jsonl file with one "
      '{"image": "path.png", "caption": "..."} per line (or a .csv with columns image,caption).'
    )
  path = os.path.expanduser(data_dir)
  if not os.path.isfile(path):
    raise DatasetNotFoundError(
      f"image_text_pairs: {path} is not a file; dataset.data_dir "
      f"must name a .jsonl or .csv file of (image, caption) pairs."
    )
  base = os.path.dirname(os.path.abspath(path))
  rows = []
  if path.endswith(".csv"):
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
        raise ValueError(
          f"{path}: the header must have columns image,caption[,label]; got {reader.fieldnames}."
        )
      rows = [(i + 2, r) for i, r in enumerate(reader)]
  elif path.endswith(".jsonl"):
    with open(path, encoding="utf-8") as f:
      for i, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(
            f"{path}:{i}: not a JSON object ({e}); each line must look like "
            '{"image": "a.png", "caption": "a red apple"}.'
          ) from None
        rows.append((i, row))
  else:
    raise ValueError(f"image_text_pairs: {path} must end in .jsonl or .csv.")
  paths, captions, labels = [], [], []
  for line, row in rows:
    if not isinstance(row, dict) or "image" not in row or "caption" not in row:
      raise ValueError(f"{path}:{line}: needs the keys 'image' and 'caption', got {row!r:.120}.")
    image = os.path.join(base, os.path.expanduser(str(row["image"])))
    if not os.path.isfile(image):
      raise DatasetNotFoundError(f"{path}:{line}: image file {image} does not exist.")
    paths.append(image)
    captions.append(str(row["caption"] or ""))
    labels.append(int(row.get("label") or 0))
  if not paths:
    raise ValueError(f"{path}: no (image, caption) pairs.")
  num_classes = max(labels) + 1
  return paths, captions, labels, tuple(f"class_{i}" for i in range(num_classes))


# --------------------------------------------------------------------------------------------
# Open Clip Art and Tux Paint stamps (scripts/get_image_text_data.sh)
# --------------------------------------------------------------------------------------------

_TITLE = re.compile(r"<dc:title>(.*?)</dc:title>", re.S)
_DESCRIPTION = re.compile(r"<dc:description>(.*?)</dc:description>", re.S)


def _find_root(data_dir: str | None, subdir: str, marker: str, name: str) -> str:
  searched = []
  for root in base.search_roots(data_dir):
    for d in (os.path.join(root, subdir), root):
      if os.path.isdir(os.path.join(d, marker)):
        return d
      searched.append(os.path.join(d, marker))
  raise DatasetNotFoundError(
    f"{name} not found; looked for " + ", ".join(searched) + ". Get it with "
    "`bash scripts/get_image_text_data.sh` (unpacks it into ~/.cache/sslax/datasets; set "
    f"${base.DATA_DIR_ENV} or --config.dataset.data_dir to use another place)."
  )


def _pngs_by_category(top: str):
  categories = sorted(d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d)))
  for label, category in enumerate(categories):
    for dirpath, dirnames, filenames in os.walk(os.path.join(top, category)):
      dirnames.sort()
      for fn in sorted(filenames):
        if fn.lower().endswith(".png"):
          yield label, os.path.join(dirpath, fn)


def _clean(s: str) -> str:
  return " ".join(html.unescape(s).split())


def svg_caption(svg_path: str) -> str:
  """The first <dc:title> (the work's; later ones name agents) + ". " + <dc:description>."""
  with open(svg_path, encoding="utf-8", errors="replace") as f:
    head = f.read(200_000)
  title = _TITLE.search(head)
  description = _DESCRIPTION.search(head)
  title = _clean(title.group(1)) if title else ""
  description = _clean(description.group(1)) if description else ""
  if description and description.lower().rstrip(".") != title.lower():
    return f"{title}. {description}" if title else description
  return title


def _humanize(path: str) -> str:
  stem = os.path.splitext(os.path.basename(path))[0]
  return re.sub(r"[_\-]+", " ", re.sub(r"_\d+$", "", stem)).strip()


def _openclipart_pairs(data_dir):
  root = _find_root(data_dir, "openclipart", "png", "Open Clip Art")
  top = os.path.join(root, "png")
  categories = sorted(d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d)))
  paths, captions, labels = [], [], []
  for label, png in _pngs_by_category(top):
    svg = os.path.join(root, "svg", os.path.relpath(png, top))[:-4] + ".svg"
    caption = svg_caption(svg) if os.path.isfile(svg) else ""
    paths.append(png)
    captions.append(caption or _humanize(png))
    labels.append(label)
  return paths, captions, labels, tuple(categories)


def _tuxpaint_pairs(data_dir):
  root = _find_root(data_dir, "tuxpaint-stamps", "stamps", "Tux Paint stamps")
  top = os.path.join(root, "stamps")
  categories = sorted(d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d)))
  paths, captions, labels = [], [], []
  for label, png in _pngs_by_category(top):
    txt = png[:-4] + ".txt"
    caption = ""
    if os.path.isfile(txt):
      with open(txt, encoding="utf-8", errors="replace") as f:
        caption = _clean(f.readline())  # the English line; translations follow as xx.utf8=...
    paths.append(png)
    captions.append(caption or _humanize(png))
    labels.append(label)
  return paths, captions, labels, tuple(categories)


# --------------------------------------------------------------------------------------------
# TFDS image-text datasets
# --------------------------------------------------------------------------------------------

# name -> (image feature, caption feature path)
TFDS_IMAGE_TEXT = {"coco_captions": ("image", ("captions", "text"))}


def _tfds_image_text_source(name, split, data_dir, image_size, num_examples):
  builder, note = tfds.tfds_builder(name, data_dir)
  if builder is None:
    where = data_dir or tfds.tfds_default_dir()
    raise DatasetNotFoundError(
      f"TFDS image-text dataset {name} is not prepared in {where} ({note}); this machine "
      f"cannot download: run `tfds build {name}` on a machine with internet and copy the data "
      f"dir here (or pass --config.dataset.data_dir). Offline image-text sets: openclipart, "
      f"tuxpaint_stamps (bash scripts/get_image_text_data.sh), image_text_pairs (your files)."
    )
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  image_key, caption_path = TFDS_IMAGE_TEXT[name]
  if num_examples:
    split = f"{split}[:{num_examples}]"

  def select(ex):
    caption = ex
    for k in caption_path:
      caption = caption[k]
    if caption.shape.rank:  # several captions per image: the first
      caption = caption[0]
    image = tf.image.resize_with_pad(tf.cast(ex[image_key], tf.float32), image_size, image_size)
    return tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), caption

  images, captions = [], []
  for im, cap in (
    builder.as_dataset(split=split, shuffle_files=False).map(select).batch(1024).as_numpy_iterator()
  ):
    images.append(im)
    captions += [c.decode("utf-8") for c in cap]
  return _make_source(
    np.concatenate(images), np.zeros(len(captions), np.int32), ("all",), captions, name=name
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
  """The registry's loader of IMAGE_TEXT_DATASETS."""
  del verify_images
  return get_image_text_source(
    key, split, data_dir=data_dir, image_size=image_size, num_examples=num_examples, seed=seed
  )


registry.register(IMAGE_TEXT_DATASETS, load)
