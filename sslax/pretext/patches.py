"""Patches on a jittered grid, and relative patch position (Doersch et al. 2015, "Unsupervised
Visual Representation Learning by Context Prediction").

The image is divided into a grid x grid array of square cells of side S // grid (the grid is
centred; leftover border pixels are never used). Each patch of side p lies inside its own
cell at a random offset in [0, cell - p] along each axis, so two neighbouring patches are
separated by a random gap of 0 to 2 (cell - p) pixels: the gap and the jitter keep the network
from matching edges or continuing lines across patch borders (the low-level shortcuts the
paper warns about). Jigsaw (`sslax.pretext.jigsaw`) cuts its tiles the same way.

Relative position: the centre patch of a 3 x 3 grid and one of its 8 neighbours; the label is
the neighbour's index in `NEIGHBOUR_CELLS` (row-major order, centre skipped):

    0 1 2
    3 . 4
    5 6 7

Chromatic aberration (the paper's other shortcut, removed there by projecting out green-magenta)
does not apply to grey images and is not handled here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

RELATIVE_GRID = 3
CENTRE_CELL = 4
NEIGHBOUR_CELLS = (0, 1, 2, 3, 5, 6, 7, 8)  # row-major cell index of each label
NUM_POSITIONS = len(NEIGHBOUR_CELLS)


def cell_origins(image_size: int, grid: int, patch_size: int) -> tuple[np.ndarray, int]:
  """-> (top-left corner of every cell [grid^2, 2] (row, col), row-major; max jitter cell - p).

  A patch in cell i may start anywhere in origins[i] + [0, max_jitter] along each axis.
  """
  cell = image_size // grid
  if grid < 1 or patch_size < 1 or patch_size > cell:
    raise ValueError(
      f"patch_size={patch_size} does not fit a {grid} x {grid} grid on {image_size} px images "
      f"(cells of {cell} px); use 1 <= patch_size <= image_size // grid, or larger images."
    )
  margin = (image_size - grid * cell) // 2
  rows, cols = np.divmod(np.arange(grid * grid), grid)
  return np.stack([margin + rows * cell, margin + cols * cell], axis=1).astype(
    np.int32
  ), cell - patch_size


def jittered_offsets(
  key: jax.Array, cells: jax.Array, image_size: int, grid: int, patch_size: int
) -> jax.Array:
  """Random top-left corners of patches inside the given cells.

  cells: [B, P] int cell indices (row-major) -> offsets [B, P, 2] int32 (row, col).
  """
  origins, max_jitter = cell_origins(image_size, grid, patch_size)
  jitter = jax.random.randint(key, (*cells.shape, 2), 0, max_jitter + 1, dtype=jnp.int32)
  return jnp.asarray(origins)[cells] + jitter


def extract_patches(images: jax.Array, offsets: jax.Array, patch_size: int) -> jax.Array:
  """images [B, S, S, C], offsets [B, P, 2] (row, col) -> patches [B, P, p, p, C]."""
  channels = images.shape[-1]

  def one(image, corner):
    return jax.lax.dynamic_slice(
      image, (corner[0], corner[1], 0), (patch_size, patch_size, channels)
    )

  return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(images, offsets)


def normalize_patches(patches: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Each patch to zero mean and unit variance over its pixels and channels, [..., p, p, C].

  Done per patch so that the absolute brightness or contrast of a patch (which varies
  smoothly across the image) cannot tell where it came from. A flat patch becomes all zeros.
  """
  mean = jnp.mean(patches, axis=(-3, -2, -1), keepdims=True)
  var = jnp.var(patches, axis=(-3, -2, -1), keepdims=True)
  return (patches - mean) * jax.lax.rsqrt(var + eps)


def relative_patch_pairs(
  images: jax.Array, key: jax.Array, patch_size: int, normalize: bool = True
) -> tuple[jax.Array, jax.Array]:
  """Centre patch and one random neighbour of a jittered 3 x 3 grid, per image.

  images [B, S, S, C] -> (pairs [B, 2, p, p, C] (centre first), labels [B] int32 in [0, 8)).
  """
  batch, size = images.shape[0], images.shape[1]
  if images.ndim != 4 or images.shape[2] != size:
    raise ValueError(f"relative_patch_pairs needs square images [B, S, S, C], got {images.shape}.")
  label_key, jitter_key = jax.random.split(key)
  labels = jax.random.randint(label_key, (batch,), 0, NUM_POSITIONS, dtype=jnp.int32)
  neighbour = jnp.asarray(NEIGHBOUR_CELLS, jnp.int32)[labels]
  cells = jnp.stack([jnp.full_like(neighbour, CENTRE_CELL), neighbour], axis=1)  # [B, 2]
  offsets = jittered_offsets(jitter_key, cells, size, RELATIVE_GRID, patch_size)
  pairs = extract_patches(images, offsets, patch_size)
  return (normalize_patches(pairs) if normalize else pairs), labels
