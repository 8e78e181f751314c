"""Frozen-backbone features of a whole split, computed on the mesh, and their on-disk cache."""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from sslax import sharding
from sslax.data import pipeline


def extract_features(
  backbone, variables, source, *, image_size: int, batch_size: int, mesh, raw_pixels: bool = False
) -> tuple[np.ndarray, np.ndarray]:
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
  for local in pipeline.eval_batches(
    source,
    image_size=image_size,
    global_batch=batch_size,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
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


def cache_path(workdir: str, step: int, split: str) -> str:
  """Where the features of checkpoint `step` on `split` are cached: DIR/features/step_<n>_<split>.npz."""
  safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in split)
  return os.path.join(workdir, "features", f"step_{int(step)}_{safe}.npz")


def _all_processes(flag: bool) -> bool:
  """True only if `flag` holds on every process (they must agree on whether to extract)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.array([flag]))))


def cached_features(
  extract: Callable, source, *, path: str, meta: dict
) -> tuple[np.ndarray, np.ndarray]:
  """extract(source) -> (features [N, D], labels [N]), computed once and kept in `path` (.npz).

  meta (JSON-able: dataset, split, image size, number of examples ...) is stored beside the
  arrays; a cache whose meta differs (e.g. a changed eval.num_train_examples) is recomputed.
  Read with allow_pickle=False, so a cache file cannot run code. Process 0 writes.
  """
  want = json.dumps(meta, sort_keys=True)
  cached = None
  if os.path.exists(path):
    try:
      with np.load(path, allow_pickle=False) as f:
        if str(f["meta"]) == want:
          cached = (f["features"].astype(np.float32), f["labels"].astype(np.int32))
    except (OSError, ValueError, KeyError) as e:  # unreadable or partial: recompute
      logging.warning("Ignoring unreadable feature cache %s: %s", path, e)
  if _all_processes(cached is not None):
    return cached
  features, labels = extract(source)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"  # np.savez adds .npz unless present; rename makes the write atomic
    np.savez(tmp, features=features, labels=labels, meta=np.array(want))
    os.replace(tmp, path)
  return features, labels
