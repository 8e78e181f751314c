"""Linear evaluation, the papers' protocol: a linear classifier on a frozen pretrained backbone,
trained on augmented crops (random resized crop + flip) with the labels, evaluated on centre
crops. It is a method like the others, so the trainer trains it sharded, preemptible and
resumable; `python -m sslax.evaluate` / the end-of-run report then score its classifier
(`report_protocol`) and write the top-1 next to the fast probe's in the pretrained run's
results.json.

References: SimCLR (google-research/simclr, linear eval: 90 epochs, SGD/LARS with Nesterov,
batch 4096), BYOL (80 epochs, SGD Nesterov), MoCo v3 `main_lincls.py` (90 epochs, SGD lr 0.1 x
B/256, wd 0, batch 1024; the backbone in eval mode, a Linear initialised normal(0, 0.01), zero
bias), DINO `eval_linear.py` (100 epochs, SGD lr 0.001 x B/256, wd 0, batch 1024). The pod
recipe is each pretraining config's; `configs/linear_eval.py` builds it from the pretrained run.

The backbone is the pretrained run's `model` (rebuilt with `sslax.models.make_backbone`, which
covers the ResNet and ViT backbones of the joint-embedding, clustering, distillation and masked
image models), run with `train=False` (BatchNorm uses its pretrained running statistics, as
`model.eval()` in the references) behind a stop-gradient, and its parameters get no update
(`wrap_optimizer`). Its weights come from the pretrained run's checkpoint through
`sslax.checkpoint` (numpy, no pickle), checked leaf by leaf against the rebuilt backbone.
DINO runs are evaluated on the EMA teacher, as DINO's `eval_linear.py` (`linear_eval.weights`),
on its features: the class tokens of the last `n_last_blocks` blocks concatenated (ViT-S: 4),
with `avgpool` the mean patch token too (ViT-B: 1 block + avgpool); `presets.linear_eval` sets
them for DINO ViT runs at ImageNet size.

Fine-tuning (`linear_eval.finetune=True`, `presets.lowshot`, configs/lowshot.py:DIR): the same
run with the backbone trained too, on a label subset of the train split (`dataset.subset_*`:
a class-balanced seeded fraction, or SimCLR v2's `imagenet_subsets/1percent.txt`), which is the
semi-supervised protocol of SimCLR (v1 appendix B.5; v2 appendix B). The backbone runs in train
mode (BatchNorm over the global batch, running statistics updated, as SimCLR's global BN) and
the linear head starts at zero (`zero_init_logits_layer`). Where sslax differs: SimCLR v2
fine-tunes from the first layer of the projection head (`ft_proj_selector=1`: backbone +
the head's first linear/BN/ReLU, then the classifier); sslax fine-tunes from the backbone's
output (the input of the projection head, SimCLR v1's and v2's choice for 100% of the labels),
because the backbone is what every method shares and what `sslax.models.make_backbone` rebuilds.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sslax import checkpoint
from sslax.data.augment import ViewSpec
from sslax.methods.base import Method
from sslax.models import make_backbone

# Methods whose reference evaluates the EMA teacher (DINO eval_linear.py / eval_knn.py:
# --checkpoint_key teacher); linear_eval.weights="auto" follows them.
TEACHER_EVALUATED = {"dino": "teacher", "dinov2": "teacher"}


class LinearClassifier(nn.Module):
  """images [B, H, W, C] -> logits [B, num_classes] of a linear layer on the backbone's features.

  finetune False: the backbone is frozen (eval-mode BatchNorm whatever `train` says, no
  gradient), the head initialised normal(0, 0.01) as MoCo v3's `main_lincls.py`. True: the
  backbone runs in `train` mode (BatchNorm batch statistics over the global batch) with its
  gradient, and the head starts at zero (SimCLR's `zero_init_logits_layer` for fine-tuning).
  """

  backbone: nn.Module
  num_classes: int
  finetune: bool = False
  n_last_blocks: int = 1  # ViT: class tokens of the last n blocks (DINO eval_linear.py)
  avgpool: bool = False  # ViT: and the mean patch token

  def features(self, x, train: bool):
    if self.n_last_blocks > 1 or self.avgpool:
      return self.backbone(x, train=train, n_last_blocks=self.n_last_blocks, avgpool=self.avgpool)
    return self.backbone(x, train=train)

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.finetune:
      features = self.features(x, train=train)
    else:
      features = jax.lax.stop_gradient(self.features(x, train=False))
    head = nn.Dense(
      self.num_classes,
      kernel_init=nn.initializers.zeros if self.finetune else nn.initializers.normal(0.01),
      bias_init=nn.initializers.zeros,
      name="head",
    )
    return head(features.astype(jnp.float32))


class LinearEval(Method):
  name = "linear_eval"
  # The end-of-run report of this run scores the trained classifier (sslax/evaluate.py).
  report_protocol = "classifier"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        pretrained_workdir="",  # the pretraining run whose backbone is evaluated
        pretrained_step=-1,  # its checkpoint step; -1: the newest
        num_classes=0,  # classes of the dataset's labels (Fashion-MNIST 10, ImageNet 1000)
        crop_scale=(0.08, 1.0),  # RandomResizedCrop of the references' linear training
        # Which backbone of the checkpoint: student | teacher (an EMA teacher's, in its
        # method_state) | auto: the teacher for DINO (its eval_linear.py loads the teacher),
        # the trained network otherwise (SimCLR, MoCo, BYOL ... evaluate the online encoder).
        weights="auto",
        # True: fine-tune the backbone with the head (train-mode BatchNorm, zero-initialised
        # head), the semi-supervised protocol of SimCLR on a label subset (dataset.subset_*;
        # configs/lowshot.py:DIR). False: the linear protocol on the frozen backbone.
        finetune=False,
        # ViT features (DINO eval_linear.py): class tokens of the last n blocks concatenated
        # (ViT-S: 4), plus the mean patch token with avgpool (ViT-B: n=1 + avgpool).
        n_last_blocks=1,
        avgpool=False,
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.linear_eval
    if not cfg.pretrained_workdir:
      raise ValueError(
        "linear_eval needs the pretraining run: --config configs/linear_eval.py:DIR "
        "(or --config.linear_eval.pretrained_workdir=DIR)."
      )
    if (cfg.n_last_blocks != 1 or cfg.avgpool) and config.model.name != "vit":
      raise ValueError(
        f"linear_eval.n_last_blocks={cfg.n_last_blocks} / avgpool={cfg.avgpool} select ViT "
        f"class tokens; this backbone is {config.model.name!r}: leave them at 1 / False."
      )
    if cfg.n_last_blocks < 1:
      raise ValueError(f"linear_eval.n_last_blocks={cfg.n_last_blocks} must be >= 1.")
    if cfg.weights not in ("auto", "student", "teacher"):
      raise ValueError(f"linear_eval.weights={cfg.weights!r}; choose auto, student or teacher.")
    if cfg.num_classes <= 0:
      raise ValueError(
        f"linear_eval.num_classes must be the number of label classes (got {cfg.num_classes}): "
        f"set --config.linear_eval.num_classes=N for dataset {config.dataset.name!r}."
      )
    self._loaded = None  # read when the run starts (initial_variables), not at build time

  def pretrained(self) -> dict:
    """The pretraining run's checkpoint, read once: {"method", "step", "params", "batch_stats"}
    of its backbone. Fails with the fix on a missing run or a model other than config.model."""
    if self._loaded is None:
      cfg = self.config.linear_eval
      pre = _read_run_config(cfg.pretrained_workdir)
      if pre.get("method") == self.name:
        raise ValueError(f"{cfg.pretrained_workdir} is a linear evaluation run, not a pretraining.")
      # Keys the run's config.json lacks (added to the schema since) take their defaults when it
      # is read, and any that shapes a parameter is caught by the shape check on loading.
      mine = json.loads(self.config.model.to_json_best_effort())
      theirs = pre.get("model") or {}
      differ = sorted(k for k in theirs if mine.get(k, theirs[k]) != theirs[k])
      if differ or not theirs:
        raise ValueError(
          f"config.model differs from the pretrained run's ({cfg.pretrained_workdir}/"
          f"config.json; keys {differ}): build the config from it with --config "
          "configs/linear_eval.py:DIR."
        )
      step = None if cfg.pretrained_step < 0 else int(cfg.pretrained_step)
      tree, step = checkpoint.load_numpy(cfg.pretrained_workdir, step)
      weights = cfg.weights if cfg.weights != "auto" else TEACHER_EVALUATED.get(pre.get("method"))
      source = tree
      if weights == "teacher":
        source = (tree.get("method_state") or {}).get("teacher")
        if not source:
          raise ValueError(
            f"linear_eval.weights='teacher': {cfg.pretrained_workdir} (method "
            f"{pre.get('method')!r}) "
            "has no EMA teacher; use --config.linear_eval.weights=student."
          )
      if "backbone" not in (source.get("params") or {}):
        raise ValueError(
          f"{cfg.pretrained_workdir}: the checkpoint's network has no `backbone` (method "
          f"{pre.get('method')!r}); linear evaluation needs a ResNet or ViT backbone."
        )
      self._loaded = {
        "method": pre.get("method"),
        "step": int(step),
        "weights": weights or "student",
        "params": source["params"]["backbone"],
        "batch_stats": (source.get("batch_stats") or {}).get("backbone", {}),
      }
    return self._loaded

  def views(self):
    # Random resized crop + horizontal flip, nothing else (the references' linear training).
    aug, size = self.config.augment, self.config.dataset.image_size
    spec = ViewSpec.from_config(
      aug,
      size,
      crop_scale=tuple(self.config.linear_eval.crop_scale),
      jitter_prob=0.0,
      grayscale_prob=0.0,
      blur_prob=0.0,
      solarize_prob=0.0,
    )
    return (spec,)

  def network(self):
    backbone = make_backbone(self.config.model, self.config.dtype)
    cfg = self.config.linear_eval
    return LinearClassifier(
      backbone=backbone,
      num_classes=cfg.num_classes,
      finetune=cfg.finetune,
      n_last_blocks=cfg.n_last_blocks,
      avgpool=cfg.avgpool,
    )

  def initial_variables(self, variables):
    """The random backbone replaced by the pretrained one (same shapes, checked)."""
    variables = dict(variables)
    for collection in ("params", "batch_stats"):
      mine = variables.get(collection, {}).get("backbone", {})
      theirs = self.pretrained()[collection]
      _check_same_shapes(mine, theirs, collection, self.config.linear_eval.pretrained_workdir)
      if mine:
        loaded = jax.tree.map(lambda m, t: jnp.asarray(t, m.dtype), mine, theirs)
        variables[collection] = {**variables[collection], "backbone": loaded}
    return variables

  def wrap_optimizer(self, tx):
    if self.config.linear_eval.finetune:
      return tx  # every parameter trains, with the configured optimizer

    # Linear evaluation: the backbone gets no update (and, through set_to_zero, no optimizer
    # state).
    def labels(params):
      return {
        k: jax.tree.map(lambda _, k=k: "frozen" if k == "backbone" else "head", v)
        for k, v in params.items()
      }

    return optax.multi_transform({"head": tx, "frozen": optax.set_to_zero()}, labels)

  def loss(self, params, batch_stats, method_state, batch, rng):
    (view,) = batch["views"]
    variables = {"params": params, "batch_stats": batch_stats}
    if self.config.linear_eval.finetune:
      # Train-mode BatchNorm (statistics of the global batch, running averages updated) and a
      # dropout rng for a ViT's stochastic depth (model.drop_path_rate).
      logits, updates = self.network().apply(
        variables, view, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
      )
      batch_stats = updates.get("batch_stats", batch_stats)
    else:
      logits = self.network().apply(variables, view)
    labels = batch["label"]
    valid = labels >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    count = jnp.maximum(jnp.sum(valid), 1)
    loss = jnp.sum(jnp.where(valid, ce, 0.0)) / count
    top1 = jnp.sum(jnp.where(valid, jnp.argmax(logits, -1) == labels, False)) / count
    return loss, ({"train_top1": top1}, batch_stats, method_state)


def _read_run_config(workdir: str) -> dict:
  """DIR/config.json as a dict (the method checks only its `method` and `model`; the full
  reader, `sslax.workdir.load_config`, sits above the methods: configs import the registry)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} does not exist: linear_eval.pretrained_workdir must be a directory written by "
      "the trainer (python -m sslax.main --config ... --workdir DIR)."
    )
  with open(path) as f:
    return json.load(f)


def _check_same_shapes(mine, theirs, collection: str, workdir: str) -> None:
  a = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(mine)}
  b = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(theirs)}
  if a != b:
    diff = sorted(set(a.items()) ^ set(b.items()))[:4]
    raise ValueError(
      f"{workdir}: the checkpoint's backbone {collection} do not match the backbone that "
      f"config.model builds (first differences: {diff}). linear_eval rebuilds backbones from "
      "config.model (the ResNets and ViTs of the joint-embedding, distillation and masked "
      "image methods); a method with its own encoder (CMC, colorization) or a checkpoint of "
      "another sslax version cannot be loaded: use python -m sslax.evaluate --protocol linear."
    )
