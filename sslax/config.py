"""The config schema: every key the trainer reads, its default, and the checks on values.

A run's config holds `config.method` and that method's section only (`config.<method>`, from
`Method.default_config()`): `base_config(method)` builds it, `set_method` switches it. Config
files in configs/ start from a preset (sslax/presets.py, built on `base_config`) and change what
they need, so a typo, or another method's key, in a config file or on the command line fails at
once instead of being silently ignored.

Also here: the one override grammar (`apply_overrides`: "--config.a.b=value" or "a.b=value", as
`sslax.main`'s flags) and a run's config rebuilt from its config.json (`config_from_dict`).
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping, Sequence

import ml_collections
from absl import logging

from sslax import models, optim
from sslax.data import augment as augment_lib
from sslax.data import sources
from sslax.methods import METHODS
from sslax.models import vit


class RunConfig(ml_collections.ConfigDict):
  """The top level of a run's config: a ConfigDict whose error for a missing key that is
  another method's section (`config.byol.base_momentum = 0.99` in a SimCLR config file) names
  the run's method and how to switch, instead of ml_collections' bare KeyError('byol')."""

  def _generate_did_you_mean_message(self, request, message=""):
    method = self._fields.get("method")
    if isinstance(request, str) and request in METHODS and request != method:
      return _not_this_run(request, method)
    return super()._generate_did_you_mean_message(request, message)


def base_config(method: str = "simclr") -> ml_collections.ConfigDict:
  """Every key's default, with `method`'s section (config.<method>) and no other method's."""
  _check_method_name(method, METHODS)
  c = RunConfig()
  c.method = method
  c.seed = 0
  c.batch_size = 256  # global batch, over all devices and processes
  c.total_epochs = 100.0  # used when total_steps <= 0
  c.total_steps = 0
  c.dtype = "float32"  # compute dtype; params stay float32
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  # CPU only: split the machine into this many jax devices (XLA_FLAGS
  # --xla_force_host_platform_device_count; sslax.main sets it before jax starts), so the step
  # runs data-parallel over them: small convnets keep the cores busier that way than with one
  # device's intra-op threads (the CPU demo: 2 on 2 cores, ~1.3x). 0: one device. Ignored when
  # XLA_FLAGS already sets the count or an accelerator is present; the math is the
  # single-device math.
  c.cpu_devices = 0

  # Multi-process runs (see sslax/distributed.py): empty = auto-detect a TPU pod / SLURM /
  # Open MPI cluster, else one process. SSLAX_COORDINATOR_ADDRESS etc. override these.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # "host:port" of process 0
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  c.distributed.initialization_timeout_s = 300
  c.distributed.auto_initialize = False  # True: jax.distributed.initialize() (TPU pods)

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "fashion_mnist"
  c.dataset.data_dir = ""  # "" = the default search path (see sslax/data/sources.py)
  c.dataset.train_split = "train"
  c.dataset.test_split = "test"
  c.dataset.image_size = 28  # side of the crops fed to the network
  c.dataset.num_train_examples = 0  # 0 = whole split; n = first n (quick runs)
  # Declared facts of the data, for runs built without it (sslax.setup.build(data_free=True),
  # compile checks): the training split's size and the input channels; 0 = unknown. Training
  # reads both from the data itself.
  c.dataset.train_size = 0
  c.dataset.channels = 0
  c.dataset.verify_images = True  # image folders: skip corrupt files up front
  # Train on part of dataset.train_split (low-shot fine-tuning: configs/lowshot.py), wherever
  # the run reads that split; chosen from labels and file names only (sslax/data/sources/
  # subsets.py). At most one of: subset_fraction f in (0, 1]: a class-balanced f of the labels
  # drawn from subset_seed; subset_file: example names, one per line (SimCLR v2's
  # imagenet_subsets/1percent.txt: n01440764_10026.JPEG), or a JSON {"ids": [...]} file
  # (DIR/lowshot/*.json). 0 / "": the whole split.
  c.dataset.subset_fraction = 0.0
  c.dataset.subset_seed = 0
  c.dataset.subset_file = ""
  # Image-text datasets (sslax/data/image_text.py) and `--protocol zero_shot`:
  c.dataset.zero_shot_dataset = (
    ""  # labelled dataset whose class names are prompted; "" = dataset.name
  )
  c.dataset.zero_shot_split = "test"
  c.dataset.zero_shot_templates = ("a photo of a {label}.",)  # prompt ensemble (CLIP sec. 3.1.4)

  # Text tower of the image-text methods (clip, siglip; sslax/models/text.py). Tokens are
  # UTF-8 bytes (sslax/data/text.py): context_length counts bytes + start + end token.
  c.text = ml_collections.ConfigDict()
  c.text.context_length = 77
  c.text.width = 512
  c.text.depth = 12
  c.text.heads = 8
  c.text.causal = True  # CLIP: causal mask, pooled at the end-of-text token
  c.text.pooling = "eot"  # eot | mean (over non-padding tokens)

  c.augment = ml_collections.ConfigDict()
  c.augment.crop_scale = (0.08, 1.0)
  # Side in px of the two training views of the two-view methods (augment.CROP_SIZE_METHODS,
  # ResNet backbones); 0: dataset.image_size. Evaluation stays at dataset.image_size, so a
  # convnet can train on smaller crops at ~crop_size^2 of the cost (the CPU demo: 20 of 28 px).
  c.augment.crop_size = 0
  c.augment.flip_prob = 0.5
  c.augment.jitter_prob = 0.8
  c.augment.jitter_strength = 1.0
  c.augment.grayscale_prob = 0.2
  c.augment.blur_prob = 0.0
  c.augment.solarize_prob = 0.0
  # Colour jitter ranges one by one (torchvision's ColorJitter(brightness, contrast,
  # saturation, hue)); None: from jitter_strength s as SimCLR (0.8 s, 0.8 s, 0.8 s, 0.2 s).
  c.augment.brightness = None
  c.augment.contrast = None
  c.augment.saturation = None
  c.augment.hue = None
  # Input normalisation (x - mean) / std, last step of training and evaluation views alike:
  # none | imagenet | swav | clip (sslax.data.augment.NORMALIZATIONS).
  c.augment.normalize = "none"

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet"  # resnet | vit
  # model.name = "resnet":
  c.model.depth = 18
  c.model.width = 1.0  # channel multiplier
  c.model.stem = "small"
  # model.name = "vit" (sslax/models/vit.py):
  c.model.variant = "S"  # Ti | S | B | L (widths 192/384/768/1024) | custom
  c.model.hidden_size = 0  # nonzero overrides the variant's width ("custom": required)
  c.model.num_layers = 0  # nonzero overrides the variant's depth ("custom": required)
  c.model.num_heads = 0  # nonzero overrides the variant's heads ("custom": required)
  c.model.mlp_dim = 0  # 0 = 4 * hidden size
  c.model.patch_size = 16  # 4 | 8 | 14 | 16 | 32; must divide dataset.image_size
  c.model.posemb = "learn"  # learn | sincos2d (fixed, as MAE / MoCo v3)
  c.model.pool = "cls"  # cls (class token) | gap (mean of the patch tokens)
  c.model.class_token = True  # learn: with its own learned position embedding (timm, DINO, CLIP)
  c.model.drop_path_rate = 0.0  # stochastic depth of the last block (linear from 0)
  c.model.drop_path_uniform = False  # True: drop_path_rate in every block (DINOv2)
  c.model.remat_policy = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
  c.model.scan = False  # nn.scan over blocks (params stacked on a [depth] axis)
  # DINOv2's ViT options (all off: the plain ViT). LayerScale gain init (0: none; DINOv2 1e-5);
  # register tokens after the class token (DINOv2 "with registers": 4); feed-forward mlp | swiglu;
  # a learned mask token that `masks=` puts in masked patches (iBOT / DINOv2 students: True, and
  # the teacher too, as it is the same network).
  c.model.layerscale_init = 0.0
  c.model.num_registers = 0
  c.model.ffn = "mlp"
  c.model.mask_token = False
  # BEiT's shared relative position bias (sslax/models/vit.py): none | shared; with "shared",
  # posemb may be "none" (BEiT v2 pretraining has no absolute position embeddings).
  c.model.rel_pos_bias = "none"
  # jax.nn.dot_product_attention's implementation: xla (every platform) | cudnn (NVIDIA GPUs,
  # bfloat16: cuDNN's fused attention; benchmarks/device_check.py measures both).
  c.model.attention = "xla"
  # Any model: with config.mesh.fsdp > 1, params (and their optimizer state) with at least this
  # many elements are sharded over the "fsdp" mesh axis (sslax/sharding.py); the rest replicated.
  c.model.fsdp_min_size = 2**14

  # The method's own section, e.g. c.simclr.temperature (see Method.default_config).
  c[method] = METHODS[method].default_config()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "lars"
  c.optimizer.base_lr = 0.3
  c.optimizer.lr_scaling = "linear"  # peak lr = base_lr * batch_size / 256
  c.optimizer.warmup_epochs = 10.0
  c.optimizer.warmup_start_lr = 0.0  # lr at step 0 (not batch-scaled); SwAV's start_warmup: 0.3
  c.optimizer.end_lr = 0.0
  # Step decay instead of cosine (InstDisc, CMC): () = cosine to end_lr; epochs (0-based) at
  # whose first step the lr is multiplied by lr_decay_factor, e.g. (120, 160).
  c.optimizer.lr_decay_epochs = ()
  c.optimizer.lr_decay_factor = 0.1
  c.optimizer.weight_decay = 1e-6
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False  # sgd: Nesterov momentum (SimCLR / BYOL linear evaluation)
  c.optimizer.trust_coefficient = 1e-3
  # Biases and norm params (sslax.optim.is_bias_or_norm): excluded from weight decay and LARS
  # adaptation (True: SimCLR, BYOL, Barlow Twins, DINO) or not (False: PyTorch's plain
  # weight_decay in MoCo v2, SimSiam, MoCo v3's AdamW; SwAV's LARC); their lr is
  # bias_lr_ratio x the weights' (Barlow Twins: 0.0048 / 0.2).
  c.optimizer.exclude_bias_and_norm = True
  c.optimizer.bias_lr_ratio = 1.0
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.grad_clip_mode = "global"  # global | per_param (DINO) | per_module (DINOv2)
  c.optimizer.b1 = 0.9  # adamw betas (read by sslax/optim.py; CLIP uses b2 = 0.98)
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8  # adamw epsilon (open_clip: 1e-6 for ViT towers)

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
  c.eval.num_train_examples = 0  # 0 = whole train split as kNN bank / probe train set
  # Evaluation view (sslax.data.augment.center_view): 1.0 = the whole (central square of the)
  # image resized to dataset.image_size (28-32 px data); f < 1 = resize the shorter side to
  # image_size / f, then centre-crop image_size (ImageNet: 0.875, 256 -> 224).
  c.eval.crop_fraction = 1.0
  c.eval.baselines = True  # also report random-init encoder and raw pixels
  # `python -m sslax.evaluate --protocol ...` (see sslax/evaluate.py):
  c.eval.linear_solver = "adamw"  # adamw | sgd | lars | closed_form (ridge on one-hot targets)
  c.eval.linear_lr_grid = ()  # non-empty: sweep these lrs, pick by held-out val accuracy
  c.eval.linear_val_fraction = 0.1  # train rows held out to pick the lr / ridge strength
  c.eval.ridge_l2_grid = (1e-4, 1e-2, 1.0)
  c.eval.retrieval_ks = (1, 5, 10)
  c.eval.lowshot_fractions = (0.01, 0.1)
  c.eval.lowshot_seed = 0  # the class-balanced label subsets are a function of this
  # Subset list files for `--protocol lowshot` instead of the fractions (the same formats as
  # dataset.subset_file: SimCLR v2's imagenet_subsets/1percent.txt, 10percent.txt).
  c.eval.lowshot_files = ()
  c.eval.finetune_epochs = 10
  c.eval.finetune_batch_size = 256
  c.eval.finetune_optimizer = "sgd"
  c.eval.finetune_lr = 0.01
  c.eval.finetune_weight_decay = 0.0
  c.eval.finetune_crop_scale = (0.08, 1.0)
  # MAE's fine-tuning recipe (sslax/evaluation/finetune.py); the defaults leave it off.
  c.eval.finetune_layer_decay = 1.0  # lr of layer i x decay^(L+1-i); MAE ViT-B: 0.65
  c.eval.finetune_label_smoothing = 0.0  # MAE: 0.1
  c.eval.finetune_warmup_epochs = 0.0  # MAE: 5
  c.eval.finetune_drop_path_rate = 0.0  # ViT stochastic depth while fine-tuning; MAE ViT-B: 0.1
  c.eval.finetune_b2 = 0.999  # AdamW beta2 while fine-tuning
  # A fresh LayerNorm on the pooled features before the head (MAE's global-pool `fc_norm`).
  c.eval.finetune_fc_norm = False

  # Online linear probe (sslax/online_probe.py): a linear head on the method's stop-gradient
  # backbone features, trained with the labels during pretraining and logged as
  # online_probe_top1 / online_probe_loss. auto: on when the training source has labels and
  # the method gives its features; on: the same, but fail when it cannot run; off: never.
  # The method's loss, gradients and params are bit-for-bit the same either way.
  c.online_probe = ml_collections.ConfigDict()
  c.online_probe.mode = "auto"  # auto | on | off
  c.online_probe.lr = 0.1  # x global batch / 256, warmup + cosine as the run (solo-learn)
  c.online_probe.momentum = 0.9  # SGD momentum (solo-learn's default)
  return c


