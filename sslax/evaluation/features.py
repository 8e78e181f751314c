"""Frozen-backbone features of a whole split, computed on the mesh."""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from sslax import sharding
from sslax.data import pipeline


def extract_features(backbone, variables, source, *, image_size: int, batch_size: int, mesh,
                     raw_pixels: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """-> (features [N, D] float32, labels [N] int32) for every example of `source`, in order.

  backbone: a module mapping images [B, S, S, C] -> [B, D] with `train=False`.
  raw_pixels: return the preprocessed pixels, flattened, instead (the "raw pixels" baseline).
  Every process gets the full arrays.
  """
  sharding.check_batch_size(batch_size, mesh, name="eval.batch_size")

  @jax.jit
  def encode(images):
    if raw_pixels:
      return images.reshape(images.shape[0], -1)
    return backbone.apply(variables, images, train=False)

  feats, labels, masks = [], [], []
  for local in pipeline.eval_batches(source, image_size=image_size, global_batch=batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
    batch = sharding.make_global_batch(mesh, local)
    out = encode(batch["image"])
    if jax.process_count() > 1:
      out, lab, mask = multihost_utils.process_allgather((out, batch["label"], batch["mask"]), tiled=True)
    else:
      lab, mask = batch["label"], batch["mask"]
    feats.append(out)
    labels.append(lab)
    masks.append(mask)
  mask = np.concatenate([np.asarray(m) for m in masks])
  return (np.concatenate([np.asarray(f, np.float32) for f in feats])[mask],
          np.concatenate([np.asarray(l) for l in labels])[mask].astype(np.int32))
