"""Shared wiring of the pretext classification methods: a task turns the batch into inputs and
labels, a shared backbone embeds every part of an input, a head classifies the concatenated
features, and the loss is softmax cross-entropy.

A subclass (RotNet, Jigsaw, relative patch position; DeepCluster's pseudo-labels fit too)
implements
  num_classes()                       K, the number of pretext classes
  input_shape(image_size, channels)   (P, h, w, C): the parts of one task input
  make_task(batch, rng, method_state) -> (inputs [N, P, h, w, C], labels [N] int32)
and reads its head from its config section `config.<name>`: `head_hidden_dim` and
`head_layers` (1 = a linear classifier; L > 1 = (Dense -> BN -> ReLU) x (L-1) -> Dense).

P = 1 for a whole image (RotNet, DeepCluster), 2 for a patch pair, 9 for jigsaw tiles. Each
part goes through the same backbone (shared weights), all N x P parts in one forward pass, so
BatchNorm statistics are taken over every part of the global batch.

Metrics: `pretext_accuracy` (top-1 on the task's own labels) and `pretext_chance` (1 / K).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sslax import sharding
from sslax.data.augment import ViewSpec
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.models import ProjectionHead, get_dtype, make_backbone


class PartsClassifier(nn.Module):
  """inputs [N, P, h, w, C] -> (features [N, P * F], logits [N, K]).

  `backbone` maps [M, h, w, C] -> [M, F] and is applied to every part; `head` maps the
  concatenated part features to class logits.
  """

  backbone: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = True):
    n, parts = x.shape[:2]
    features = self.backbone(x.reshape(n * parts, *x.shape[2:]), train=train)
    features = features.reshape(n, -1)
    return features, self.head(features, train=train)


def augment_view(config, size: int) -> ViewSpec:
  """One view of side `size` with the crop and photometric settings of `config.augment`."""
  aug = config.augment
  return ViewSpec.from_config(aug, size)


def classification_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, dict]:
  """Mean softmax cross-entropy and top-1 accuracy; logits [N, K], labels [N] int."""
  logits = logits.astype(jnp.float32)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return loss, {"pretext_accuracy": accuracy}


class PretextMethod(Method):
  """Base class: backbone + classification head trained with cross-entropy on a pretext task."""

  def num_classes(self) -> int:
    raise NotImplementedError

  def input_shape(self, image_size: int, channels: int) -> tuple[int, int, int, int]:
    """(P, h, w, C) of one task input; the default is one whole image."""
    return (1, image_size, image_size, channels)

  def make_task(self, batch: dict, rng: jax.Array, method_state) -> tuple[jax.Array, jax.Array]:
    """-> (inputs [N, P, h, w, C], labels [N] int32) from the global batch."""
    raise NotImplementedError

  def probe_features(self, features: jax.Array) -> jax.Array | None:
    """The task inputs' features [N, P * F] -> the batch's backbone features [B, F] for the
    online probe (`provides_probe_features`); None by default (tiles and patches are not
    the image evaluation sees)."""
    return None

  def views(self):
    return (augment_view(self.config, self.config.dataset.image_size),)

  def network(self):
    cfg = self.config[self.name]
    head = ProjectionHead(
      hidden_dim=cfg.head_hidden_dim,
      out_dim=self.num_classes(),
      num_layers=cfg.head_layers,
      dtype=get_dtype(self.config.dtype),
    )
    return PartsClassifier(backbone=make_backbone(self.config.model, self.config.dtype), head=head)

  def init_inputs(self, image_size, channels):
    return (jnp.zeros((2, *self.input_shape(image_size, channels)), jnp.float32),)

  def loss(self, params, batch_stats, method_state, batch, rng):
    inputs, labels = self.make_task(batch, rng, method_state)
    # The task's random draws are made for the whole global batch; pin its outputs to the
    # batch sharding so each device keeps its own rows.
    batch_sharded = NamedSharding(self.mesh, P(sharding.BATCH_AXES))
    inputs = jax.lax.with_sharding_constraint(inputs, batch_sharded)
    labels = jax.lax.with_sharding_constraint(labels, batch_sharded)
    (features, logits), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats}, inputs, train=True, mutable=["batch_stats"]
    )
    loss, metrics = classification_loss(logits, labels)
    metrics["pretext_chance"] = jnp.float32(1.0 / self.num_classes())
    if self.provides_probe_features:
      metrics[PROBE_FEATURES] = self.probe_features(features)
    return loss, (metrics, updates["batch_stats"], method_state)
