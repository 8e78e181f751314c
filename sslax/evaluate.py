"""Evaluate a trained workdir: python -m sslax.evaluate --workdir DIR --protocol NAME.

Protocols (see sslax/evaluation/runner.py):
  knn        weighted kNN on frozen features (--k 20,200 --temperature 0.07)
  linear     linear probe on frozen features: AdamW, SGD or LARS with an lr sweep picked on a
             held-out val split (--solver sgd --lr_grid 0.01,0.1,1), or closed-form ridge
             (--solver closed_form)
  finetune   backbone + linear head fine-tuned end to end on all train labels
  lowshot    the same on class-balanced 1% / 10% label subsets (--fractions 0.01,0.1); the
             chosen ids are saved to DIR/lowshot/
  retrieval  test images as queries against the train gallery (cosine): mAP, precision@k
  pictures   PNGs in DIR/pictures/: augmented views, PCA map of test features, retrieval grid
  zero_shot  image-text models (clip, siglip): prompt-ensemble zero-shot accuracy on
             dataset.zero_shot_dataset (templates: dataset.zero_shot_templates), vs random init
  image_text_retrieval  image-text models: image->text and text->image Recall@1/5/10 on the
             held-out pairs of dataset.test_split, vs random init

The run's config is rebuilt from DIR/config.json (written by the trainer); any key can be
overridden with --config.<key>=<value> (e.g. --config.eval.knn_temperature=0.1). The newest
checkpoint is evaluated; frozen features are cached in DIR/features/step_<n>_<split>.npz and
reused; each run appends {protocol, step, timestamp, config, results} to DIR/results.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections
from absl import logging


def _coerce(value, like):
  """`value` converted to the type of the config's current value `like`."""
  if isinstance(like, tuple):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)
  if isinstance(like, bool):
    return bool(value)
  if isinstance(like, float) and isinstance(value, int):
    return float(value)
  return value


def _parse_value(text: str, like):
  if isinstance(like, str):
    return text
  if isinstance(like, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true/false, got {text!r}")
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"cannot parse {text!r} as a Python literal") from None
  return _coerce(value, like)


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
  """Applies "key.path=value" (or "--config.key.path=value") strings; unknown keys fail.

  Values are Python literals coerced to the key's type: "--config.eval.knn_ks=5,50" -> (5, 50).
  """
  from sslax import config as config_lib

  pairs = []
  for item in overrides:
    item = item[len("--config.") :] if item.startswith("--config.") else item
    if "=" not in item:
      raise ValueError(f"Override {item!r} must look like key.path=value.")
    key, text = item.split("=", 1)
    pairs.append((key, text))
  config_lib.check_override_keys(config, [f"--config.{k}=" for k, _ in pairs])
  for key, text in pairs:
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    try:
      node[leaf] = _parse_value(text, node[leaf])
    except (ValueError, TypeError) as e:
      raise ValueError(f"--config.{key}={text}: {e}") from None
  return config


def _update_from_json(node: ml_collections.ConfigDict, values: dict, path: str = "") -> None:
  for key, value in values.items():
    if key not in node:
      if path.rstrip(".") in ("mesh",):  # free-form sections keep every key
        node[key] = value
      else:
        logging.warning(
          "config.json key %s%s is not known to this sslax version; ignored.", path, key
        )
      continue
    if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _update_from_json(node[key], value, f"{path}{key}.")
    else:
      node[key] = _coerce(value, node[key]) if value is not None else value


def load_config(workdir: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The run's config: base_config() updated with DIR/config.json, then `overrides`."""
  from sslax import config as config_lib

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} does not exist: --workdir must be a directory written by "
      f"the trainer (python -m sslax.main --mode train)."
    )
  with open(path) as f:
    values = json.load(f)
  config = config_lib.base_config()
  _update_from_json(config, values)
  return apply_overrides(config, overrides)


def restore_encoder(config: ml_collections.ConfigDict, workdir: str, devices=None):
  """-> runner.Encoder for DIR's newest checkpoint (its backbone, on a mesh over `devices`)."""
  from sslax import checkpoint, config as config_lib, sharding
  from sslax.evaluation import runner
  from sslax.methods import get_method

  config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.check_batch_size(config.eval.batch_size, mesh, name="eval.batch_size")
  try:
    tree, step = checkpoint.load_numpy(workdir)
  except FileNotFoundError:
    raise FileNotFoundError(
      f"No checkpoint in {os.path.join(workdir, 'checkpoints')} to "
      f"evaluate; train first (python -m sslax.main --mode train)."
    ) from None
  method = get_method(config.method)(config, mesh)
  variables = {"params": tree["params"]["backbone"]}
  if tree.get("batch_stats") and "backbone" in tree["batch_stats"]:
    variables["batch_stats"] = tree["batch_stats"]["backbone"]
  _check_matches_config(method.network().backbone, variables, config, workdir, step)
  return runner.Encoder(
    config=config,
    mesh=mesh,
    method=method,
    backbone=method.network().backbone,
    variables=variables,
    step=step,
  )


