"""PNG pictures of a run, drawn with PIL (no plotting library needed).

* `augmentation_grid`: a few images next to the augmented views the method trains on.
* `embedding_map`: test features projected to 2-D by PCA (NumPy SVD), one colour per label.
* `retrieval_grid`: query images with their top-k gallery neighbours, framed green when the
  neighbour has the query's label and red otherwise.

Layout (so a reader, or a test, knows the size): a grid of R rows x C columns of square cells of
`cell` pixels, separated and surrounded by `PAD` pixels: width = C * cell + (C + 1) * PAD,
height = R * cell + (R + 1) * PAD.
"""

from __future__ import annotations

import colorsys
import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

PAD = 4  # pixels between and around grid cells
FRAME = 2  # width of the coloured frame of retrieval neighbours
MIN_CELL = 64  # small images are enlarged (nearest neighbour, integer factor) to at least this

_TAB10 = [
  (31, 119, 180),
  (255, 127, 14),
  (44, 160, 44),
  (214, 39, 40),
  (148, 103, 189),
  (140, 86, 75),
  (227, 119, 194),
  (127, 127, 127),
  (188, 189, 34),
  (23, 190, 207),
]


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
  """Distinct RGB colours: matplotlib's tab10 for <= 10 classes, evenly spaced hues beyond."""
  if num_classes <= len(_TAB10):
    return _TAB10[:num_classes]
  return [
    tuple(int(255 * v) for v in colorsys.hsv_to_rgb(i / num_classes, 0.75, 0.9))
    for i in range(num_classes)
  ]


def cell_size(image_size: int) -> int:
  """Side of a grid cell for images of side `image_size`: enlarged by an integer factor."""
  return image_size * max(1, math.ceil(MIN_CELL / image_size))


def grid_size(rows: int, cols: int, cell: int) -> tuple[int, int]:
  """(width, height) in pixels of a rows x cols grid of `cell`-pixel cells."""
  return cols * cell + (cols + 1) * PAD, rows * cell + (rows + 1) * PAD


def _to_pil(image: np.ndarray) -> Image.Image:
  """[H, W, C] float in [0, 1] or uint8, C in {1, 3} -> RGB PIL image."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return Image.fromarray(image, "RGB")


def _draw_grid(
  cells: Sequence[Sequence[np.ndarray]],
  cell: int,
  path: str,
  scale: int,
  frames: Sequence[Sequence[tuple | None]] | None = None,
) -> tuple[int, int]:
  """Pastes cells[r][c] (enlarged `scale` times, centred) into a grid and saves it as PNG."""
  rows, cols = len(cells), max(len(r) for r in cells)
  width, height = grid_size(rows, cols, cell)
  canvas = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for r, row in enumerate(cells):
    for c, image in enumerate(row):
      tile = _to_pil(image)
      tile = tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)
      x0, y0 = PAD + c * (cell + PAD), PAD + r * (cell + PAD)
      canvas.paste(tile, (x0 + (cell - tile.width) // 2, y0 + (cell - tile.height) // 2))
      colour = frames[r][c] if frames is not None else None
      if colour is not None:
        draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline=colour, width=FRAME)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path, format="PNG")
  return width, height


def augmentation_grid(
  images: Sequence[np.ndarray], views, path: str, *, seed: int = 0
) -> tuple[int, int]:
  """One row per image: its centre view, then one augmented view per ViewSpec in `views`.

  images: uint8 [H, W, C] images (any size); views: the method's `views()` (ViewSpecs).
  Views of different sizes (multi-crop) are drawn at their relative size, before the input
  normalisation (pixels in [0, 1]). Returns (width, height).
  """
  import dataclasses

  import tensorflow as tf  # local: drawing embeddings needs no TensorFlow
  from sslax.data import augment

  views = [dataclasses.replace(v, normalize="none") for v in views]
  largest = max(v.size for v in views)
  scale = cell_size(largest) // largest
  cells = []
  for i, image in enumerate(images):
    made = augment.make_views(tf.constant(image), tf.constant([seed, i], tf.int64), views)
    cells.append(
      [augment.center_view(tf.constant(image), largest).numpy()] + [v.numpy() for v in made]
    )
  return _draw_grid(cells, largest * scale, path, scale)


def pca_2d(features: np.ndarray) -> np.ndarray:
  """[N, D] -> [N, 2]: projection on the two leading principal components (float64 SVD)."""
  x = np.asarray(features, np.float64)
  x = x - x.mean(axis=0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  coords = x @ vt[:2].T
  return coords if coords.shape[1] == 2 else np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def embedding_map(
  features: np.ndarray,
  labels: np.ndarray,
  path: str,
  *,
  num_classes: int,
  class_names: Sequence[str] = (),
  size: int = 512,
  max_points: int = 5000,
  seed: int = 0,
) -> tuple[int, int]:
  """Scatter plot of PCA-projected features, one colour per class, as a size x size PNG.

  features: [N, D]; labels: [N] in [0, num_classes). At most `max_points` (a seeded random
  subset) are drawn. A legend (colour -> class name, or index) sits in the top-left corner.
  """
  features, labels = np.asarray(features), np.asarray(labels)
  if features.shape[0] > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(features.shape[0], max_points, replace=False))
    features, labels = features[keep], labels[keep]
  coords = pca_2d(features)
  margin, radius = 12, 2
  lo, hi = coords.min(axis=0), coords.max(axis=0)
  span = np.where(hi > lo, hi - lo, 1.0)
  pixels = margin + (coords - lo) / span * (size - 2 * margin - 1)
  pixels[:, 1] = size - 1 - pixels[:, 1]  # y grows upwards
  canvas = Image.new("RGB", (size, size), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  colours = class_colours(num_classes)
  for (x, y), label in zip(pixels, labels):
    draw.rectangle([x - radius, y - radius, x + radius, y + radius], fill=colours[int(label)])
  for c in range(min(num_classes, 20)):  # legend: a swatch and the class index per line
    y = 4 + 12 * c
    draw.rectangle([4, y, 12, y + 8], fill=colours[c])
    name = class_names[c] if c < len(class_names) else str(c)
    draw.text((16, y - 2), name[:16], fill=(0, 0, 0))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path, format="PNG")
  return size, size


def retrieval_grid(
  query_images: Sequence[np.ndarray], query_labels, neighbour_images, neighbour_labels, path: str
) -> tuple[int, int]:
  """One row per query: the query (framed black), then its neighbours, best first.

  query_images: [Q] images [S, S, C] (float in [0, 1] or uint8); query_labels: [Q].
  neighbour_images: [Q][k] images; neighbour_labels: [Q, k]. Returns (width, height).
  """
  side = int(np.asarray(query_images[0]).shape[0])
  cell = cell_size(side)
  cells, frames = [], []
  for q, row in enumerate(neighbour_images):
    cells.append([query_images[q]] + list(row))
    frames.append(
      [(0, 0, 0)]
      + [
        (0, 160, 0) if int(l) == int(query_labels[q]) else (220, 0, 0) for l in neighbour_labels[q]
      ]
    )
  return _draw_grid(cells, cell, path, cell // side, frames)
