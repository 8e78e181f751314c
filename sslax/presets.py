"""Presets: the blocks that the recipes in configs/ share, each returning a full run config.

A config file is its docstring (command, runtime on named hardware, accuracy) + a preset + the
lines that make its recipe:

  def get_config():
    config = presets.fashion_mnist_cpu("byol")
    config.byol.base_momentum = 0.99
    return config

Each preset starts from `sslax.config.base_config(method)`, so the config holds `method`'s
section only.
"""

from __future__ import annotations

import ml_collections

from sslax import workdir as workdir_lib
from sslax.config import base_config
from sslax.data.sources import subsets

# Backbones by name: the keys of config.model each one sets (the rest keep their defaults).
CPU_BACKBONES = {
  # ResNet-10 at 1/4 width, small-image stem: 128-d features. Chosen by measurement on 2 CPU
  # cores (benchmarks/results/demo.md): ResNet-18 x1/4 runs 280 img/s and ResNet-18
  # x1/8 660 img/s but its 64-d features probe worse; ResNet-10 x1/4 at ~500 img/s learned the
  # most per minute. Wider nets are far slower on XLA:CPU.
  "resnet10": dict(name="resnet", depth=10, width=0.25, stem="small"),
  # ViT width 128, depth 4, 4 heads, patch 4: 7 x 7 = 49 tokens at 28 px.
  "vit_tiny": dict(
    name="vit", variant="custom", hidden_size=128, num_layers=4, num_heads=4, patch_size=4
  ),
}
IMAGENET_BACKBONES = {
  "resnet50": dict(name="resnet", depth=50, width=1.0, stem="imagenet"),
  "vit_s16": dict(name="vit", variant="S", patch_size=16),
  "vit_b16": dict(name="vit", variant="B", patch_size=16),
  "vit_b32": dict(name="vit", variant="B", patch_size=32),
  "vit_l16": dict(name="vit", variant="L", patch_size=16),
}


def fashion_mnist_cpu(method: str, backbone: str = "resnet10") -> ml_collections.ConfigDict:
  """The CPU recipe block every configs/*_fashion_mnist.py starts from, for `method` (the
  README demo, configs/simclr_fashion_mnist.py, then trains 3000 steps of batch 64 on 20 px
  crops to fit its time budget).

  Fashion-MNIST at 28 px, batch 256, 900 steps (~3.8 epochs of the 60k training images), the
  `backbone` of CPU_BACKBONES, AdamW at lr 2e-3 (no batch scaling), weight decay 1e-4, half an
  epoch of warmup; a log line every 50 steps, a checkpoint every 500.
  """
  config = base_config(method)
  config.dataset.name = "fashion_mnist"
  config.dataset.image_size = 28
  config.batch_size = 256
  config.total_steps = 900
  _set_backbone(config, CPU_BACKBONES, backbone)
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.5
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config


def imagenet_tpu(method: str, backbone: str = "resnet50") -> ml_collections.ConfigDict:
  """ImageNet-1k on a TPU pod for `method`: the common block of the *_tpu.py recipes.

  TFDS `imagenet2012` (train / validation) at 224 px, bfloat16 compute (params stay float32),
  the `backbone` of IMAGENET_BACKBONES; a log line every 100 steps, a checkpoint every 1000,
  evaluation in batches of 1024 on the resize-256 / centre-crop-224 view (eval.crop_fraction
  0.875) without the random-init / raw-pixel baselines. Batch size,
  length, augmentation and optimizer are the recipe's (the schema's defaults: batch 256,
  100 epochs, SimCLR's LARS).
  """
  config = base_config(method)
  config.dataset.name = "imagenet2012"
  config.dataset.train_split = "train"
  config.dataset.test_split = "validation"
  config.dataset.image_size = 224
  # Declared, so the run's length and the model's input are known without the data (compile
  # checks: sslax.setup.build(config, data_free=True)); training counts the real split.
  config.dataset.train_size = 1281167
  config.dataset.channels = 3
  config.dtype = "bfloat16"
  _set_backbone(config, IMAGENET_BACKBONES, backbone)
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.eval.batch_size = 1024
  config.eval.baselines = False
  # The evaluation view of DINO / MoCo v3 / SimCLR: resize the shorter side to 256, centre-crop
  # 224 (small-image presets keep 1.0: the whole image).
  config.eval.crop_fraction = 0.875
  return config