def set_method(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Switches `config` to method `name`, in place; returns it.

  Sets config.method and replaces the previous method's section with config.<name> holding
  that method's defaults (every other key is kept).
  """
  _check_method_name(name, METHODS)
  with config.unlocked():
    for key in [k for k in config.keys() if k in METHODS]:
      del config[key]
    config.method = name
    config[name] = METHODS[name].default_config()
  return config


def _check_method_name(name, methods) -> None:
  if name not in methods:
    raise ValueError(f"Unknown config.method {name!r}; choose one of {sorted(methods)}.")


def _not_this_run(section: str, method: str) -> str:
  """The message for another method's key: names the active method and how to switch."""
  return (
    f"config.{section} is not part of this run: config.method is {method!r}, and a run's "
    f"config holds only its own method's section (config.{method}). To train {section}, start "
    f"from a {section} config (configs/{section}_*.py) or, in Python, call "
    f"sslax.config.set_method(config, {section!r}), which replaces config.{method} with "
    f"{section}'s defaults."
  )


def _leaf_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  paths = []
  for key, value in config.items():
    path = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      paths += _leaf_paths(value, path + ".")
    else:
      paths.append(path)
  return paths


def check_override_keys(
  config: ml_collections.ConfigDict, argv: Sequence[str], flag: str = "config"
) -> None:
  """Fails on `--config.some.key=...` flags whose key the config does not have.

  Raises ValueError naming the bad key, close matches, and every valid key; for another
  method's key (`--config.byol.base_momentum` on a SimCLR run), or `--config.method=<other>`,
  it names the run's method and how to switch instead.
  """
  valid = _leaf_paths(config)
  pattern = re.compile(rf"^--{re.escape(flag)}\.([A-Za-z0-9_.]+)(=|$)")
  for i, arg in enumerate(argv):
    match = pattern.match(arg)
    if not match:
      continue
    key = match.group(1)
    if key == "method":
      value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else None)
      if value is not None and value != config.method:
        _check_method_name(value, METHODS)
        raise ValueError(
          f"--{flag}.method={value}: an override cannot switch the method: "
          + _not_this_run(value, config.method)
        )
    if key in valid:
      continue
    section = key.split(".")[0]
    if section in METHODS and section != config.method:
      raise ValueError(f"--{flag}.{key}: " + _not_this_run(section, config.method))
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
      f"Unknown config key --{flag}.{key}.{hint}\nValid keys:\n  " + "\n  ".join(valid)
    )


