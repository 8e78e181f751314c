"""Relative patch position (Doersch et al. 2015, "Unsupervised Visual Representation Learning
by Context Prediction"): given the centre patch of a 3 x 3 grid and one of its 8 neighbours,
classify where the neighbour lies.

Task (`sslax.pretext.patches.relative_patch_pairs`): patches of side `patch_size` on a jittered
3 x 3 grid over the view (random gaps between patches), each patch standardised on its own.
Network: the backbone embeds both patches (shared weights), the two feature vectors are
concatenated (centre first) and an MLP head gives 8 logits, as the paper's late-fusion
architecture (fc6 per patch, fc7 and fc8 on the pair). Chromatic aberration (the paper's
colour-fringe shortcut) does not exist in grey images and is not removed; the paper's random
down-sampling of some patches is not done.

`network.backbone` embeds whole images for evaluation; `dataset.image_size` is both the side of
the view the patches are cut from and the side of the images the evaluation embeds, so both
see the same pixel scale (the Fashion-MNIST config upsamples 28 px images to 48 px).
"""

from __future__ import annotations

import ml_collections

from sslax.methods.pretext_base import PretextMethod
from sslax.pretext import patches


class RelativePatch(PretextMethod):
  name = "relative_patch"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        patch_size=12,  # side of each patch; cells are dataset.image_size // 3
        normalize_patches=True,  # per-patch zero mean, unit variance
        head_hidden_dim=512,
        head_layers=2,
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    # Fails here, before anything is compiled, if the patches do not fit the grid.
    patches.cell_origins(
      config.dataset.image_size, patches.RELATIVE_GRID, config.relative_patch.patch_size
    )

  def num_classes(self):
    return patches.NUM_POSITIONS

  def input_shape(self, image_size, channels):
    p = self.config.relative_patch.patch_size
    return (2, p, p, channels)

  def make_task(self, batch, rng, method_state):
    (images,) = batch["views"]
    cfg = self.config.relative_patch
    return patches.relative_patch_pairs(
      images, rng, cfg.patch_size, normalize=cfg.normalize_patches
    )