def image_text_cpu(method: str = "clip") -> ml_collections.ConfigDict:
  """The CPU image-text demos (clip, siglip): `fashion_mnist_cpu`'s ResNet as the image tower.

  Text tower: 2 transformer blocks of width 64 with 4 heads; 64-d joint embeddings; AdamW at
  lr 1e-3 with weight decay 0.1; mild crops (scale 0.5-1: a caption names the whole image) and
  no grayscale. The dataset, captions and budget are the recipe's.
  """
  config = fashion_mnist_cpu(method)
  config.text.width = 64
  config.text.depth = 2
  config.text.heads = 4
  config[method].embed_dim = 64
  config.augment.crop_scale = (0.5, 1.0)
  config.augment.grayscale_prob = 0.0
  config.optimizer.base_lr = 1e-3
  config.optimizer.weight_decay = 0.1
  return config


# Label classes of the datasets sslax reads (another dataset: set linear_eval.num_classes).
NUM_CLASSES = {
  "fashion_mnist": 10,
  "mnist": 10,
  "cifar10": 10,
  "cifar100": 100,
  "imagenet2012": 1000,
}
DEMO_WORKDIR = "runs/simclr_fashion_mnist"  # where the README demo trains


def linear_eval(pretrained_workdir: str | None = None) -> ml_collections.ConfigDict:
  """Linear evaluation (the papers' protocol, sslax/methods/linear_eval.py) of a pretraining run.

  pretrained_workdir: the run to evaluate; its config.json gives the dataset, model, mesh,
  compute dtype, input normalisation and evaluation view. None: the README demo's run
  (DEMO_WORKDIR, Fashion-MNIST, `fashion_mnist_cpu`'s ResNet), read only when training starts.

  Recipe: ImageNet-size data as MoCo v3 `main_lincls.py`: 90 epochs, batch 1024, SGD momentum
  0.9, lr 0.1 x B/256 (ResNet) or 3 x B/256 (MoCo v3 ViT), weight decay 0, cosine without
  warmup, RandomResizedCrop (0.08, 1) + flip; DINO runs as DINO's `eval_linear.py` (100 epochs,
  lr 0.001 x B/256). 28-32 px data (CPU): 5 epochs of batch 256 at lr 0.1, crops (0.2, 1).
  """
  if pretrained_workdir:
    pre = workdir_lib.load_config(pretrained_workdir)
    config = base_config("linear_eval")
    # What the backbone was trained on and how it sees images: the pretraining run's.
    for key in ("dataset", "model", "mesh", "distributed"):
      config[key] = pre[key]
    config.dtype = pre.dtype
    config.augment.normalize = pre.augment.normalize
    for key in ("crop_fraction", "batch_size", "num_train_examples"):
      config.eval[key] = pre.eval[key]
    method, model_name = pre.method, pre.model.name
  else:
    config = fashion_mnist_cpu("linear_eval")
    pretrained_workdir, method, model_name = DEMO_WORKDIR, "simclr", "resnet"
  config.linear_eval.pretrained_workdir = pretrained_workdir
  config.linear_eval.num_classes = NUM_CLASSES.get(config.dataset.name, 0)
  config.eval.baselines = False  # the classifier's own score; the baselines are the pretraining's
  opt = config.optimizer
  opt.name, opt.momentum, opt.weight_decay = "sgd", 0.9, 0.0
  opt.warmup_epochs, opt.exclude_bias_and_norm, opt.lr_scaling = 0.0, False, "linear"
  config.total_steps = 0  # from total_epochs
  if config.dataset.image_size <= 32:
    config.batch_size, config.total_epochs, opt.base_lr = 256, 5.0, 0.1
    config.linear_eval.crop_scale = (0.2, 1.0)  # (0.08, 1) of a 28 px image keeps too little
    config.log_every_steps, config.checkpoint_every_steps = 100, 500
  else:
    config.batch_size = 1024
    config.total_epochs = 100.0 if method == "dino" else 90.0
    vit_lr = 3.0 if method == "mocov3" else 0.1
    opt.base_lr = 0.001 if method == "dino" else (vit_lr if model_name == "vit" else 0.1)
    config.log_every_steps, config.checkpoint_every_steps = 100, 1000
    if method == "dino" and model_name == "vit" and not config.model.scan:
      # eval_linear.py: the class tokens of the last 4 blocks (ViT-S), or the last one with
      # the mean patch token (ViT-B: "--n_last_blocks 1 --avgpool_patchtokens true"). A
      # scanned stack keeps the final class token only (its blocks' outputs are not kept).
      big = config.model.variant in ("B", "L")
      config.linear_eval.n_last_blocks = 1 if big else 4
      config.linear_eval.avgpool = big
  return config