def check_unknown_keys(config: ml_collections.ConfigDict) -> None:
  """A config may only use keys base_config(config.method) defines (typos fail, not vanish).

  It holds config.method's section and no other method's: a section of another method fails
  naming the run's method and `set_method`.
  """
  method = config.get("method")
  _check_method_name(method, METHODS)
  sections = [k for k in config.keys() if k in METHODS]
  others = [k for k in sections if k != method]
  if others and method not in sections:
    raise ValueError(
      f"config.method is {method!r} but the config holds config.{others[0]} (the section of "
      f"{others[0]!r}), not config.{method}: switch methods with "
      f"sslax.config.set_method(config, {method!r}), which replaces the section with "
      f"{method}'s defaults, not by assigning config.method."
    )
  if others:
    raise ValueError(_not_this_run(others[0], method))
  if method not in sections:
    raise ValueError(
      f"config.method is {method!r} but the config has no config.{method} section; build it "
      f"with sslax.config.base_config({method!r}) (or a preset in sslax.presets), or call "
      f"sslax.config.set_method(config, {method!r})."
    )
  base = _leaf_paths(base_config(method))
  extra = [
    p
    for p in _leaf_paths(config)
    if p not in base and not any(p.startswith(section + ".") for section in _FREE_SECTIONS)
  ]
  if extra:
    raise ValueError(
      f"Config keys {extra} are not known to sslax; valid keys:\n  " + "\n  ".join(base)
    )


