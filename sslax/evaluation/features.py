"""Frozen features of a whole split for an `Encoder`, row-sharded, cached in DIR/features/.

`extract_features` and the `FeatureBank` (features [R, D] with rows sharded over the mesh) live
in `sslax.features` (DeepCluster uses them too); `extract_features` is re-exported here for the
evaluation code that calls it by this name.

The cache is one file per process, holding only that process's device blocks (valid rows),
so no process ever reads or writes the whole bank:

  DIR/features/step_<n>_<split>.npz                      one process (`workdir.feature_cache_path`)
  DIR/features/step_<n>_<split>.process<p>of<P>.npz      process p of P

Each file carries its small index as JSON ("index"): the encoder identity (`meta`: dataset,
split, step, model, preprocessing ...), the layout (process count and index, devices, mesh
shape, eval batch, bank rows R), the feature dim and dtype, and each block's rows [start, stop)
with its count of valid rows; the arrays are features [v, D] float32, labels [v] and index [v]
(example ids) of the blocks, concatenated. Files are written atomically (temporary name, then
rename) and read with allow_pickle=False. A cache written with another layout (another process
or device count, eval batch) or for another encoder is re-extracted, with a log line saying why.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from sslax import sharding
from sslax import workdir as workdir_lib
from sslax.data import pipeline, sources
from sslax.features import FeatureBank, assemble_bank, device_blocks, extract_features

__all__ = ["cache_file", "cache_meta", "cached_features", "extract_features", "split_features"]

# Encoders whose features split_features keeps in DIR/features/.
CACHED_ENCODERS = ("pretrained",)
CACHE_FORMAT = 2  # 1: one .npz of the whole gathered split (before the banks were sharded)


def _all_processes(flag: bool) -> bool:
  """True only if `flag` holds on every process (they must agree on whether to extract)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.array([flag]))))


def cache_file(path: str, process_index: int, process_count: int) -> str:
  """This process's cache file for the split cached at `path` (`workdir.feature_cache_path`)."""
  if process_count == 1:
    return path
  stem = path.removesuffix(".npz")
  return f"{stem}.process{process_index}of{process_count}.npz"


def _layout(mesh, num_rows: int, batch_size: int) -> dict:
  """What decides which rows a process holds: the same layout -> the same blocks."""
  return {
    "process_count": jax.process_count(),
    "process_index": jax.process_index(),
    "num_devices": int(mesh.devices.size),
    "mesh_shape": {k: int(v) for k, v in mesh.shape.items()},
    "eval_batch_size": int(batch_size),
    "num_rows": int(num_rows),
  }


def _read(file: str, want: dict) -> tuple[dict, dict] | None:
  """-> (blocks {(start, stop): (features, labels, index)}, index) if `file` holds this
  process's blocks for `want` (meta and layout), else None (with a log line saying why)."""
  try:
    with np.load(file, allow_pickle=False) as f:
      if "index" not in f.files:
        logging.info("Feature cache %s is in an older format; re-extracting.", file)
        return None
      index = json.loads(str(f["index"]))
      if index.get("format") != CACHE_FORMAT or index.get("meta") != want["meta"]:
        logging.info("Feature cache %s is for another encoder or split; re-extracting.", file)
        return None
      if index["layout"] != want["layout"]:
        got, now = index["layout"], want["layout"]
        logging.warning(
          "Feature cache %s was written by process %d of %d over %d devices (mesh %s, eval "
          "batch %d); this run is process %d of %d over %d devices (mesh %s, eval batch %d): "
          "its rows are laid out differently, re-extracting.",
          file,
          got["process_index"],
          got["process_count"],
          got["num_devices"],
          got["mesh_shape"],
          got["eval_batch_size"],
          now["process_index"],
          now["process_count"],
          now["num_devices"],
          now["mesh_shape"],
          now["eval_batch_size"],
        )
        return None
      x, y, i = f["features"], f["labels"], f["index_of_rows"]
      blocks, offset = {}, 0
      for start, stop, valid in index["blocks"]:
        rows = slice(offset, offset + valid)
        blocks[(start, stop)] = (x[rows].astype(np.float32), y[rows].astype(np.int32), i[rows])
        offset += valid
      return blocks, index
  except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable or partial: recompute
    logging.warning("Ignoring unreadable feature cache %s: %s", file, e)
    return None


def _other_layouts(path: str, file: str) -> list[str]:
  """Cache files of this split written with another process count (for the log line)."""
  stem = path.removesuffix(".npz")
  found = [p for p in [path, *glob.glob(glob.escape(stem) + ".process*of*.npz")] if p != file]
  return [p for p in found if os.path.exists(p)]


