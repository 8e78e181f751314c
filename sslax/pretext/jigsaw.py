"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles").

An image is cut into grid x grid tiles on a jittered grid (`sslax.pretext.patches`: random gaps
between tiles), the tiles are shuffled by one permutation out of a fixed set, and the network
classifies which permutation it was. The set is chosen so that its permutations are far apart
in Hamming distance (a near-duplicate pair would be an ambiguous label).

Permutation set: greedy max-min. Start from one permutation drawn with `seed`; then add, one at
a time, a permutation whose minimum Hamming distance to those already chosen is as large as
possible (ties broken by the seeded generator). The paper's reference code maximises the mean
distance instead; max-min directly bounds the closest pair: the set's minimum pairwise distance
equals the distance at which its last member was added. All (grid^2)! permutations are
enumerated, so grid <= 3.

Convention: with permutation perm, position i of the puzzle holds the tile of cell perm[i].
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from sslax.pretext import patches as patches_lib

MAX_TILES = 9  # 9! = 362,880 candidate permutations; 16! would not fit in memory


@functools.lru_cache(maxsize=4)
def _all_permutations(num_tiles: int) -> np.ndarray:
  """Every permutation of range(num_tiles), lexicographic order: [num_tiles!, num_tiles] int8."""
  return np.array(list(itertools.permutations(range(num_tiles))), dtype=np.int8)


def hamming_permutations(
  num_permutations: int, num_tiles: int = 9, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """The greedy max-min Hamming permutation set (see the module docstring).

  -> (permutations [N, T] int32, selection distances [N] int32), where selection_distances[k]
  is the minimum Hamming distance of permutation k to permutations 0..k-1 (T for k = 0). The
  distances never increase, and the last one is the set's minimum pairwise distance.
  Deterministic given (num_permutations, num_tiles, seed).
  """
  if not 2 <= num_tiles <= MAX_TILES:
    raise ValueError(
      f"num_tiles={num_tiles}: the permutation set enumerates all num_tiles! "
      f"permutations, so use 2 <= num_tiles <= {MAX_TILES} (a grid of 2 or 3)."
    )
  total = math.factorial(num_tiles)
  if not 1 <= num_permutations <= total:
    raise ValueError(
      f"num_permutations={num_permutations} must be between 1 and {num_tiles}! = {total}."
    )
  candidates = _all_permutations(num_tiles)
  rng = np.random.default_rng(seed)
  chosen = [int(rng.integers(total))]
  distances = [num_tiles]
  # min_dist[j]: Hamming distance from candidate j to the nearest chosen permutation (0 once
  # chosen, so a chosen one is never picked again: distinct permutations differ in >= 2 places).
  min_dist = np.sum(candidates != candidates[chosen[0]], axis=1)
  for _ in range(num_permutations - 1):
    best = int(min_dist.max())
    pick = int(rng.choice(np.flatnonzero(min_dist == best)))
    chosen.append(pick)
    distances.append(best)
    min_dist = np.minimum(min_dist, np.sum(candidates != candidates[pick], axis=1))
  return candidates[chosen].astype(np.int32), np.asarray(distances, np.int32)


def tile_offsets(
  key: jax.Array, batch: int, image_size: int, grid: int, tile_size: int
) -> jax.Array:
  """Random top-left corners of every cell's tile: [B, grid^2, 2] int32, cells row-major."""
  cells = jnp.broadcast_to(jnp.arange(grid * grid, dtype=jnp.int32), (batch, grid * grid))
  return patches_lib.jittered_offsets(key, cells, image_size, grid, tile_size)


def jigsaw_puzzles(
  images: jax.Array,
  key: jax.Array,
  permutations: jax.Array,
  grid: int,
  tile_size: int,
  normalize: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """One shuffled puzzle per image.

  images [B, S, S, C], permutations [N, grid^2] int -> (tiles [B, grid^2, t, t, C], labels [B]
  int32 in [0, N)). Position i of puzzle b holds the tile of cell permutations[labels[b], i];
  with `normalize` each tile is standardised on its own (`patches.normalize_patches`).
  """
  batch, size = images.shape[0], images.shape[1]
  if images.ndim != 4 or images.shape[2] != size:
    raise ValueError(f"jigsaw_puzzles needs square images [B, S, S, C], got {images.shape}.")
  if permutations.ndim != 2 or permutations.shape[1] != grid * grid:
    raise ValueError(
      f"permutations of shape {permutations.shape} do not fit a {grid} x {grid} "
      f"grid; build them with hamming_permutations(n, num_tiles={grid * grid})."
    )
  offset_key, label_key = jax.random.split(key)
  labels = jax.random.randint(label_key, (batch,), 0, permutations.shape[0], dtype=jnp.int32)
  tiles = patches_lib.extract_patches(
    images, tile_offsets(offset_key, batch, size, grid, tile_size), tile_size
  )
  order = jnp.asarray(permutations, jnp.int32)[labels]  # [B, T]
  tiles = jnp.take_along_axis(tiles, order[:, :, None, None, None], axis=1)
  return (patches_lib.normalize_patches(tiles) if normalize else tiles), labels
