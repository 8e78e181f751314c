"""SwAV (Caron et al. 2020): Sinkhorn-Knopp codes over the global batch, swapped prediction.

Codes are computed on the global batch: every sum over samples in Sinkhorn-Knopp is psum'd
across devices, so the equipartition constraint holds for the whole batch, not per device.
An optional queue of earlier embeddings (replicated on every device) joins the assignment
problem as extra samples; it is counted once, not once per device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import gather_rows_invariant


def _psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def sinkhorn_knopp(
  scores,
  epsilon: float = 0.05,
  num_iters: int = 3,
  *,
  axis_name=None,
  extra_scores=None,
  use_extra=True,
  sample_weights=None,
):
  """Soft codes Q for the batch: SwAV eq. (3)-(4), solved by `num_iters` Sinkhorn-Knopp steps.

  With S the [N, K] scores of all N samples (global batch plus the queue, if any) against the K
  prototypes, Q = diag(c) exp(S / epsilon) diag(r) is rescaled so that every prototype gets
  1/K of the mass and every sample 1/N, alternately (prototype step first, as SwAV does), and
  each sample's code is then returned normalised to sum to one.

  Args:
    scores: [b, K] local scores z.c (unit embeddings against unit prototypes).
    epsilon: entropy regularisation; smaller gives peakier codes.
    num_iters: Sinkhorn iterations (SwAV: 3).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.
    extra_scores: optional [E, K] scores of queued embeddings, identical on every device.
    use_extra: bool (may be traced): whether extra_scores take part (SwAV uses its queue only
      once it is full).
    sample_weights: optional [b] 0/1 weights of the local rows: rows with 0 take no part and
      N counts the others over every device (DINOv2's codes of the masked patch tokens only,
      out of fixed-shape [b] rows). Their returned codes are zero.

  Returns [b, K] codes of the local rows (rows sum to 1), float32, without gradient.
  """
  scores = lax.stop_gradient(scores.astype(jnp.float32))
  num_prototypes = scores.shape[1]
  # Subtracting the global max only rescales exp(S / eps) by a constant, which the first
  # normalisation removes; it keeps exp finite for any epsilon.
  shift = jnp.max(scores)
  if axis_name is not None:
    shift = lax.pmax(shift, axis_name)
  if extra_scores is not None:
    extra_scores = lax.stop_gradient(extra_scores.astype(jnp.float32))
    weight = jnp.asarray(use_extra, jnp.float32)
    shift = jnp.maximum(shift, jnp.where(weight > 0, jnp.max(extra_scores), shift))
    extra = jnp.exp((extra_scores - shift) / epsilon) * weight  # [E, K]; zero when unused
    num_extra = weight * extra_scores.shape[0]
  q = jnp.exp((scores - shift) / epsilon)  # [b, K]
  local_count = jnp.asarray(q.shape[0], jnp.float32)
  if sample_weights is not None:
    sample_weights = lax.stop_gradient(sample_weights.astype(jnp.float32))
    q = q * sample_weights[:, None]
    local_count = jnp.sum(sample_weights)

  def total_over_samples(local_sum, extra_sum):
    return _psum(local_sum, axis_name) + (0.0 if extra_scores is None else extra_sum)

  num_samples = total_over_samples(local_count, None if extra_scores is None else num_extra)
  mass = total_over_samples(jnp.sum(q), None if extra_scores is None else jnp.sum(extra))
  q = q / mass
  if extra_scores is not None:
    extra = extra / mass
  for _ in range(num_iters):
    per_prototype = total_over_samples(
      jnp.sum(q, axis=0), None if extra_scores is None else jnp.sum(extra, axis=0)
    )  # [K]
    q = q / (per_prototype * num_prototypes)
    if sample_weights is None:
      q = q / (jnp.sum(q, axis=1, keepdims=True) * num_samples)
    else:  # rows that take no part stay zero
      row = jnp.sum(q, axis=1, keepdims=True)
      q = q / (jnp.where(row > 0, row, 1.0) * num_samples)
    if extra_scores is not None:
      extra = extra / (per_prototype * num_prototypes)
      row = jnp.sum(extra, axis=1, keepdims=True)
      extra = extra / (jnp.where(row > 0, row, 1.0) * num_samples)  # unused rows stay zero
  if sample_weights is None:
    return q / jnp.sum(q, axis=1, keepdims=True)
  row = jnp.sum(q, axis=1, keepdims=True)
  return q / jnp.where(row > 0, row, 1.0)


def swapped_prediction_loss(
  scores,
  temperature: float = 0.1,
  epsilon: float = 0.05,
  num_iters: int = 3,
  num_assign: int = 2,
  *,
  axis_name=None,
  queue_scores=None,
  use_queue=True,
):
  """SwAV's swapped prediction loss (eq. 1-2) over all crops, with codes from the first crops.

  For each of the first `num_assign` crops (the global crops) i, codes q_i come from
  Sinkhorn-Knopp on the global batch; every other crop v predicts them with
  p_v = softmax(scores_v / temperature), at cost -sum_k q_i log p_v. The loss averages over
  the other crops, then over the assigned crops, then over the global batch.

  Args:
    scores: [b, V, K] local scores of the V crops of each image (crops 0..num_assign-1 are
      the global ones), or a sequence of V arrays [b, K].
    temperature, epsilon, num_iters: SwAV's tau, epsilon and Sinkhorn iterations.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.
    queue_scores: optional [num_assign, E, K] scores of queued embeddings of each global crop
      (same on every device), added to the assignment problem when `use_queue`.

  Returns (loss, metrics) with metrics["code_entropy"]: mean entropy (nats) of the codes.
  """
  if isinstance(scores, (list, tuple)):
    scores = jnp.stack(scores, axis=1)
  scores = scores.astype(jnp.float32)
  batch, num_crops = scores.shape[0], scores.shape[1]
  if not 1 <= num_assign < num_crops:
    raise ValueError(
      f"num_assign={num_assign} must be in [1, {num_crops - 1}] for {num_crops} crops."
    )
  log_p = jax.nn.log_softmax(scores / temperature, axis=-1)  # [b, V, K]
  total, entropy = 0.0, 0.0
  for i in range(num_assign):
    codes = sinkhorn_knopp(
      scores[:, i],
      epsilon,
      num_iters,
      axis_name=axis_name,
      extra_scores=None if queue_scores is None else queue_scores[i],
      use_extra=use_queue,
    )
    others = [v for v in range(num_crops) if v != i]
    cross_entropy = -jnp.sum(codes[:, None, :] * log_p[:, others], axis=(0, 2))  # [V - 1]
    total += jnp.sum(cross_entropy) / len(others)
    entropy += -jnp.sum(codes * jnp.log(jnp.maximum(codes, 1e-30)))
  count = jnp.asarray(batch, jnp.float32)
  total, entropy, count = _psum((total, entropy, count), axis_name)
  return total / (count * num_assign), {"code_entropy": entropy / (count * num_assign)}


def push_queue(queue, embeddings, *, axis_name=None):
  """First-in first-out queue of embeddings: the global batch goes in front, the oldest out.

  Args:
    queue: [E, D] replicated; E must be a multiple of the global batch B.
    embeddings: [b, D] local rows (stop-gradient'ed).
  Returns [E, D]: the B gathered rows (device order) then the first E - B old rows.
  """
  rows = gather_rows_invariant(lax.stop_gradient(embeddings.astype(queue.dtype)), axis_name)
  if queue.shape[0] % rows.shape[0]:
    raise ValueError(
      f"SwAV queue length {queue.shape[0]} is not a multiple of the global batch "
      f"{rows.shape[0]}; set swav.queue_length to a multiple of the batch size."
    )
  return jnp.concatenate([rows, queue[: queue.shape[0] - rows.shape[0]]], axis=0)
