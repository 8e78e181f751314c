"""The workdir layout, owned here and nowhere else.

  DIR/config.json      the run's resolved config + "sslax_version" of the writer (`write_config`,
                       read back by `load_config`)
  DIR/checkpoints/     orbax checkpoints (sslax/checkpoint.py)
  DIR/metrics.jsonl    one JSON line per log step (the trainer)
  DIR/results.json     evaluation records, in the schema below (`read_results`, `append_record`)
  DIR/features/        frozen features of the trained encoder, cached per checkpoint step and
                       split (`feature_cache_path`): step_<n>_<split>.npz
  DIR/lowshot/, DIR/pictures/   files written by those evaluation protocols (`output_dir`)

results.json, schema version 2 (RESULTS_SCHEMA_VERSION): every evaluation, the end-of-run
report included, appends one record to a list; nothing is overwritten.

  {
    "schema_version": 2,
    "evaluations": [                         # oldest first
      {
        "protocol": "report",                # "report" (kNN + linear probe, what sslax.main
                                             # prints) or a protocol: knn, linear, finetune, ...
        "step": 900,                         # checkpoint step of the trained encoder
        "timestamp": "2026-11-29T18:00:00+0000",
        "method": "simclr", "dataset": "fashion_mnist",
        "eval_seconds": 61.2,
        "sslax_version": "0.2.0",            # of the evaluating code
        "config": {...},                     # the config evaluated with (JSON)
        "results": {                         # encoder name -> that encoder's metrics
          "pretrained":  {"knn_top1_k20": 0.85, "knn_top1_k200": 0.82, "linear_top1": 0.85,
                          "feature_dim": 64},
          "random_init": {...},              # baselines, when config.eval.baselines
          "raw_pixels":  {...}
        }
      }
    ]
  }

Accuracies are fractions in [0, 1]. Results files of earlier versions (the end-of-run report
at the top level, per-protocol records with unkeyed results) are read into this schema by
`read_results` and rewritten in it on the next append.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Sequence

import ml_collections

from sslax import __version__
from sslax import config as config_lib

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
CHECKPOINTS_DIR = "checkpoints"
FEATURES_DIR = "features"
VERSION_KEY = "sslax_version"
RESULTS_SCHEMA_VERSION = 2
# The encoders a record's results are keyed by (in table order); see sslax/evaluation/encoder.py.
ENCODER_NAMES = ("pretrained", "random_init", "raw_pixels")


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def results_path(workdir: str) -> str:
  return os.path.join(workdir, RESULTS_FILE)


def checkpoints_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS_DIR)


def output_dir(workdir: str, name: str) -> str:
  """DIR/<name>/: where a protocol writes its files (lowshot subsets, pictures)."""
  return os.path.join(workdir, name)


def feature_cache_path(workdir: str, step: int, split: str, encoder: str = "pretrained") -> str:
  """DIR/features/step_<n>_<split>.npz (the trained encoder at checkpoint step n), or
  DIR/features/<encoder>_<split>.npz for a baseline encoder (its features do not change with
  the step)."""
  safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in split)
  name = f"step_{int(step)}_{safe}" if encoder == "pretrained" else f"{encoder}_{safe}"
  return os.path.join(workdir, FEATURES_DIR, f"{name}.npz")


# ------------------------------------------------------------------------------------------
# Checks: each fails with the fix before anything is read, trained or evaluated.
# ------------------------------------------------------------------------------------------


def is_local(workdir: str) -> bool:
  """False for a remote workdir (gs://...): no local checks or caches there."""
  return "://" not in workdir


def _is_remote(workdir: str) -> bool:
  return not is_local(workdir)


def check_is_directory(workdir: str) -> None:
  if not _is_remote(workdir) and os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(
      f"--workdir {workdir} is a file, not a directory; point --workdir at a new or existing "
      f"run directory."
    )


def _can_write(directory: str) -> bool:
  """A file can be created in `directory` (tried: permission bits do not bind root)."""
  if not os.access(directory, os.W_OK):
    return False
  try:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".sslax_write_test"):
      return True
  except OSError:
    return False


def check_writable(workdir: str) -> None:
  """`workdir` (or, if it does not exist yet, its nearest existing parent) accepts new files."""
  if _is_remote(workdir):
    return
  check_is_directory(workdir)
  parent = os.path.abspath(workdir)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise NotADirectoryError(
      f"--workdir {workdir} is inside {parent}, which is a file, not a directory; choose "
      f"another --workdir."
    )
  if not _can_write(parent):
    what = (
      "is not writable" if parent == os.path.abspath(workdir) else f"cannot be created in {parent}"
    )
    raise PermissionError(
      f"--workdir {workdir} {what} (no permission, or a read-only file system); choose a "
      f"--workdir you can write to."
    )


def check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
  """If `workdir` holds a run (config.json), it must be of config's method and model."""
  path = config_path(workdir)
  if _is_remote(workdir) or not os.path.exists(path):
    return
  with open(path) as f:
    previous = json.load(f)
  mine = {"method": config.method, "model": config.model.to_dict()}
  theirs = {"method": previous.get("method"), "model": previous.get("model")}
  if mine["method"] != theirs["method"] or _differs(mine["model"], theirs["model"]):
    raise ValueError(
      f"--workdir {workdir} holds a run of method {theirs['method']!r} with model "
      f"{theirs['model']}; this config is {mine['method']!r} with model {mine['model']}. "
      f"Use a new --workdir, or the run's own config (python -m sslax.evaluate --workdir "
      f"{workdir} rebuilds it from {CONFIG_FILE})."
    )