def subset_spec(subset) -> tuple[float, str]:
  """A subset as written after `configs/lowshot.py:DIR,` -> (fraction, file): a fraction
  ("0.01", "1%", 0.1) or else the path of a subset list (SimCLR v2's 1percent.txt)."""
  text = str(subset).strip()
  try:
    fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
  except ValueError:
    return 0.0, text
  if not 0 < fraction <= 1:
    raise ValueError(f"low-shot subset {subset!r}: a fraction must be in (0, 1] (0.01 or 1%).")
  return fraction, ""


def lowshot(pretrained_workdir: str | None = None, subset="0.01") -> ml_collections.ConfigDict:
  """Fine-tuning on a label subset (SimCLR's semi-supervised protocol) of a pretraining run:
  `linear_eval` with `linear_eval.finetune=True` and `dataset.subset_*` set from `subset`.

  subset: a fraction of the labels ("0.01" or "1%": class-balanced, drawn from
  dataset.subset_seed) or a subset list file (SimCLR v2's imagenet_subsets/1percent.txt, or a
  DIR/lowshot/*.json of ids).

  Recipe: ImageNet-size data as SimCLR v2 (appendix B): LARS, lr 0.005 x sqrt(B) at batch 1024
  (0.16), momentum 0.9, no weight decay (BN and biases excluded from LARS, as in pretraining), no
  warmup, cosine decay, random resized crop (0.08, 1) + flip only; 60 epochs on <= 1% of the
  labels, 30 above (a list's fraction: its length over dataset.train_size; 30 when the split
  size is not declared). 28-32 px data (CPU): SimCLR v1's fine-tuning optimizer (appendix B.5:
  Nesterov momentum 0.9, lr 0.05 x B/256, no weight decay, no warmup) at batch 256, crops (0.2,
  1), 60 / 30 epochs as above.
  """
  config = linear_eval(pretrained_workdir)
  config.linear_eval.finetune = True
  fraction, file = subset_spec(subset)
  config.dataset.subset_fraction, config.dataset.subset_file = fraction, file
  share = fraction
  if file and config.dataset.train_size > 0:  # reads the list: a bad path fails here
    share = len(subsets.read_subset_file(file)[1]) / config.dataset.train_size
  config.total_epochs = 60.0 if 0 < round(share, 3) <= 0.01 else 30.0
  opt = config.optimizer
  opt.warmup_epochs, opt.weight_decay, opt.momentum = 0.0, 0.0, 0.9
  if config.dataset.image_size <= 32:
    opt.name, opt.nesterov, opt.lr_scaling, opt.base_lr = "sgd", True, "linear", 0.05
    opt.exclude_bias_and_norm = False
    config.batch_size = 256
  else:
    opt.name, opt.lr_scaling, opt.base_lr = "lars", "sqrt", 0.005
    opt.exclude_bias_and_norm = True
    config.batch_size = 1024
    config.linear_eval.crop_scale = (0.08, 1.0)
  return config


def _set_backbone(config: ml_collections.ConfigDict, table: dict, name: str) -> None:
  if name not in table:
    raise ValueError(f"Unknown preset backbone {name!r}; choose one of {sorted(table)}.")
  for key, value in table[name].items():
    config.model[key] = value