def _check_matches_config(backbone, variables, config, workdir, step):
  """The checkpoint's backbone must have exactly the shapes the config's model builds."""
  import jax
  import jax.numpy as jnp

  size = config.dataset.image_size
  for channels in (1, 3):  # the input's channel count only changes the stem's kernel
    expected = jax.eval_shape(
      lambda: backbone.init(jax.random.key(0), jnp.zeros((1, size, size, channels)), train=False)
    )
    want = {
      "/".join(str(k.key) for k in path): tuple(x.shape)
      for path, x in jax.tree_util.tree_leaves_with_path(dict(expected))
    }
    got = {
      "/".join(str(k.key) for k in path): tuple(x.shape)
      for path, x in jax.tree_util.tree_leaves_with_path(variables)
    }
    if want == got:
      return
  missing = sorted(set(want) - set(got))[:3]
  extra = sorted(set(got) - set(want))[:3]
  differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
  raise ValueError(
    f"The checkpoint at step {step} in {workdir} does not match the config's model "
    f"({config.model.to_dict()}): missing {missing}, unexpected {extra}, different shapes "
    f"{[(k, got[k], want[k]) for k in differ]}. Evaluate with the run's own config.json "
    f"(drop --config.model.* overrides) or point --workdir at the matching run."
  )


def evaluate(
  workdir: str,
  protocol: str,
  *,
  config: ml_collections.ConfigDict | None = None,
  overrides: Sequence[str] = (),
) -> dict:
  """Runs `protocol` on DIR's newest checkpoint and appends its record to DIR/results.json.

  config: use this config instead of DIR/config.json (sslax.main passes its --config).
  Returns the record {"protocol", "step", "timestamp", "config", "results", ...}.
  """
  from sslax.evaluation import runner

  runner.check_protocol(protocol)
  config = load_config(workdir, overrides) if config is None else apply_overrides(config, overrides)
  runner.check_eval_config(config)
  t0 = time.perf_counter()
  enc = restore_encoder(config, workdir)
  results = runner.run_protocol(enc, workdir, protocol)
  record = runner.protocol_record(enc, protocol, results, time.perf_counter() - t0)
  runner.append_record(workdir, record)
  return record


def _list(cast):
  return lambda text: tuple(cast(v) for v in text.split(",") if v.strip())


def parse_args(argv: Sequence[str]):
  """-> (argparse namespace, config override strings)."""
  from sslax.evaluation import runner

  parser = argparse.ArgumentParser(
    prog="python -m sslax.evaluate",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--workdir", required=True, help="A directory written by the trainer.")
  parser.add_argument("--protocol", required=True, choices=runner.PROTOCOLS)
  parser.add_argument(
    "--k", type=_list(int), help="kNN: neighbour counts, e.g. 20,200 (eval.knn_ks)."
  )
  parser.add_argument(
    "--temperature", type=float, help="kNN vote temperature (eval.knn_temperature)."
  )
  parser.add_argument(
    "--solver",
    choices=("adamw", "sgd", "lars", "closed_form"),
    help="Linear probe solver (eval.linear_solver).",
  )
  parser.add_argument(
    "--lr_grid",
    type=_list(float),
    help="Linear probe lr sweep, e.g. 0.01,0.1,1 (eval.linear_lr_grid).",
  )
  parser.add_argument(
    "--fractions",
    type=_list(float),
    help="Low-shot label fractions, e.g. 0.01,0.1 (eval.lowshot_fractions).",
  )
  args, rest = parser.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments: {' '.join(bad)} (config keys go as --config.key=value)")
  flags_to_keys = {
    "k": "eval.knn_ks",
    "temperature": "eval.knn_temperature",
    "solver": "eval.linear_solver",
    "lr_grid": "eval.linear_lr_grid",
    "fractions": "eval.lowshot_fractions",
  }
  overrides = list(rest)
  for flag, key in flags_to_keys.items():
    value = getattr(args, flag)
    if value is not None:
      overrides.append(f"{key}={value!r}" if not isinstance(value, str) else f"{key}={value}")
  return args, overrides


def main(argv: Sequence[str] | None = None) -> int:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # the input pipeline only: keep it off accelerators

  tf.config.set_visible_devices([], "GPU")
  try:
    config = load_config(args.workdir, overrides)
    from sslax import distributed

    distributed.initialize(config.distributed)  # before anything touches devices
    record = evaluate(args.workdir, args.protocol, config=config)
  except (NotImplementedError, FileNotFoundError, ValueError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  print(json.dumps({k: record[k] for k in ("protocol", "step", "results")}, indent=2), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
