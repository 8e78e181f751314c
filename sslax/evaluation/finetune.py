"""End-to-end fine-tuning (backbone + linear head) on all labels or a class-balanced few.

Semi-supervised / low-shot evaluation as in SimCLR and BYOL: fine-tune the pretrained backbone
with a fresh linear head on 1% or 10% of the labelled train images (a class-balanced subset
chosen from a seed), report top-1 on the test split. `fraction=1.0` is plain fine-tuning.

The head is zero-initialised, BatchNorm runs in train mode (batch statistics over the global
batch, running averages updated), and training uses the trainer's input pipeline (stateless,
per-process, replayable) with random-resized-crop + flip views.

MAE's fine-tuning recipe is available for any backbone: layer-wise lr decay (`layer_decay`:
the lr of layer i is scaled by decay^(L + 1 - i), see `layer_ids`), label smoothing, warmup,
AdamW and (ViT) stochastic depth.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sslax import features, optim, sharding
from sslax.data import augment, pipeline, sources
from sslax.data.sources import subsets
from sslax.data.sources.base import take_indices
from sslax.models import vit


# The subset choice lives with the data (a training run restricts its split the same way,
# `dataset.subset_*`); these names are this module's API since the lowshot protocol's start.
class_balanced_subset = subsets.class_balanced_subset


def subset_source(source, indices: np.ndarray):
  """The examples `indices` of a random-access source, in that order (in memory, image folder,
  record shards, TFDS ArrayRecord): `sources.base.take_indices`."""
  return take_indices(source, indices)


def require_random_access(source) -> None:
  """Label subsets need every label up front without reading the images: in-memory arrays, an
  image folder's file list, record shards' label index. TFDS sources fail naming the fix."""
  subsets.labels_of(source)


def _key_name(entry) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", entry)))


# A Classifier's params outside the backbone; they are the last "layer" (lr scale 1).
HEAD_PARAMS = ("head", "fc_norm")


def layer_ids(params) -> tuple[dict, int]:
  """Layer index of every parameter of a Classifier's params {"backbone", "head"[, "fc_norm"]}.

  -> (tree like params whose leaves are ints, or int arrays broadcastable against the leaf for
  scanned ViT blocks, num_layers). With L the backbone's depth in "layers":
    ViT (MAE's assignment, `sslax.models.vit.layer_ids`): embeddings and tokens -> 0; encoder
      block i -> i + 1; encoder_norm, fc_norm and the head -> L + 1, L = number of blocks.
    ResNet: stem -> 0; every block of stage s -> s (1..4); fc_norm and the head -> L + 1,
      L = 4 stages.
  num_layers = L + 1, so that lr scale = layer_decay ** (num_layers - id) is 1 for the head.
  """
  backbone = params["backbone"]
  if "patch_embed" in backbone:  # ViT: the backbone's own ids, fc_norm and the head after it
    ids, last = vit.layer_ids(backbone)
    tree = {
      k: ids if k == "backbone" else jax.tree.map(lambda _: last, v) for k, v in params.items()
    }
    return tree, last
  if "stem_conv" in backbone:  # ResNet
    stages = sorted(
      {int(k[len("stage") :].split("_")[0]) for k in backbone if k.startswith("stage")}
    )
    last = len(stages) + 1

    def resnet_id(path, leaf):
      names = [_key_name(e) for e in path]
      if names[0] in HEAD_PARAMS:
        return last
      if names[1].startswith("stem"):
        return 0
      if names[1].startswith("stage"):
        return stages.index(int(names[1][len("stage") :].split("_")[0])) + 1
      raise ValueError(f"layer_ids: no layer for ResNet parameter {'/'.join(names)}")

    return jax.tree_util.tree_map_with_path(resnet_id, params), last
  raise ValueError(
    f"layer_ids: unknown backbone (top-level params {sorted(backbone)}); "
    f"layer-wise lr decay knows ViT and ResNet, set eval.finetune_layer_decay=1.0."
  )


def layer_decay_scales(params, decay: float):
  """Per-parameter lr multipliers decay ** (num_layers - layer_id) (MAE's layer-wise decay)."""
  ids, num_layers = layer_ids(params)
  return jax.tree.map(lambda i: np.asarray(decay, np.float64) ** (num_layers - np.asarray(i)), ids)


def scale_updates(scales) -> optax.GradientTransformation:
  """Multiplies each update by its scale: a per-parameter learning rate (after the optimizer,
  so weight decay and momentum are scaled as PyTorch param-group lrs scale them)."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def smoothed_cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean cross entropy against (1 - a) one_hot(labels) + a / K (Szegedy et al. 2016).

  logits [B, K], labels [B] int -> scalar.
  """
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


class Classifier(nn.Module):
  """backbone -> [LayerNorm "fc_norm"] -> linear head: images [B, H, W, C] -> logits [B, K].

  fc_norm: a fresh LayerNorm (eps 1e-6, scale 1, bias 0) on the pooled features, as MAE's
  global-pool fine-tuning (`models_vit.py`: mean of the patch tokens, then `fc_norm`); here it
  follows the backbone's own pooling (a gap ViT: mean of the final-norm tokens).
  """

  backbone: nn.Module
  num_classes: int
  fc_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    features = self.backbone(x, train=train)
    if self.fc_norm:
      features = nn.LayerNorm(epsilon=1e-6, name="fc_norm")(features)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(features)


def finetune(
  backbone: nn.Module,
  backbone_variables: dict,
  train_source,
  test_source,
  *,
  num_classes: int,
  image_size: int,
  mesh,
  epochs: int = 10,
  batch_size: int = 256,
  eval_batch_size: int = 512,
  optimizer: str = "sgd",
  learning_rate: float = 0.01,
  weight_decay: float = 0.0,
  momentum: float = 0.9,
  crop_scale=(0.08, 1.0),
  seed: int = 0,
  layer_decay: float = 1.0,
  label_smoothing: float = 0.0,
  warmup_epochs: float = 0.0,
  drop_path_rate: float = 0.0,
  b2: float = 0.999,
  crop_fraction: float = 1.0,
  normalize: str = "none",
  fc_norm: bool = False,
) -> dict:
  """Fine-tunes backbone + a zero-initialised linear head on all of `train_source`.

  backbone_variables: {"params": ..., "batch_stats": ...} of the pretrained backbone.
  batch_size: global batch, lowered (to a multiple of the devices) for small train sets;
    a train set smaller than the batch is repeated to fill it.
  optimizer: "sgd" | "lars" | "adamw" (sslax.optim); linear warmup over `warmup_epochs`, then
    cosine decay to 0.
  layer_decay: < 1 scales the lr of layer i by layer_decay ** (L + 1 - i) (`layer_ids`).
  label_smoothing: a in the targets (1 - a) one_hot + a / K.
  drop_path_rate: ViT backbones: stochastic depth while fine-tuning (MAE: 0.1 for ViT-B).
  crop_fraction, normalize: the evaluation view of the test pass (`augment.center_view`); the
    training crops are normalised with `normalize` too, as pretraining's views were.
  fc_norm: a fresh LayerNorm between the pooled features and the head (`Classifier`).
  Returns {"top1", "train_examples", "steps", "final_loss"}.
  """
  shards = sharding.num_batch_shards(mesh)
  n = pipeline.num_examples(train_source)
  if n >= batch_size:
    global_batch = batch_size
  else:  # small labelled sets (1% of a small dataset): the batch is the whole set, rounded up
    global_batch = max(shards, math.ceil(n / shards) * shards)
    if n < global_batch:
      train_source = subset_source(train_source, np.resize(np.arange(n), global_batch))
  sharding.check_batch_size(global_batch, mesh, name="eval.finetune_batch_size")
  total_steps = max(
    int(epochs * pipeline.steps_per_epoch(pipeline.num_examples(train_source), global_batch)), 1
  )

  if drop_path_rate:
    if not hasattr(backbone, "drop_path_rate"):
      raise ValueError(
        f"eval.finetune_drop_path_rate={drop_path_rate} needs a backbone with "
        f"stochastic depth (ViT), not {type(backbone).__name__}; set it to 0."
      )
    backbone = backbone.clone(drop_path_rate=drop_path_rate)
  model = Classifier(backbone, num_classes, fc_norm=fc_norm)
  dim = jax.eval_shape(
    lambda v, x: backbone.apply(v, x, train=False),
    backbone_variables,
    jax.ShapeDtypeStruct(
      (1, image_size, image_size, sources.image_channels(train_source)), jnp.float32
    ),
  ).shape[-1]
  params = {
    "backbone": backbone_variables["params"],
    "head": {"kernel": jnp.zeros((dim, num_classes)), "bias": jnp.zeros((num_classes,))},
  }
  if fc_norm:
    params["fc_norm"] = {"scale": jnp.ones((dim,)), "bias": jnp.zeros((dim,))}
  batch_stats = {"backbone": backbone_variables.get("batch_stats", {})}
  steps_per_epoch = total_steps / max(epochs, 1e-9)
  schedule = optim.warmup_cosine(learning_rate, total_steps, int(warmup_epochs * steps_per_epoch))
  tx = optim.make_optimizer(
    ml_collections.ConfigDict(
      dict(name=optimizer, weight_decay=weight_decay, momentum=momentum, b2=b2)
    ),
    schedule,
  )
  if layer_decay != 1.0:
    tx = optax.chain(tx, scale_updates(layer_decay_scales(params, layer_decay)))
  replicated = sharding.replicated(mesh)
  # A copy: the step donates its state, and the caller's variables (a live train state, an
  # encoder used again for the next low-shot fraction) must survive.
  state = jax.device_put((params, batch_stats, tx.init(params)), replicated, may_alias=False)

  dropout_key = jax.random.key(seed)

  def train_step(state, images, labels, step):
    params, batch_stats, opt_state = state
    rngs = {"dropout": jax.random.fold_in(dropout_key, step)}  # stochastic depth (ViT)

    def loss_fn(params):
      logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats},
        images,
        train=True,
        mutable=["batch_stats"],
        rngs=rngs,
      )
      loss = smoothed_cross_entropy(logits, labels, label_smoothing)
      return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  step_fn = jax.jit(
    train_step,
    in_shardings=(
      replicated,
      sharding.batch_sharding(mesh),
      sharding.batch_sharding(mesh),
      replicated,
    ),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )
  view = augment.ViewSpec(
    size=image_size,
    crop_scale=tuple(crop_scale),
    flip_prob=0.5,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    normalize=normalize,
  )
  batches = pipeline.train_dataset(
    train_source,
    (view,),
    global_batch=global_batch,
    seed=seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  ).as_numpy_iterator()
  loss = None
  for i in range(total_steps):
    local = next(batches)
    batch = sharding.make_global_batch(mesh, {"image": local["views"][0], "label": local["label"]})
    state, loss = step_fn(state, batch["image"], batch["label"], np.int32(i))

  params, batch_stats, _ = state
  logits, labels = features.extract_features(
    model,
    {"params": params, "batch_stats": batch_stats},
    test_source,
    image_size=image_size,
    batch_size=eval_batch_size,
    mesh=mesh,
    crop_fraction=crop_fraction,
    normalize=normalize,
  )
  return {
    "top1": float(np.mean(np.argmax(logits, axis=1) == labels)),
    "train_examples": int(n),
    "steps": total_steps,
    "global_batch": global_batch,
    "final_loss": float(loss),
  }