# Sections whose keys belong to one method or component and are checked by it, not here.
_FREE_SECTIONS = ("mesh",)

# Keys of a config.json that describe the file, not the run (sslax/workdir.py writes them).
_METADATA_KEYS = ("sslax_version",)


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
    if text.lower() in ("true", "t", "1", "yes"):  # absl's boolean flags: true/t/1, false/f/0
      return True
    if text.lower() in ("false", "f", "0", "no"):
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
  """Applies "key.path=value" (or "--config.key.path=value") strings in place; returns config.

  Values are Python literals coerced to the key's type: "--config.eval.knn_ks=5,50" -> (5, 50);
  strings are taken as written; booleans are true/false/1/0/yes/no. Unknown keys, another
  method's keys and a different config.method fail as in `check_override_keys`.
  """
  pairs = []
  for item in overrides:
    item = item.removeprefix("--config.")
    if "=" not in item:
      raise ValueError(f"Override {item!r} must look like key.path=value.")
    key, text = item.split("=", 1)
    pairs.append((key, text))
  check_override_keys(config, [f"--config.{k}={v}" for k, v in pairs])
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


def config_from_dict(values: Mapping) -> ml_collections.ConfigDict:
  """A run's config rebuilt from its config.json dict: base_config(values["method"]) updated.

  Old run dirs' config.json hold every method's section: the run's own is kept, the others are
  dropped. Keys unknown to this sslax version are logged and ignored.
  """
  method = values.get("method", "simclr")
  if method not in METHODS:
    raise ValueError(
      f"config.json's method {method!r} is not known to this sslax version; "
      f"known methods: {sorted(METHODS)}."
    )
  config = base_config(method)
  _update_from_dict(
    config,
    {
      k: v
      for k, v in values.items()
      if (k not in METHODS or k == method) and k not in _METADATA_KEYS
    },
  )
  return config


