"""Jigsaw (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles"): classify which permutation of a fixed set shuffled an image's 3 x 3 tiles.

Task (`sslax.pretext.jigsaw.jigsaw_puzzles`): the view of side `dataset.image_size` is cut into
grid x grid cells; a tile of side `tile_size` is taken at a random offset in each cell (random
gaps, so edges do not line up across tiles), each tile is standardised on its own (so that
brightness and contrast, which vary smoothly over an image, do not give the position away),
and the tiles are reordered by one of `num_permutations` permutations.

Permutation set: greedy max-min Hamming distance (`hamming_permutations`), a deterministic
function of (num_permutations, grid, permutation_seed). It is built once in `init_state` and
kept in `method_state["permutations"]`, so it is saved in every checkpoint and a resumed or
evaluated run uses exactly the set it was trained with; the loss reads it from there.

Network: the backbone embeds every tile (shared weights, the paper's siamese "context-free
network"), the grid^2 feature vectors are concatenated in puzzle order and an MLP head gives
the permutation logits. `network.backbone` embeds whole images for evaluation. Because
`dataset.image_size` is also the side at which evaluation embeds images, tiles and evaluation
images share one pixel scale (the Fashion-MNIST config upsamples 28 px images to 48 px:
16 px cells, 12 px tiles).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections

from sslax.methods.pretext_base import PretextMethod
from sslax.pretext import jigsaw, patches


@functools.lru_cache(maxsize=4)
def _permutation_set(num_permutations: int, num_tiles: int, seed: int):
  return jigsaw.hamming_permutations(num_permutations, num_tiles, seed)[0]


class Jigsaw(PretextMethod):
  name = "jigsaw"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        grid=3,  # grid x grid tiles (2 or 3)
        tile_size=12,  # side of each tile; cells are dataset.image_size // grid
        num_permutations=100,  # size of the permutation set (the paper's best: 1000)
        permutation_seed=0,  # the set is a function of (num_permutations, grid, this)
        normalize_tiles=True,
        head_hidden_dim=512,
        head_layers=2,
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.jigsaw
    if cfg.grid not in (2, 3):
      raise ValueError(
        f"config.jigsaw.grid={cfg.grid}; use 2 or 3 (the permutation set is "
        f"chosen among all (grid^2)! permutations)."
      )
    # Fails here, before anything is compiled, if the tiles do not fit the grid.
    patches.cell_origins(config.dataset.image_size, cfg.grid, cfg.tile_size)

  def permutations(self):
    """The permutation set of this config: [num_permutations, grid^2] int32 (NumPy)."""
    cfg = self.config.jigsaw
    return _permutation_set(cfg.num_permutations, cfg.grid * cfg.grid, cfg.permutation_seed)

  def num_classes(self):
    return self.config.jigsaw.num_permutations

  def input_shape(self, image_size, channels):
    cfg = self.config.jigsaw
    return (cfg.grid * cfg.grid, cfg.tile_size, cfg.tile_size, channels)

  def init_state(self, rng, variables):
    return {"permutations": jnp.asarray(self.permutations())}

  def make_task(self, batch, rng, method_state):
    (images,) = batch["views"]
    cfg = self.config.jigsaw
    return jigsaw.jigsaw_puzzles(
      images,
      rng,
      method_state["permutations"],
      cfg.grid,
      cfg.tile_size,
      normalize=cfg.normalize_tiles,
    )
