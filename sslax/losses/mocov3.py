"""MoCo v3's symmetric InfoNCE with the keys of the global batch as negatives (Chen, Xie, He 2021).

No queue: the negatives of a query are the keys of every other image of the same global batch,
gathered from every device. Keys come from the momentum encoder and pass a stop-gradient, so
gradients reach the queries only; that also means the gather needs no gradient path back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import gather_rows, l2_normalize


def mocov3_contrastive_loss(q, k, temperature: float, *, axis_name=None):
  """ctr(q, k) of MoCo v3 (alg. 1): 2 tau x cross entropy of softmax(q k^T / tau) at the diagonal.

  Args:
    q: [b, D] local queries (predictor outputs); L2-normalised here.
    k: [b, D] local keys of the other view (momentum encoder); L2-normalised here and behind a
      stop-gradient.
    temperature: tau (0.2 in MoCo v3).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Per-device logits are [b, B] (B = global batch): query i of this device is contrasted with
  all B keys; its positive is the key at its own global index. The 2 tau factor is MoCo v3's,
  which makes the gradient scale independent of tau. Returns (loss averaged over the B queries,
  metrics) with metrics["contrastive_acc"]: fraction of queries whose own key scores highest.
  """
  q = l2_normalize(q.astype(jnp.float32))
  k = lax.stop_gradient(l2_normalize(k.astype(jnp.float32)))
  keys, offset = gather_rows(k, axis_name)  # [B, D]
  logits = q @ keys.T / temperature  # [b, B]
  positive_ids = jnp.arange(q.shape[0]) + offset
  positive = jnp.take_along_axis(logits, positive_ids[:, None], axis=1)[:, 0]
  per_query = jax.nn.logsumexp(logits, axis=1) - positive
  correct = (jnp.argmax(logits, axis=1) == positive_ids).astype(jnp.float32)
  loss_sum, correct_sum = jnp.sum(per_query), jnp.sum(correct)
  if axis_name is not None:
    loss_sum, correct_sum = lax.psum((loss_sum, correct_sum), axis_name)
  count = keys.shape[0]
  return 2 * temperature * loss_sum / count, {"contrastive_acc": correct_sum / count}


def mocov3_loss(q1, q2, k1, k2, temperature: float, *, axis_name=None):
  """MoCo v3's symmetrised loss ctr(q1, k2) + ctr(q2, k1); inputs [b, D] local rows.

  Returns (loss, metrics) with contrastive_acc averaged over both directions.
  """
  loss12, m12 = mocov3_contrastive_loss(q1, k2, temperature, axis_name=axis_name)
  loss21, m21 = mocov3_contrastive_loss(q2, k1, temperature, axis_name=axis_name)
  acc = (m12["contrastive_acc"] + m21["contrastive_acc"]) / 2
  return loss12 + loss21, {"contrastive_acc": acc}