def _update_from_dict(node: ml_collections.ConfigDict, values: Mapping, path: str = "") -> None:
  for key, value in values.items():
    if key not in node:
      if path.rstrip(".") in _FREE_SECTIONS:  # free-form sections keep every key
        node[key] = value
      else:
        logging.warning(
          "config.json key %s%s is not known to this sslax version; ignored.", path, key
        )
      continue
    if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _update_from_dict(node[key], value, f"{path}{key}.")
    else:
      node[key] = _coerce(value, node[key]) if value is not None else value


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values before anything is compiled; every message names the fix."""
  _check_method_name(config.method, METHODS)
  check_unknown_keys(config)
  if config.model.name not in models.BACKBONES:
    raise ValueError(
      f"Unknown config.model.name {config.model.name!r}; choose one of {models.BACKBONES}."
    )
  if config.model.name == "resnet":
    if config.model.depth not in models.DEPTHS:
      raise ValueError(
        f"config.model.depth={config.model.depth} is not a ResNet depth; choose one of {models.DEPTHS}."
      )
    if config.model.stem not in models.STEMS:
      raise ValueError(f"config.model.stem={config.model.stem!r}; choose one of {models.STEMS}.")
  if config.model.name == "vit":
    _validate_vit(config)
  models.get_dtype(config.dtype)
  if config.optimizer.name not in optim.OPTIMIZERS:
    raise ValueError(
      f"Unknown config.optimizer.name {config.optimizer.name!r}; choose one of {optim.OPTIMIZERS}."
    )
  if config.optimizer.grad_clip_mode not in optim.GRAD_CLIP_MODES:
    raise ValueError(
      f"Unknown config.optimizer.grad_clip_mode {config.optimizer.grad_clip_mode!r}; "
      f"choose one of {optim.GRAD_CLIP_MODES}."
    )
  if config.optimizer.lr_scaling not in optim.LR_SCALING:
    raise ValueError(
      f"Unknown config.optimizer.lr_scaling {config.optimizer.lr_scaling!r}; "
      f"choose one of {optim.LR_SCALING}."
    )
  decay_epochs = tuple(config.optimizer.get("lr_decay_epochs", ()) or ())
  if any(e <= 0 for e in decay_epochs) or not 0 < config.optimizer.get("lr_decay_factor", 0.1):
    raise ValueError(
      f"config.optimizer.lr_decay_epochs={decay_epochs} must be positive epochs and "
      f"lr_decay_factor={config.optimizer.get('lr_decay_factor')} positive (e.g. (120, 160) "
      "and 0.1: lr x0.1 at epochs 120 and 160)."
    )
  known = set(sources.DATASETS)
  if config.dataset.name not in known and not _is_tfds_name(config.dataset.name):
    raise ValueError(
      f"Unknown config.dataset.name {config.dataset.name!r}: not one of "
      f"{sorted(known)} nor a TFDS dataset name."
    )
  lo, hi = config.augment.crop_scale
  if not 0 < lo <= hi <= 1:
    raise ValueError(
      f"config.augment.crop_scale={tuple(config.augment.crop_scale)} must satisfy 0 < lo <= hi <= 1."
    )
  _validate_augment(config.augment)
  _validate_crop_size(config)
  if not 0 < config.eval.crop_fraction <= 1:
    raise ValueError(
      f"config.eval.crop_fraction={config.eval.crop_fraction} must be in (0, 1]: 1.0 for "
      f"28-32 px data (the whole image), 0.875 for ImageNet-size data (resize 256, crop 224)."
    )
  if config.batch_size <= 0:
    raise ValueError(f"config.batch_size={config.batch_size} must be positive.")
  if config.cpu_devices < 0:
    raise ValueError(
      f"config.cpu_devices={config.cpu_devices} must be >= 0 (0: one CPU device, n: the CPU "
      "split into n data-parallel devices)."
    )
  if config.total_steps <= 0 and config.total_epochs <= 0:
    raise ValueError("Set config.total_steps or config.total_epochs to a positive number.")


def _validate_crop_size(config: ml_collections.ConfigDict) -> None:
  """augment.crop_size: 0, or training crops for a ResNet of a method that reads it."""
  size = config.augment.crop_size
  if not isinstance(size, int) or isinstance(size, bool) or size < 0:
    raise ValueError(
      f"config.augment.crop_size={size!r} must be 0 (train at dataset.image_size) or a side in px."
    )
  if not size or size == config.dataset.image_size:
    return
  if config.method not in augment_lib.CROP_SIZE_METHODS:
    raise ValueError(
      f"config.augment.crop_size={size}: method {config.method!r} trains at its own crop sizes; "
      f"crop_size is read by {augment_lib.CROP_SIZE_METHODS}. Leave it 0."
    )
  if config.model.name != "resnet":
    raise ValueError(
      f"config.augment.crop_size={size} with a {config.model.name!r} backbone: only a convnet "
      "can train at one size and be evaluated at another (a ViT's position embeddings fix its "
      "grid). Leave it 0, or change dataset.image_size."
    )


def _validate_augment(augment: ml_collections.ConfigDict) -> None:
  if augment.normalize not in augment_lib.NORMALIZATIONS:
    raise ValueError(
      f"config.augment.normalize={augment.normalize!r}; choose one of "
      f"{tuple(augment_lib.NORMALIZATIONS)}."
    )
  try:
    augment_lib.jitter_ranges(
      augment.jitter_strength, augment.brightness, augment.contrast, augment.saturation, augment.hue
    )
  except ValueError as e:
    raise ValueError(f"config.augment: {e}") from None


def _validate_vit(config: ml_collections.ConfigDict) -> None:
  m = config.model
  vit.vit_dims(m.variant, m.hidden_size, m.num_layers, m.num_heads)  # raises with the fix
  if m.patch_size not in vit.PATCH_SIZES:
    raise ValueError(f"config.model.patch_size={m.patch_size}; choose one of {vit.PATCH_SIZES}.")
  size = config.dataset.image_size
  if size % m.patch_size:
    divisors = [p for p in vit.PATCH_SIZES if size % p == 0]
    raise ValueError(
      f"config.dataset.image_size={size} is not divisible by "
      f"config.model.patch_size={m.patch_size}; use a patch size from {divisors} "
      f"or an image size that is a multiple of {m.patch_size}."
    )
  for key, allowed in (
    ("posemb", vit.POSEMBS),
    ("rel_pos_bias", vit.REL_POS_BIASES),
    ("pool", vit.POOLS),
    ("remat_policy", tuple(vit.REMAT_POLICIES)),
  ):
    if m[key] not in allowed:
      raise ValueError(f"config.model.{key}={m[key]!r}; choose one of {allowed}.")
  if m.get("attention", "xla") not in vit.ATTENTIONS:  # .get: configs written before it existed
    raise ValueError(
      f"config.model.attention={m.attention!r}; choose one of {vit.ATTENTIONS} (cudnn: NVIDIA "
      "GPUs with bfloat16 compute only)."
    )
  if m.pool == "cls" and not m.class_token:
    raise ValueError(
      "config.model.pool='cls' needs config.model.class_token=True; or set config.model.pool='gap'."
    )
  if m.posemb == "none" and m.rel_pos_bias == "none":
    raise ValueError(
      "config.model.posemb='none' leaves the ViT without positions: set "
      "config.model.rel_pos_bias='shared' (BEiT v2) or posemb 'learn' / 'sincos2d'."
    )
  if not 0 <= m.drop_path_rate < 1:
    raise ValueError(f"config.model.drop_path_rate={m.drop_path_rate} must be in [0, 1).")
  if m.ffn not in vit.FFNS:
    raise ValueError(f"config.model.ffn={m.ffn!r}; choose one of {vit.FFNS}.")
  if not m.layerscale_init >= 0:
    raise ValueError(
      f"config.model.layerscale_init={m.layerscale_init} must be >= 0 (0: no LayerScale; "
      "DINOv2: 1e-5)."
    )
  if not isinstance(m.num_registers, int) or m.num_registers < 0:
    raise ValueError(
      f"config.model.num_registers={m.num_registers!r} must be an integer >= 0 (DINOv2: 0 or 4)."
    )


def _is_tfds_name(name: str) -> bool:
  """Whether TFDS knows `name`. Where tensorflow_datasets is not installed (a jax-only machine
  compiling a step data-free) the name cannot be checked here: it passes, and opening the dataset
  fails later with the missing import."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    return True
  return name.split(":")[0].split("/")[0] in tfds.list_builders()