def cached_features(
  extract: Callable[..., FeatureBank], source, *, path: str | None, meta: dict, mesh, batch_size
) -> FeatureBank:
  """extract(source) -> FeatureBank, computed once and kept in this process's cache file.

  meta (JSON-able: dataset, split, image size, number of examples ...) is the encoder identity
  stored in each file's index; a cache whose meta or layout differs (e.g. a changed
  eval.num_train_examples, or another process count) is recomputed. Every process reads and
  writes only its own file (see the module docstring). path None: no cache.
  """
  if path is None:
    return extract(source)
  num_rows = -(-pipeline.num_examples(source) // batch_size) * batch_size
  want = {
    "format": CACHE_FORMAT,
    "meta": json.loads(json.dumps(meta, sort_keys=True)),
    "layout": _layout(mesh, num_rows, batch_size),
  }
  file = cache_file(path, jax.process_index(), jax.process_count())
  blocks = device_blocks(mesh, num_rows)
  found = None
  if os.path.exists(file):
    found = _read(file, want)
    if found is not None and not set(blocks.values()) <= set(found[0]):
      logging.warning("Feature cache %s lacks this process's rows; re-extracting.", file)
      found = None
  else:
    others = _other_layouts(path, file)
    if others:
      logging.warning(
        "Feature cache %s was written by another process count (this run has %d); "
        "re-extracting into %s.",
        ", ".join(others),
        jax.process_count(),
        file,
      )
  if _all_processes(found is not None):
    stored, index = found
    return assemble_bank(
      mesh,
      num_rows,
      {device: stored[rows] for device, rows in blocks.items()},
      index["num_examples"],
    )
  bank = extract(source)
  _write(file, bank, want)
  return bank


def _write(file: str, bank: FeatureBank, want: dict) -> None:
  """This process's blocks (valid rows) -> `file`, atomically."""
  shards = bank.local_shards()
  index = dict(
    want,
    num_examples=bank.num_examples,
    dim=bank.dim,
    dtype="float32",
    blocks=[[s.rows.start, s.rows.stop, len(s.index)] for s in shards],
  )
  os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
  tmp = f"{file}.tmp{os.getpid()}.npz"  # np.savez adds .npz unless present; rename is atomic
  np.savez(
    tmp,
    features=np.concatenate([s.features for s in shards]),
    labels=np.concatenate([s.labels for s in shards]),
    index_of_rows=np.concatenate([s.index for s in shards]),
    index=np.array(json.dumps(index, sort_keys=True)),
  )
  os.replace(tmp, file)


def cache_meta(enc, config, split: str, num_examples: int = 0) -> dict:
  """The identity a cached split's features are stored under: the encoder (name, step, model,
  preprocessing), the data (dataset, directory, split, row count) and, for the training split
  of a run restricted to a subset (`dataset.subset_*`), that subset: a cache of another subset
  of the same size is not taken for this one (a list file is named by its contents' sha256)."""
  ds = config.dataset
  meta = {
    "encoder": enc.name,
    "dataset": ds.name,
    "data_dir": ds.data_dir,
    "split": split,
    "num_examples": int(num_examples),
    "image_size": int(enc.image_size),
    **enc.preprocessing,
    "seed": int(config.seed),
    "step": int(enc.step),
    "model": json.loads(config.model.to_json_best_effort()),
  }
  subset = sources.subsets.requested(ds, split)  # what sources.load_source restricts it to
  if subset is not None:
    if "file" in subset:
      subset["file_sha256"] = sources.subsets.file_sha256(subset["file"])
    meta["subset"] = subset
  return meta


def split_features(enc, config, workdir: str | None, split: str, num_examples: int = 0):
  """-> (source, FeatureBank) of `enc` on a split of config.dataset, rows sharded over enc.mesh.

  The trained encoder's features are cached in DIR/features/ (`workdir.feature_cache_path`, one
  file per process), so every protocol after the first (and after the end-of-run report) reuses
  them; baselines are recomputed (they are evaluated rarely, and at ImageNet scale each cache is
  ~10 GB). workdir None or remote (gs://): no cache.
  """
  source = sources.load_source(config, split, num_examples)
  path = None
  if workdir is not None and workdir_lib.is_local(workdir) and enc.name in CACHED_ENCODERS:
    path = workdir_lib.feature_cache_path(workdir, enc.step, split, enc.name)
  meta = cache_meta(enc, config, split, num_examples)
  batch_size = config.eval.batch_size
  sharding.check_batch_size(batch_size, enc.mesh, name="eval.batch_size")
  bank = cached_features(
    lambda src: enc.feature_bank(src, batch_size),
    source,
    path=path,
    meta=meta,
    mesh=enc.mesh,
    batch_size=batch_size,
  )
  return source, bank
