"""Masks of the context encoder (Pathak et al. 2016): which pixels the network must fill in.

Masks are boolean, True = hidden (to be predicted). Two kinds, as in the paper:
* "center": one central square, side `round(fraction * S)` (the paper: 1/4 of the area,
  i.e. half the side, for 128 px images).
* "random_blocks": the union of `num_blocks` squares of side `block_size` at uniformly random
  positions, drawn per image from a `jax.random` key (deterministic given the key).
  (The paper's "random region" masks are shapes taken from PASCAL segmentations; random
  blocks are its simpler "random block" variant.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASK_KINDS = ("center", "random_blocks")


def center_box(size: int, fraction: float) -> tuple[int, int]:
  """-> (offset, side) of the central square of an S x S image; side = round(fraction * S)."""
  if not 0 < fraction < 1:
    raise ValueError(
      f"center mask fraction={fraction} must be in (0, 1); the paper hides half the side (0.5)."
    )
  side = max(1, int(round(fraction * size)))
  return (size - side) // 2, side


def center_mask(size: int, fraction: float = 0.5) -> jax.Array:
  """bool [S, S], True on the central square (see `center_box`)."""
  offset, side = center_box(size, fraction)
  inside = (jnp.arange(size) >= offset) & (jnp.arange(size) < offset + side)
  return inside[:, None] & inside[None, :]


def random_block_masks(
  key: jax.Array, batch: int, size: int, *, num_blocks: int, block_size: int
) -> jax.Array:
  """bool [B, S, S]: per image, the union of `num_blocks` squares of side `block_size`."""
  if not 1 <= block_size <= size or num_blocks < 1:
    raise ValueError(
      f"random_blocks needs num_blocks >= 1 (got {num_blocks}) and "
      f"1 <= block_size <= image size {size} (got {block_size})."
    )
  corners = jax.random.randint(key, (batch, num_blocks, 2), 0, size - block_size + 1)
  pos = jnp.arange(size)

  def covered(start):  # [B, n] -> [B, n, S]: which rows (or columns) each block covers
    return (pos >= start[..., None]) & (pos < start[..., None] + block_size)

  rows, cols = covered(corners[..., 0]), covered(corners[..., 1])
  return jnp.any(rows[..., :, None] & cols[..., None, :], axis=1)


def make_masks(
  key: jax.Array,
  batch: int,
  size: int,
  *,
  kind: str,
  fraction: float = 0.5,
  num_blocks: int = 4,
  block_size: int = 8,
) -> jax.Array:
  """bool [B, S, S] masks of `kind` (one of MASK_KINDS)."""
  if kind == "center":
    return jnp.broadcast_to(center_mask(size, fraction), (batch, size, size))
  if kind == "random_blocks":
    return random_block_masks(key, batch, size, num_blocks=num_blocks, block_size=block_size)
  raise ValueError(f"Unknown inpainting mask kind {kind!r}; choose one of {MASK_KINDS}.")


def apply_mask(images: jax.Array, masks: jax.Array, fill_value: float) -> jax.Array:
  """images [B, S, S, C], masks bool [B, S, S] -> images with hidden pixels set to fill_value."""
  return jnp.where(masks[..., None], jnp.asarray(fill_value, images.dtype), images)
