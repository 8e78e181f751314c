"""The online linear probe: a linear classifier on the method's stop-gradient backbone features,
trained with the labels alongside the self-supervised loss, so a run shows how linearly
separable its representation is at every log step without a separate evaluation.

As in BYOL's reference code (`byol_experiment.py`: `classifier(jax.lax.stop_gradient(embedding))`
on the online network's view-1 embedding, `logits_view1` in the loss) and solo-learn
(`solo/methods/base.py`: `self.classifier(feats.detach())`, cross-entropy with
`ignore_index=-1`). The features are the ones the method's loss already computed
(`Method.provides_probe_features`, `sslax.methods.base.PROBE_FEATURES`): the probe adds no
backbone pass, and `stop_gradient` keeps the labels out of the backbone, so the method's loss,
gradients and params are bit-for-bit those of a run without it.

Optimizer (solo-learn's classifier group, `learnable_params` and `solo/args/pretrain.py`):
SGD with momentum 0.9, no weight decay, lr `online_probe.lr` (0.1) x global batch / 256,
following the run's warmup (`optimizer.warmup_epochs`) and cosine decay to 0. Unlike solo-learn
and BYOL, the probe does not share the method's optimizer (BYOL's LARS, solo-learn's LARS /
SGD): its params and optimizer state live in `TrainState.probe`, beside the method's, so
exports, the encoder's checkpoints and the method's optimizer never see it. The weights start
at zero: the problem is convex, and a zero start draws nothing from the run's RNG.

Loss and accuracy are means over the labelled examples of the GLOBAL batch (labels outside
[0, num_classes), e.g. -1 from a source without a label for that example, are left out), so 8
devices compute what 1 does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from sslax import optim
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.run_info import RunInfo

MODES = ("auto", "on", "off")
LOSS_KEY, TOP1_KEY = "online_probe_loss", "online_probe_top1"


@dataclasses.dataclass(frozen=True)
class OnlineProbe:
  """A linear head [feature_dim] -> [num_classes] and its optimizer."""

  num_classes: int
  feature_dim: int
  tx: optax.GradientTransformation

  def init(self) -> dict:
    """The probe's part of the train state: {"params": {"kernel", "bias"}, "opt_state"}."""
    params = {
      "kernel": jnp.zeros((self.feature_dim, self.num_classes), jnp.float32),
      "bias": jnp.zeros((self.num_classes,), jnp.float32),
    }
    return {"params": params, "opt_state": self.tx.init(params)}

  def loss(self, params, features, labels) -> tuple[jax.Array, jax.Array]:
    """-> (mean cross-entropy, top-1 accuracy) over the labelled rows of the global batch.

    features: [B, F] (any float dtype); labels: [B] int, rows outside [0, num_classes) ignored.
    """
    logits = jnp.asarray(features, jnp.float32) @ params["kernel"] + params["bias"]
    labels = jnp.asarray(labels, jnp.int32)
    valid = (labels >= 0) & (labels < self.num_classes)
    safe = jnp.where(valid, labels, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    correct = jnp.argmax(logits, axis=-1) == safe
    count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    loss = jnp.sum(jnp.where(valid, ce, 0.0)) / count
    return loss, jnp.sum(valid & correct).astype(jnp.float32) / count

  def update(self, probe_state: dict, features, labels) -> tuple[dict, dict]:
    """One optimizer step of the probe -> (new probe state, {LOSS_KEY, TOP1_KEY}).

    The metrics are those of the params before the step (as the method's loss is). The
    features pass a stop-gradient: nothing flows back into the backbone.
    """
    features = jax.lax.stop_gradient(features)
    params = probe_state["params"]
    (loss, top1), grads = jax.value_and_grad(self.loss, has_aux=True)(params, features, labels)
    updates, opt_state = self.tx.update(grads, probe_state["opt_state"], params)
    new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state}
    return new_state, {LOSS_KEY: loss, TOP1_KEY: top1}


def check_features(method: Method, features, labels, probe: OnlineProbe) -> None:
  """Trace-time check of what the method's loss returned under PROBE_FEATURES."""
  if features is None:
    raise ValueError(
      f"Method {method.name!r} declares provides_probe_features but its loss returned no "
      f"{PROBE_FEATURES!r} in its metrics; return the first view's backbone features [B, F] "
      f"(see sslax/methods/base.py), or set --config.online_probe.mode=off."
    )
  if features.shape != (labels.shape[0], probe.feature_dim):
    raise ValueError(
      f"Method {method.name!r} returned {PROBE_FEATURES!r} of shape {features.shape}; the "
      f"online probe expects [B, F] = [{labels.shape[0]}, {probe.feature_dim}] (a row per "
      f"example of the batch, F the backbone's output width)."
    )


def make(
  config: ml_collections.ConfigDict,
  method: Method,
  run: RunInfo,
  train_source: Any,
  feature_dim,
) -> OnlineProbe | None:
  """The run's probe, or None when it is off.

  `config.online_probe.mode`: "auto" trains it when the training source has labels (at least
  two classes) and the method gives features; "on" requires both (ValueError naming what is
  missing); "off" never. A data-free build (no source) has no labels: off under "auto".
  feature_dim: a callable -> the backbone's output width (only called when the probe is on).
  """
  cfg = config.online_probe
  if cfg.mode not in MODES:
    raise ValueError(f"config.online_probe.mode={cfg.mode!r}; choose one of {MODES}.")
  if not cfg.lr > 0 or not 0 <= cfg.momentum < 1:
    raise ValueError(
      f"config.online_probe.lr={cfg.lr} must be > 0 and momentum={cfg.momentum} in [0, 1) "
      f"(solo-learn: 0.1 and 0.9)."
    )
  if cfg.mode == "off":
    return None
  num_classes = int(getattr(train_source, "num_classes", 0) or 0)
  why_not = None
  if not method.provides_probe_features:
    why_not = (
      f"method {method.name!r} does not give its backbone features to the probe "
      f"(Method.provides_probe_features is False)"
    )
  elif train_source is None:
    why_not = "the run is built without data (data_free), so the number of classes is unknown"
  elif num_classes < 2:
    why_not = (
      f"the training source {getattr(train_source, 'name', '')!r} has no class labels "
      f"(num_classes={num_classes})"
    )
  if why_not is not None:
    if cfg.mode == "on":
      raise ValueError(
        f"config.online_probe.mode='on', but {why_not}; set --config.online_probe.mode=auto "
        f"(on where possible) or off."
      )
    logging.info("Online linear probe off: %s.", why_not)
    return None
  peak = optim.scaled_learning_rate(cfg.lr, run.global_batch, "linear")
  schedule = optim.warmup_cosine(
    peak, run.total_steps, run.epochs_to_steps(config.optimizer.warmup_epochs)
  )
  tx = optax.sgd(schedule, momentum=cfg.momentum or None)
  return OnlineProbe(num_classes=num_classes, feature_dim=int(feature_dim()), tx=tx)
