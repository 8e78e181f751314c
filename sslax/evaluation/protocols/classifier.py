"""The `classifier` protocol: top-1 / top-5 of a trained classifier on the test split.

Its encoder maps images to logits [B, num_classes] (a linear evaluation run's whole network:
frozen backbone + linear head, `sslax.methods.linear_eval`), so the evaluation view, batching
and sharding are the feature extractor's; only the score differs. Nothing is cached (logits are
not features).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax.evaluation.features import split_features
from sslax.evaluation.protocols.registry import register


@jax.jit
def _correct(logits, labels, index):
  """Counts of top-1 / top-5 hits over the valid rows (index >= 0) of a row-sharded bank."""
  valid = index >= 0
  top = jax.lax.top_k(logits.astype(jnp.float32), min(5, logits.shape[1]))[1]
  hit = top == labels[:, None]
  top1 = jnp.sum(jnp.where(valid, hit[:, 0], False))
  top5 = jnp.sum(jnp.where(valid, jnp.any(hit, axis=1), False))
  return top1, top5


def classifier_results(bank) -> dict:
  """A bank of logits ([R, C] rows sharded, as `split_features` returns) -> {"top1", "top5"
  (when C > 5), "num_examples"}. Counted on the devices; only two scalars leave them."""
  top1, top5 = (int(v) for v in jax.device_get(_correct(bank.features, bank.labels, bank.index)))
  out = {"top1": top1 / bank.num_examples, "num_examples": int(bank.num_examples)}
  if bank.dim > 5:
    out["top5"] = top5 / bank.num_examples
  return out


@register("classifier", summary="top-1/top-5 of a trained classifier (linear_eval runs)")
def classifier(encoders, ctx):
  out = {}
  for enc in encoders:
    _, bank = split_features(enc, ctx.config, None, ctx.config.dataset.test_split)
    out[enc.name] = classifier_results(bank)
  return out
