"""Helpers shared by the losses: normalisation and gathering rows across devices."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

# Large negative instead of -inf: keeps logsumexp and its gradient finite in any dtype.
MASK_VALUE = -1e9


def l2_normalize(x, axis=-1, eps=1e-12):
  return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))


def gather_rows(x, axis_name):
  """[b, ...] local rows -> ([B, ...] global rows in device order, offset of this device's rows).

  With axis_name=None (one device) returns (x, 0). The gather is differentiable: its transpose
  sends each device the gradient of its own rows, summed over every device that used them.
  """
  if axis_name is None:
    return x, 0
  gathered = lax.all_gather(x, axis_name, axis=0, tiled=True)
  return gathered, lax.axis_index(axis_name) * x.shape[0]


def gather_rows_invariant(x, axis_name):
  """[b, ...] local rows -> [B, ...] global rows in device order, typed as replicated.

  For values that leave a shard_map replicated (queues of keys); not for values that need a
  gradient back to each device (use `gather_rows`).
  """
  if axis_name is None:
    return x
  return lax.all_gather(x, axis_name, axis=0, tiled=True, to="invarying")
