"""The config schema: every key the trainer reads, its default, and the checks on values.

Config files in configs/ start from `base_config()` and change what they need, so a typo in a
config file or on the command line fails at once instead of being silently ignored.
"""
from __future__ import annotations

import difflib
import re
from typing import Sequence

import ml_collections

from sslax import models, optim


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "simclr"
  c.seed = 0
  c.batch_size = 256              # global batch, over all devices and processes
  c.total_epochs = 100.0          # used when total_steps <= 0
  c.total_steps = 0
  c.dtype = "float32"             # compute dtype; params stay float32
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})

  # Multi-process runs (see sslax/distributed.py): empty = auto-detect a TPU pod / SLURM /
  # Open MPI cluster, else one process. SSLAX_COORDINATOR_ADDRESS etc. override these.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""   # "host:port" of process 0
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  c.distributed.initialization_timeout_s = 300
  c.distributed.auto_initialize = False    # True: jax.distributed.initialize() (TPU pods)

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "fashion_mnist"
  c.dataset.data_dir = ""         # "" = the default search path (see sslax/data/sources.py)
  c.dataset.train_split = "train"
  c.dataset.test_split = "test"
  c.dataset.image_size = 28       # side of the crops fed to the network
  c.dataset.num_train_examples = 0  # 0 = whole split; n = first n (quick runs)
  c.dataset.verify_images = True  # image folders: skip corrupt files up front

  c.augment = ml_collections.ConfigDict()
  c.augment.crop_scale = (0.08, 1.0)
  c.augment.flip_prob = 0.5
  c.augment.jitter_prob = 0.8
  c.augment.jitter_strength = 1.0
  c.augment.grayscale_prob = 0.2
  c.augment.blur_prob = 0.0
  c.augment.solarize_prob = 0.0

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet"
  c.model.depth = 18
  c.model.width = 1.0
  c.model.stem = "small"

  # One section per registered method, e.g. c.simclr.temperature (see Method.default_config).
  from sslax.methods import METHODS
  for name, method_cls in sorted(METHODS.items()):
    c[name] = method_cls.default_config()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "lars"
  c.optimizer.base_lr = 0.3
  c.optimizer.lr_scaling = "linear"   # peak lr = base_lr * batch_size / 256
  c.optimizer.warmup_epochs = 10.0
  c.optimizer.end_lr = 0.0
  c.optimizer.weight_decay = 1e-6
  c.optimizer.momentum = 0.9
  c.optimizer.trust_coefficient = 1e-3
  c.optimizer.grad_clip_norm = 0.0

  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.max_checkpoints_to_keep = 3
  c.async_checkpointing = True

  c.eval = ml_collections.ConfigDict()
  c.eval.at_end = True
  c.eval.batch_size = 512
  c.eval.knn_ks = (20, 200)
  c.eval.knn_temperature = 0.07
  c.eval.linear_epochs = 100
  c.eval.linear_lr = 1e-3
  c.eval.linear_weight_decay = 1e-4
  c.eval.num_train_examples = 0   # 0 = whole train split as kNN bank / probe train set
  c.eval.baselines = True         # also report random-init encoder and raw pixels
  # `python -m sslax.evaluate --protocol ...` (see sslax/evaluate.py):
  c.eval.linear_solver = "adamw"  # adamw | sgd | lars | closed_form (ridge on one-hot targets)
  c.eval.linear_lr_grid = ()      # non-empty: sweep these lrs, pick by held-out val accuracy
  c.eval.linear_val_fraction = 0.1  # train rows held out to pick the lr / ridge strength
  c.eval.ridge_l2_grid = (1e-4, 1e-2, 1.0)
  c.eval.retrieval_ks = (1, 5, 10)
  c.eval.lowshot_fractions = (0.01, 0.1)
  c.eval.lowshot_seed = 0         # the class-balanced label subsets are a function of this
  c.eval.finetune_epochs = 10
  c.eval.finetune_batch_size = 256
  c.eval.finetune_optimizer = "sgd"
  c.eval.finetune_lr = 0.01
  c.eval.finetune_weight_decay = 0.0
  c.eval.finetune_crop_scale = (0.08, 1.0)
  return c


