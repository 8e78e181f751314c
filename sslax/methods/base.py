"""The method contract: what a self-supervised method tells the trainer.

The trainer never branches on a method's name. A method says which augmented views it needs,
which network it trains (with a submodule named `backbone`, the encoder that evaluation and
export use), how its extra state starts and evolves, and how its loss is computed on the global
batch. It learns the run's length, epoch size, image size, channels and lr schedule from the
`RunInfo` it is built with (`sslax.run_info`), never by opening data or importing the trainer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypedDict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from sslax.data.augment import ViewSpec
from sslax.run_info import RunInfo

PyTree = Any

# The key under which `Method.loss` may hand the online linear probe (sslax/online_probe.py) the
# backbone features it computed anyway; see `Method.provides_probe_features`.
PROBE_FEATURES = "probe_features"


class Batch(TypedDict, total=False):
  """One global batch, as `Method.loss` receives it (every array sharded over the batch axis).

  views:  tuple of [B, H_v, W_v, C] float32 arrays, one per `Method.views()` entry, in order.
  label:  [B] int32 class labels (-1 where the source has none).
  index:  [B] int32 global example indices in the training source (-1: a streamed source).
  tokens: [B, L] int32 caption token ids (image-text sources only).
  """

  views: tuple
  label: jax.Array
  index: jax.Array
  tokens: jax.Array


@dataclasses.dataclass(frozen=True)
class EpochContext:
  """What `Method.before_epoch` may use: the training data and where the state lives."""

  train_source: Any  # a sslax.data.sources source (random access by example index)
  mesh: Mesh
  state_sharding: PyTree  # NamedShardings of the TrainState


class Method:
  name: ClassVar[str]
  # True: `loss` returns, in its metrics dict under PROBE_FEATURES, the backbone features
  # [B, F] of the FIRST view (row i: example i of the batch, labelled by batch["label"]) from
  # the online network's training-mode pass that the loss makes anyway (F: the width of
  # `network().backbone`'s output). The trainer pops them before logging and trains the online
  # linear probe on them under a stop-gradient, so the probe costs no extra backbone pass and
  # never changes the loss or its gradients. The first view only, as BYOL's reference code
  # (`logits_view1`): every method has one, its rows are the batch's rows with no repeated
  # labels, and multi-crop methods need not say which crops count. False: the probe is off
  # for this method (an explicit `online_probe.mode="on"` fails naming it).
  provides_probe_features: ClassVar[bool] = False

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """This method's own config section, `config.<name>` (hyperparameters and their defaults)."""
    return ml_collections.ConfigDict()

  def __init__(self, config: ml_collections.ConfigDict, run: RunInfo, mesh: Mesh):
    self.config = config
    self.run = run
    self.mesh = mesh

  @classmethod
  def training_subset(cls, config: ml_collections.ConfigDict, num_examples: int):
    """The indices ([n] int, in stream order) of the training split's examples that the
    training stream draws from; None (the default): all `num_examples` of them.

    `sslax.setup` asks before the method is built (with the split's counted or declared size),
    restricts the training source to them (`sources.base.take_indices`), and the RunInfo counts
    only these; `batch["index"]` is then an example's position in the returned list
    (Exemplar-CNN's surrogate class). Evaluation still reads the whole split.
    """
    return None

  def views(self) -> tuple[ViewSpec, ...]:
    """The augmented crops of each image, in the order the batch holds them."""
    raise NotImplementedError

  def network(self) -> nn.Module:
    """The trained network; `network.backbone` maps images [B, H, W, C] to features [B, D]."""
    raise NotImplementedError

  def init_inputs(self, image_size: int, channels: int) -> tuple:
    """Example positional inputs for `network().init(rng, *inputs, train=False)`.

    Images [2, S, S, C] by default; image-text methods add token ids, for instance.
    """
    return (jnp.zeros((2, image_size, image_size, channels), jnp.float32),)

  def initial_variables(self, variables: PyTree) -> PyTree:
    """The network's starting {"params", "batch_stats"}, given its random initialisation: a
    method that starts from trained weights (linear evaluation of a pretrained backbone)
    replaces parts of them here. Must keep every leaf's shape and dtype. Identity by default."""
    return variables

  def init_state(self, rng: jax.Array, variables: PyTree) -> PyTree:
    """Extra state (momentum encoder, queue, centers ...) from the initial variables."""
    return {}

  def loss(
    self, params: PyTree, batch_stats: PyTree, method_state: PyTree, batch: Batch, rng: jax.Array
  ) -> tuple[jax.Array, tuple[dict, PyTree, PyTree]]:
    """Loss on the global batch -> (loss, (metrics, new_batch_stats, new_method_state)).

    batch["views"] is a tuple of [B, H, W, C] float arrays, one per `views()` entry, sharded
    over the batch axis. Gradients are taken w.r.t. `params` only. metrics: scalars, plus
    PROBE_FEATURES [B, F] when `provides_probe_features` (never logged).
    """
    raise NotImplementedError

  def constrain_params(self, params: PyTree, step: jax.Array) -> PyTree:
    """The params the step keeps, right after the optimizer update and before `after_update`:
    a clamp or projection that a reference applies to its parameters in place after
    `optimizer.step()` (CLIP's logit scale). Must keep every leaf's shape and dtype.
    Identity by default."""
    return params

  def after_update(self, method_state: PyTree, params: PyTree, step: jax.Array) -> PyTree:
    """Runs after the optimizer step (EMA teachers, schedules). Identity by default."""
    return method_state

  def before_epoch(self, state: PyTree, epoch: int, ctx: EpochContext) -> PyTree:
    """Runs on the host before the first step of each epoch (and once on resume, for the
    epoch in progress). May run jitted work over the whole dataset and return a new
    TrainState (DeepCluster's k-means pseudo-labels); `ctx` has the train source, the mesh
    and the state's shardings. Every process must call the same collectives in the same
    order. Identity by default."""
    return state

  def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """The configured optimizer, adapted by the method (e.g. params frozen for the first steps,
    see `sslax.optim.freeze_for_steps`). Identity by default."""
    return tx
