"""MoCo's InfoNCE against a queue of negative keys, and the queue update (He et al. 2020).

The loss of a query only involves its own key and the (replicated) queue, so the only
cross-device terms are the mean over the global batch and the queue update, which writes the
keys of every device, gathered in device order, into the queue.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import gather_rows_invariant, l2_normalize


def info_nce_queue_loss(q, k, queue, temperature: float, *, axis_name=None):
  """InfoNCE with a queue of negatives (MoCo eq. 1; MoCo v2: temperature 0.2).

  loss_i = -log exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_j exp(q_i.n_j / t)), q, k, n unit.

  Args:
    q: [b, D] local queries (the trained encoder's projections); L2-normalised here.
    k: [b, D] local keys of the other view (momentum encoder); L2-normalised here and behind a
      stop-gradient, so no gradient ever reaches the key encoder.
    queue: [K, D] negatives (unit keys of earlier batches), the same on every device.
    temperature: t.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Per-device logits are [b, 1 + K]. Returns (loss averaged over the global batch, metrics) with
  metrics["contrastive_acc"]: fraction of queries whose positive beats every negative.
  """
  q = l2_normalize(q.astype(jnp.float32))
  k = lax.stop_gradient(l2_normalize(k.astype(jnp.float32)))
  queue = lax.stop_gradient(queue.astype(jnp.float32))
  positive = jnp.sum(q * k, axis=1, keepdims=True)  # [b, 1]
  logits = jnp.concatenate([positive, q @ queue.T], axis=1) / temperature
  per_query = jax.nn.logsumexp(logits, axis=1) - logits[:, 0]
  correct = (jnp.argmax(logits, axis=1) == 0).astype(jnp.float32)
  loss_sum, correct_sum = jnp.sum(per_query), jnp.sum(correct)
  count = jnp.asarray(q.shape[0], jnp.float32)
  if axis_name is not None:
    loss_sum, correct_sum, count = lax.psum((loss_sum, correct_sum, count), axis_name)
  return loss_sum / count, {"contrastive_acc": correct_sum / count}


def enqueue_keys(queue, pointer, k, *, axis_name=None):
  """Writes the keys of the global batch into the queue at `pointer`, replacing the oldest.

  Args:
    queue: [K, D] replicated queue; K must be a multiple of the global batch B.
    pointer: int32 scalar, the row where the oldest keys start.
    k: [b, D] local keys; L2-normalised and stop-gradient'ed before they are stored.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Returns (new queue [K, D], new pointer = (pointer + B) mod K). Rows pointer..pointer+B-1 hold
  the global batch's keys in device order (device 0's rows first), as if one device had
  computed the whole batch.
  """
  k = lax.stop_gradient(l2_normalize(k.astype(jnp.float32)))
  keys = gather_rows_invariant(k, axis_name)  # [B, D]
  size, batch = queue.shape[0], keys.shape[0]
  if size % batch:
    raise ValueError(
      f"MoCo queue size {size} is not a multiple of the global batch {batch}; "
      f"set the queue size to a multiple of the batch size, e.g. "
      f"{max(batch, size // batch * batch)}."
    )
  queue = lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (pointer, 0))
  return queue, (pointer + batch) % size