def _leaf_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  paths = []
  for key, value in config.items():
    path = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      paths += _leaf_paths(value, path + ".")
    else:
      paths.append(path)
  return paths


def check_override_keys(config: ml_collections.ConfigDict, argv: Sequence[str],
                        flag: str = "config") -> None:
  """Fails on `--config.some.key=...` flags whose key the config does not have.

  Raises ValueError naming the bad key, close matches, and every valid key.
  """
  valid = _leaf_paths(config)
  pattern = re.compile(rf"^--{re.escape(flag)}\.([A-Za-z0-9_.]+)(=|$)")
  for arg in argv:
    match = pattern.match(arg)
    if not match or match.group(1) in valid:
      continue
    key = match.group(1)
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"Unknown config key --{flag}.{key}.{hint}\nValid keys:\n  "
                     + "\n  ".join(valid))


def check_unknown_keys(config: ml_collections.ConfigDict) -> None:
  """A config file may only use keys base_config() defines (typos fail, not vanish)."""
  base = _leaf_paths(base_config())
  extra = [p for p in _leaf_paths(config) if p not in base
           and not any(p.startswith(section + ".") for section in _FREE_SECTIONS)]
  if extra:
    raise ValueError(f"Config keys {extra} are not known to sslax; valid keys:\n  " + "\n  ".join(base))


# Sections whose keys belong to one method or component and are checked by it, not here.
_FREE_SECTIONS = ("mesh",)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values before anything is compiled; every message names the fix."""
  from sslax.methods import METHODS  # local: methods import models, models import nothing here
  check_unknown_keys(config)
  if config.method not in METHODS:
    raise ValueError(f"Unknown config.method {config.method!r}; choose one of {sorted(METHODS)}.")
  if config.model.name not in models.BACKBONES:
    raise ValueError(f"Unknown config.model.name {config.model.name!r}; choose one of {models.BACKBONES}.")
  if config.model.name == "resnet":
    if config.model.depth not in models.DEPTHS:
      raise ValueError(f"config.model.depth={config.model.depth} is not a ResNet depth; choose one of {models.DEPTHS}.")
    if config.model.stem not in models.STEMS:
      raise ValueError(f"config.model.stem={config.model.stem!r}; choose one of {models.STEMS}.")
  models.get_dtype(config.dtype)
  if config.optimizer.name not in optim.OPTIMIZERS:
    raise ValueError(f"Unknown config.optimizer.name {config.optimizer.name!r}; choose one of {optim.OPTIMIZERS}.")
  if config.optimizer.lr_scaling not in optim.LR_SCALING:
    raise ValueError(f"Unknown config.optimizer.lr_scaling {config.optimizer.lr_scaling!r}; "
                     f"choose one of {optim.LR_SCALING}.")
  from sslax.data import sources
  known = set(sources.DATASETS)
  if config.dataset.name not in known and not _is_tfds_name(config.dataset.name):
    raise ValueError(f"Unknown config.dataset.name {config.dataset.name!r}: not one of "
                     f"{sorted(known)} nor a TFDS dataset name.")
  lo, hi = config.augment.crop_scale
  if not 0 < lo <= hi <= 1:
    raise ValueError(f"config.augment.crop_scale={tuple(config.augment.crop_scale)} must satisfy 0 < lo <= hi <= 1.")
  if config.batch_size <= 0:
    raise ValueError(f"config.batch_size={config.batch_size} must be positive.")
  if config.total_steps <= 0 and config.total_epochs <= 0:
    raise ValueError("Set config.total_steps or config.total_epochs to a positive number.")


def _is_tfds_name(name: str) -> bool:
  import tensorflow_datasets as tfds
  return name.split(":")[0].split("/")[0] in tfds.list_builders()
