"""Sums, means and standardisation over the rows of the *global* batch.

The non-contrastive losses (BYOL, SimSiam, Barlow Twins, VICReg) need statistics of the whole
batch, not of one device's shard. Each helper takes the local rows [b, ...] and the
`axis_name` the batch is sharded over (None for one device) and reduces across devices with
`lax.psum`, whose transpose sends every device the gradient of its own rows.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def global_batch_size(local_rows: int, axis_name) -> int:
  """B, the number of rows over all devices (a static int: psum of a Python int is one)."""
  return local_rows if axis_name is None else lax.psum(local_rows, axis_name)


def global_sum(x, axis_name):
  """[b, ...] -> [...]: sum over the rows of the global batch (or any pytree of scalars summed)."""
  total = jnp.sum(x, axis=0)
  return total if axis_name is None else lax.psum(total, axis_name)


def global_mean(x, axis_name):
  """[b, ...] -> [...]: mean over the rows of the global batch."""
  return global_sum(x, axis_name) / global_batch_size(x.shape[0], axis_name)


def psum_if(x, axis_name):
  """lax.psum over axis_name, or x itself on one device."""
  return x if axis_name is None else lax.psum(x, axis_name)


def center_and_variance(z, axis_name, *, ddof: int = 0):
  """[b, D] -> (z - mean [b, D], variance [D]) with both moments over the global batch.

  Two passes (mean, then squared deviations) rather than E[z^2] - E[z]^2, which loses
  precision when |mean| >> std. ddof=0: biased (BatchNorm's); ddof=1: unbiased (torch.var's).
  """
  n = global_batch_size(z.shape[0], axis_name)
  centered = z - global_mean(z, axis_name)
  return centered, global_sum(centered * centered, axis_name) / (n - ddof)
