"""Exemplar-CNN (Dosovitskiy et al. 2014, "Discriminative Unsupervised Feature Learning with
Convolutional Neural Networks", NIPS; 2016 TPAMI, "... with Exemplar Convolutional Neural
Networks"): every seed image is its own class, a surrogate class made of heavy random
transformations of it, and a parametric classifier learns to tell the classes apart.

Seed images: `exemplar.num_classes` examples of the training split drawn without replacement
with `exemplar.subset_seed` (`Exemplar.training_subset`; the paper: 8000-32000 seed patches
from STL-10's unlabeled images). The trainer's stream draws from these only (`sslax.setup`
restricts the source to them, and the RunInfo's epoch is one pass over them), and an example's
surrogate label is its position in that list, `batch["index"]`. So the seed set needs a
random-access source (in memory, an image folder, record shards); a TFDS stream is refused.

Transformations: the paper's translation and scaling are the view's random crop (crop_scale,
config.augment), its contrast and colour changes the view's colour jitter; its rotation (up to
+-`rotation_degrees`) is applied here, on the device, with a random angle per example
(bilinear, edge pixels repeated). The paper's PCA-based contrast transform is not reproduced;
the configs turn the colour jitter on for every view instead.

Network: the backbone's pooled features -> a linear classifier over the K surrogate classes
(`head_layers` > 1 puts (Dense -> BN -> ReLU) layers in between, like the paper's fc layer),
softmax cross-entropy (`sslax.losses.exemplar`). The classifier kernel [D, K] is one of the
largest arrays of the run at K = 16000 (33M entries behind a ResNet-50): with config.mesh.fsdp
> 1 and model.fsdp_min_size below its size, the FSDP rule (`sslax.sharding.fsdp_spec`) splits
it over the "fsdp" axis along its largest divisible dimension, the class axis whenever K > D
(configs/exemplar_tpu.py shards only this kernel and its optimizer moments).

Metrics: `pretext_accuracy` (on the surrogate classes of the batch), `pretext_chance` (1 / K).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.scipy import ndimage
from jax.sharding import NamedSharding, PartitionSpec as P

from sslax import sharding
from sslax.data.augment import ViewSpec
from sslax.losses.exemplar import exemplar_loss
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.models import BackboneWithHead, ProjectionHead, get_dtype, make_backbone


def seed_indices(num_examples: int, num_classes: int, seed: int) -> np.ndarray:
  """The seed images: `num_classes` distinct indices of [0, num_examples), sorted, drawn with
  `seed` (int64 [num_classes]); entry i is surrogate class i."""
  if not 2 <= num_classes <= num_examples:
    raise ValueError(
      f"config.exemplar.num_classes={num_classes} surrogate classes need as many seed images "
      f"from the {num_examples} training examples (and at least 2); lower num_classes or use "
      "more data."
    )
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_examples, size=num_classes, replace=False)).astype(np.int64)


def rotate(images: jax.Array, angles: jax.Array) -> jax.Array:
  """images [B, H, W, C] rotated about their centres by angles [B] (radians; +pi/2 turns an
  image a quarter turn clockwise as displayed, like np.rot90(image, -1)).

  Bilinear interpolation; pixels that come from outside the image take the nearest edge pixel's
  value (no black corners that would mark a rotated image).
  """
  _, h, w, _ = images.shape
  rows, cols = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
    jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2,
    indexing="ij",
  )

  def one(image, angle):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # The source pixel of each output pixel: the inverse rotation of its coordinates.
    src_rows = cos * rows - sin * cols + (h - 1) / 2
    src_cols = sin * rows + cos * cols + (w - 1) / 2
    channel = lambda x: ndimage.map_coordinates(x, [src_rows, src_cols], order=1, mode="nearest")
    return jax.vmap(channel, in_axes=2, out_axes=2)(image)

  return jax.vmap(one)(images, angles.astype(jnp.float32))


def random_rotation(images: jax.Array, key: jax.Array, max_degrees: float) -> jax.Array:
  """Each image of [B, H, W, C] rotated by its own angle ~ U(-max_degrees, max_degrees)."""
  angles = jax.random.uniform(key, (images.shape[0],), minval=-1.0, maxval=1.0)
  return rotate(images, angles * math.radians(max_degrees))


class Exemplar(Method):
  name = "exemplar"
  provides_probe_features = True  # of the transformed view the loss classifies

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        num_classes=16000,  # surrogate classes = seed images (paper: 8000-32000)
        subset_seed=0,  # which seed images: a function of this seed and the split's size
        rotation_degrees=20.0,  # paper: rotations up to +-20 degrees; 0 turns them off
        head_hidden_dim=512,
        head_layers=1,  # 1: a linear classifier on the pooled features
      )
    )

  @classmethod
  def training_subset(cls, config, num_examples):
    cfg = config.exemplar
    return seed_indices(num_examples, cfg.num_classes, cfg.subset_seed)

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.exemplar
    if cfg.rotation_degrees < 0 or cfg.head_layers < 1:
      raise ValueError(
        f"config.exemplar: rotation_degrees={cfg.rotation_degrees} must be >= 0 and "
        f"head_layers={cfg.head_layers} >= 1."
      )
    if run.num_train_examples != cfg.num_classes:
      raise ValueError(
        f"exemplar trains on its {cfg.num_classes} seed images, but the run's training split "
        f"has {run.num_train_examples} examples; build it with sslax.setup, which restricts "
        "the split to the seed images (Exemplar.training_subset)."
      )

  def views(self):
    return (ViewSpec.from_config(self.config.augment, self.run.image_size),)

  def network(self):
    cfg = self.config.exemplar
    head = ProjectionHead(
      hidden_dim=cfg.head_hidden_dim,
      out_dim=cfg.num_classes,
      num_layers=cfg.head_layers,
      dtype=get_dtype(self.config.dtype),
    )
    return BackboneWithHead(backbone=make_backbone(self.config.model, self.config.dtype), head=head)

  def transform(self, images: jax.Array, rng: jax.Array) -> jax.Array:
    """The on-device part of the transformations: a random rotation per example, drawn for
    the global batch (the same on any number of devices) and kept in the batch sharding."""
    degrees = self.config.exemplar.rotation_degrees
    if degrees == 0:
      return images
    batch_sharded = NamedSharding(self.mesh, P(sharding.BATCH_AXES))
    rotated = random_rotation(images, rng, degrees)
    return jax.lax.with_sharding_constraint(rotated, batch_sharded)

  def loss(self, params, batch_stats, method_state, batch, rng):
    images = self.transform(batch["views"][0], rng)
    (features, logits), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
    )
    loss, metrics = exemplar_loss(logits, batch["index"])
    metrics["pretext_chance"] = jnp.float32(1.0 / self.config.exemplar.num_classes)
    metrics[PROBE_FEATURES] = features
    return loss, (metrics, updates["batch_stats"], method_state)
