"""Rotation prediction (Gidaris et al. 2018, "Unsupervised Representation Learning by
Predicting Image Rotations"): the label of an image rotated by k * 90 degrees is k.

Rotation k turns the image k quarter turns counter-clockwise in the (row, column) plane, the
same as `np.rot90(image, k)` on an [H, W, C] image. Images must be square, so that every
rotation has the input's shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_ROTATIONS = 4


def _check_square(images: jax.Array) -> None:
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(
      f"rotation needs square images [B, S, S, C], got shape {images.shape}; "
      f"make the view square (ViewSpec.size) before rotating."
    )


def all_rotations(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Every image in all four rotations (the paper's best setting).

  images: [B, S, S, C] -> (rotated [4B, S, S, C], labels [4B] int32). Row 4b + k is image b
  rotated k quarter turns. Rows of one image stay together, so a batch sharded over devices
  stays local (no resharding).
  """
  _check_square(images)
  rotated = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)], axis=1)
  labels = jnp.tile(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), images.shape[0])
  return rotated.reshape(-1, *images.shape[1:]), labels


def random_rotations(images: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One uniformly drawn rotation per image: [B, S, S, C] -> ([B, S, S, C], labels [B] int32)."""
  _check_square(images)
  labels = jax.random.randint(key, (images.shape[0],), 0, NUM_ROTATIONS, dtype=jnp.int32)
  rotated = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)], axis=1)
  return jnp.take_along_axis(rotated, labels[:, None, None, None, None], axis=1)[:, 0], labels
