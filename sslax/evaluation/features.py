"""Frozen features of a whole split for an `Encoder`, cached in DIR/features/.

`extract_features` itself lives in `sslax.features` (DeepCluster uses it too); it is re-exported
here for the evaluation code that calls it by this name.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from sslax import workdir as workdir_lib
from sslax.data import sources
from sslax.features import extract_features

__all__ = ["cached_features", "extract_features", "split_features"]

# Encoders whose features split_features keeps in DIR/features/.
CACHED_ENCODERS = ("pretrained",)


def _all_processes(flag: bool) -> bool:
  """True only if `flag` holds on every process (they must agree on whether to extract)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.array([flag]))))


def cached_features(
  extract: Callable, source, *, path: str | None, meta: dict
) -> tuple[np.ndarray, np.ndarray]:
  """extract(source) -> (features [N, D], labels [N]), computed once and kept in `path` (.npz).

  meta (JSON-able: dataset, split, image size, number of examples ...) is stored beside the
  arrays; a cache whose meta differs (e.g. a changed eval.num_train_examples) is recomputed.
  Read with allow_pickle=False, so a cache file cannot run code. Process 0 writes.
  path None: no cache.
  """
  if path is None:
    return extract(source)
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
  x, y = extract(source)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"  # np.savez adds .npz unless present; rename makes the write atomic
    np.savez(tmp, features=x, labels=y, meta=np.array(want))
    os.replace(tmp, path)
  return x, y


def split_features(enc, config, workdir: str | None, split: str, num_examples: int = 0):
  """-> (source, features [N, D], labels [N]) of `enc` on a split of config.dataset.

  The trained encoder's features are cached in DIR/features/ (`workdir.feature_cache_path`),
  so every protocol after the first (and after the end-of-run report) reuses them; baselines
  are recomputed (they are evaluated rarely, and at ImageNet scale each cache is ~10 GB).
  workdir None or remote (gs://): no cache.
  """
  source = sources.load_source(config, split, num_examples)
  path = None
  if workdir is not None and workdir_lib.is_local(workdir) and enc.name in CACHED_ENCODERS:
    path = workdir_lib.feature_cache_path(workdir, enc.step, split, enc.name)
  meta = {
    "encoder": enc.name,
    "dataset": config.dataset.name,
    "data_dir": config.dataset.data_dir,
    "split": split,
    "num_examples": int(num_examples),
    "image_size": int(enc.image_size),
    **enc.preprocessing,
    "seed": int(config.seed),
    "step": int(enc.step),
    "model": json.loads(config.model.to_json_best_effort()),
  }
  x, y = cached_features(
    lambda src: enc.features(src, config.eval.batch_size), source, path=path, meta=meta
  )
  return source, x, y
