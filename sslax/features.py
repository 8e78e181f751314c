"""Features of a whole split through a frozen network, computed on the mesh.

The bottom layer shared by evaluation (frozen-feature protocols, fine-tuning's test pass) and by
methods that embed their own training set (DeepCluster's per-epoch k-means): it needs only the
input pipeline and the mesh helpers, nothing about methods, checkpoints or workdirs.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from sslax import sharding
from sslax.data import pipeline


def extract_features(
  backbone,
  variables,
  source,
  *,
  image_size: int,
  batch_size: int,
  mesh,
  raw_pixels: bool = False,
  crop_fraction: float = 1.0,
  normalize: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
  """-> (features [N, D] float32, labels [N] int32) for every example of `source`, in order.

  backbone: anything with `apply(variables, images [B, S, S, C], train=False) -> [B, D]` (a flax
    module, or an adapter such as an image-text model's image tower); unused with raw_pixels.
  raw_pixels: return the preprocessed pixels, flattened, instead (the "raw pixels" baseline).
  Images are the evaluation view (`pipeline.eval_batches`, `augment.center_view`: with
  crop_fraction 1 the central square resized to `image_size`, with f < 1 the shorter side
  resized to image_size / f and the centre image_size crop; scaled to [0, 1], then normalised
  with `normalize`, as the training views were). Every process gets the full arrays.
  """
  sharding.check_batch_size(batch_size, mesh, name="eval.batch_size")

  @jax.jit
  def encode(images):
    if raw_pixels:
      return images.reshape(images.shape[0], -1)
    return backbone.apply(variables, images, train=False)

  feats, labels, masks = [], [], []
  for local in pipeline.eval_batches(
    source,
    image_size=image_size,
    global_batch=batch_size,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    crop_fraction=crop_fraction,
    normalize=normalize,
  ):
    batch = sharding.make_global_batch(mesh, local)
    out = encode(batch["image"])
    if jax.process_count() > 1:
      out, lab, mask = multihost_utils.process_allgather(
        (out, batch["label"], batch["mask"]), tiled=True
      )
    else:
      lab, mask = batch["label"], batch["mask"]
    feats.append(out)
    labels.append(lab)
    masks.append(mask)
  mask = np.concatenate([np.asarray(m) for m in masks])
  return (
    np.concatenate([np.asarray(f, np.float32) for f in feats])[mask],
    np.concatenate([np.asarray(l) for l in labels])[mask].astype(np.int32),
  )