def check_for_training(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Fails with the fix when `workdir` cannot hold this run: a file, not writable, or a run of
  another method or model (resuming it would restore the wrong state)."""
  check_is_directory(workdir)
  check_writable(workdir)
  check_same_run(workdir, config)


def check_for_evaluation(workdir: str, config: ml_collections.ConfigDict | None = None) -> None:
  """`workdir` is a run directory (config.json), writable (results and feature caches go
  there) and, when `config` is given, a run of config's method and model."""
  check_is_directory(workdir)
  if not _is_remote(workdir) and not os.path.exists(config_path(workdir)):
    raise FileNotFoundError(
      f"{config_path(workdir)} does not exist: --workdir must be a directory written by "
      f"the trainer (python -m sslax.main --config ... --workdir DIR)."
    )
  check_writable(workdir)
  if config is not None:
    check_same_run(workdir, config)


def _differs(mine: dict, theirs: dict | None) -> bool:
  if not isinstance(theirs, dict):
    return True
  return any(k in theirs and _jsonable(theirs[k]) != _jsonable(v) for k, v in mine.items())


def _jsonable(value):
  return json.loads(json.dumps(value, default=list))


# ------------------------------------------------------------------------------------------
# config.json
# ------------------------------------------------------------------------------------------


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """DIR/config.json: the resolved config and the sslax version that wrote it."""
  os.makedirs(workdir, exist_ok=True)
  values = json.loads(config.to_json_best_effort())
  values[VERSION_KEY] = __version__
  with open(config_path(workdir), "w") as f:
    json.dump(values, f, indent=2)


def _writer(values: dict) -> str:
  version = values.get(VERSION_KEY)
  if version is None:
    return "sslax 0.1.0 or earlier (its config.json has no sslax_version key)"
  return f"sslax {version}"


def load_config(workdir: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The run's config: DIR/config.json (also one written by an earlier sslax version, with
  every method's section), then `overrides` ("--config.a.b=value" or "a.b=value").

  The one reader of a run's config (sslax.evaluate, sslax.export, sslax.main). Fails with the
  fix on a workdir that is a file or holds no run, and, naming the sslax version that wrote
  it, on a config.json this version cannot read.
  """
  check_is_directory(workdir)
  path = config_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} does not exist: --workdir must be a directory written by the trainer "
      f"(python -m sslax.main --config ... --workdir DIR)."
    )
  try:
    with open(path) as f:
      values = json.load(f)
    if not isinstance(values, dict):
      raise ValueError(f"expected a JSON object, got {type(values).__name__}")
  except ValueError as e:
    raise ValueError(f"{path} is not a config written by sslax: {e}") from None
  try:
    config = config_lib.config_from_dict(values)
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(
      f"{path} was written by {_writer(values)} and cannot be read by sslax {__version__}: "
      f"{e}. Evaluate it with the version that trained it, or rebuild the config: "
      f"python -m sslax.main --config configs/<recipe>.py --workdir {workdir} --mode evaluate."
    ) from None
  return config_lib.apply_overrides(config, overrides)


# ------------------------------------------------------------------------------------------
# results.json
# ------------------------------------------------------------------------------------------

# Protocols whose (pre-schema-2) records already keyed their results by encoder.
_KEYED_BY_ENCODER = ("report", "zero_shot", "image_text_retrieval")


def _keyed_by_encoder(protocol: str, results) -> bool:
  if not isinstance(results, dict) or not results:
    return False
  if protocol in _KEYED_BY_ENCODER:
    return True
  return all(k in ENCODER_NAMES and isinstance(v, dict) for k, v in results.items())


def _as_record(record: dict) -> dict:
  """A record of any schema version -> schema 2 (results keyed by encoder name)."""
  record = dict(record)
  results = record.get("results", {})
  if not _keyed_by_encoder(record.get("protocol", ""), results):
    record["results"] = {"pretrained": results}
  return record


def normalize_results(obj: dict) -> dict:
  """The contents of a results.json of any schema version -> schema 2."""
  if not obj:
    return {"schema_version": RESULTS_SCHEMA_VERSION, "evaluations": []}
  if obj.get("schema_version", 1) > RESULTS_SCHEMA_VERSION:
    raise ValueError(
      f"results.json has schema_version {obj['schema_version']}, newer than this sslax "
      f"({__version__}) reads ({RESULTS_SCHEMA_VERSION}); use a newer sslax."
    )
  records = [_as_record(r) for r in obj.get("evaluations", [])]
  if "results" in obj and "step" in obj:  # schema 1: the end-of-run report at the top level
    top = {k: v for k, v in obj.items() if k != "evaluations"}
    records.insert(0, _as_record(dict(top, protocol="report")))
  return {"schema_version": RESULTS_SCHEMA_VERSION, "evaluations": records}


def read_results(workdir: str) -> dict:
  """DIR/results.json in the schema above ({"schema_version": 2, "evaluations": []} if none)."""
  path = results_path(workdir)
  if not os.path.exists(path):
    return normalize_results({})
  with open(path) as f:
    return normalize_results(json.load(f))


def latest_record(results: dict, protocol: str | None = None) -> dict | None:
  """The newest record (of `protocol`, if given) in `results` (from `read_results`)."""
  for record in reversed(results["evaluations"]):
    if protocol is None or record.get("protocol") == protocol:
      return record
  return None


def append_record(workdir: str, record: dict) -> dict:
  """Adds `record` to DIR/results.json (rewriting an older schema in this one); returns the
  file's new contents. Only the calling process writes: call it on process 0."""
  results = read_results(workdir)
  results["evaluations"].append(_as_record(record))
  os.makedirs(workdir, exist_ok=True)
  write_json(results_path(workdir), results)
  return results


def write_json(path: str, obj) -> None:
  """Writes `obj` to `path` atomically: a crash never leaves a half-written file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)
