"""CPC's InfoNCE over a grid of patches (Henaff et al. 2020, "Data-Efficient Image Recognition
with Contrastive Predictive Coding", section 2.1 and the appendix's pseudocode), with the
candidate patches gathered from every device.

An image is a G x G grid of patches; z_{n,u,v} is the target embedding of patch (u, v) of image
n, and zhat^k_{n,i,j} = W_k c_{n,i,j} the prediction, from the context at (i, j), of the patch k
rows below. For every k and every (n, i, j) with i + k < G, the prediction has to pick its
target z_{n,i+k,j} out of all B G^2 patch embeddings of the global batch (the other patches of
the same image and every patch of the other images are the negatives):

  L = sum_k mean_{n, i < G-k, j} [ -log ( exp(zhat^k_{n,i,j} . z_{n,i+k,j})
                                           / sum_{m,u,v} exp(zhat^k_{n,i,j} . z_{m,u,v}) ) ]

Logits are raw dot products (no normalisation, no temperature): the method scales the
predictions (the paper's emb_scale 0.1).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import gather_rows


def cpc_loss(predictions, targets, offsets: Sequence[int], *, axis_name=None):
  """CPC's patch InfoNCE, summed over the prediction offsets.

  Args:
    predictions: [b, O, G, G, T] local predictions; predictions[n, o, i, j] is the prediction,
      from the context at (i, j), of the target offsets[o] rows below, (i + offsets[o], j).
      Rows i >= G - offsets[o] have no target and are ignored.
    targets: [b, G, G, T] local target embeddings of every patch.
    offsets: O prediction offsets k, each 1 <= k < G.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Each device scores its own b (G - k) G predictions against the B G^2 targets of the global
  batch, so per-device logits are [b (G-k) G, B G^2] for one k at a time, never [B.., B..].
  Returns (loss, metrics): metrics["cpc_accuracy"] is the fraction of predictions, over all
  offsets, whose target has the highest logit; metrics[f"cpc_loss_k{k}"] each offset's term.
  """
  b, num_offsets, g_rows, g_cols, dim = predictions.shape
  if targets.shape != (b, g_rows, g_cols, dim) or num_offsets != len(offsets):
    raise ValueError(
      f"cpc_loss: predictions {predictions.shape} need targets [b, G, G, T] = "
      f"{(b, g_rows, g_cols, dim)} (got {targets.shape}) and one offset per prediction "
      f"(got {tuple(offsets)})."
    )
  if any(not 1 <= k < g_rows for k in offsets):
    raise ValueError(f"cpc_loss: offsets {tuple(offsets)} must lie in [1, {g_rows}) rows.")
  predictions = predictions.astype(jnp.float32)
  keys, first = gather_rows(targets.astype(jnp.float32), axis_name)  # [B, G, G, T]
  big_b = keys.shape[0]
  keys = keys.reshape(big_b * g_rows * g_cols, dim)
  images = jnp.arange(b) + first  # global index of each local image

  loss, hits, count, metrics = 0.0, 0.0, 0, {}
  for o, k in enumerate(offsets):
    rows = g_rows - k
    queries = predictions[:, o, :rows].reshape(b * rows * g_cols, dim)
    logits = queries @ keys.T  # [b (G-k) G, B G G]
    n, i, j = jnp.meshgrid(images, jnp.arange(rows), jnp.arange(g_cols), indexing="ij")
    labels = ((n * g_rows + i + k) * g_cols + j).reshape(-1)
    positive = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    ce_sum = jnp.sum(jax.nn.logsumexp(logits, axis=1) - positive)
    hit_sum = jnp.sum((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
    if axis_name is not None:
      ce_sum, hit_sum = lax.psum((ce_sum, hit_sum), axis_name)
    num = big_b * rows * g_cols
    metrics[f"cpc_loss_k{k}"] = ce_sum / num
    loss, hits, count = loss + ce_sum / num, hits + hit_sum, count + num
  metrics["cpc_accuracy"] = hits / count
  return loss, metrics
