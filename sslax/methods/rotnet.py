"""RotNet (Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting Image
Rotations"): classify which of 0, 90, 180, 270 degrees an image was rotated by.

Every image of the batch is shown in all four rotations (4B inputs, the paper's best setting:
each rotation's label is balanced within the batch); `rotnet.all_rotations=False` draws one
random rotation per image instead (B inputs). Backbone -> classifier head -> 4 logits, softmax
cross-entropy (`sslax.methods.pretext_base`). Views: one crop per image from `config.augment`
(the paper trains with random crops and flips only); a horizontal flip does not change a
rotation's label.
"""

from __future__ import annotations

import ml_collections

from sslax.methods.pretext_base import PretextMethod
from sslax.pretext import rotation


class RotNet(PretextMethod):
  name = "rotnet"
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        all_rotations=True,  # 4 rotations of every image (4B inputs); False: one random one
        head_hidden_dim=512,
        head_layers=2,  # 1: linear classifier on the pooled features
      )
    )

  def num_classes(self):
    return rotation.NUM_ROTATIONS

  def probe_features(self, features):
    """All rotations: the unrotated input of each image (row 4b); one random rotation: each
    image's rotated input (the only one the loss computes)."""
    if self.config.rotnet.all_rotations:
      return features.reshape(-1, rotation.NUM_ROTATIONS, features.shape[-1])[:, 0]
    return features

  def make_task(self, batch, rng, method_state):
    (images,) = batch["views"]
    if self.config.rotnet.all_rotations:
      rotated, labels = rotation.all_rotations(images)
    else:
      rotated, labels = rotation.random_rotations(images, rng)
    return rotated[:, None], labels
