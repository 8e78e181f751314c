"""NT-Xent, SimCLR's contrastive loss, with negatives gathered from every device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import MASK_VALUE, gather_rows, l2_normalize


def nt_xent_loss(z1, z2, temperature: float, *, axis_name=None):
  """NT-Xent, the normalised temperature-scaled cross entropy of SimCLR (Chen et al. 2020, eq. 1).

  Args:
    z1, z2: [b, D] local projections of the two views; row i of z1 and row i of z2 are positives.
    temperature: tau.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  Every anchor (2B of them over the global batch) is contrasted with the other 2B - 1
  embeddings of the global batch, so per-device logits are [2b, 2B], never [2B, 2B].

  The value is SimCLR's (google-research/simclr `add_contrastive_loss`): loss_a + loss_b, the
  cross entropy of the view-1 anchors plus that of the view-2 anchors, each averaged over the
  B pairs. That is the sum of the 2B per-anchor terms divided by B, twice their mean; the
  factor matters with LARS and weight decay, whose balance against the gradient it sets.
  Returns (loss, metrics) where metrics["contrastive_acc"] is the fraction of the 2B anchors
  whose positive has the highest logit.
  """
  z1 = l2_normalize(z1.astype(jnp.float32))
  z2 = l2_normalize(z2.astype(jnp.float32))
  b = z1.shape[0]
  g1, offset = gather_rows(z1, axis_name)
  g2, _ = gather_rows(z2, axis_name)
  big_b = g1.shape[0]

  anchors = jnp.concatenate([z1, z2], axis=0)  # [2b, D]
  keys = jnp.concatenate([g1, g2], axis=0)  # [2B, D]
  logits = anchors @ keys.T / temperature  # [2b, 2B]

  rows = jnp.arange(b) + offset  # global ids of local rows
  self_ids = jnp.concatenate([rows, rows + big_b])
  positive_ids = jnp.concatenate([rows + big_b, rows])
  columns = jnp.arange(2 * big_b)
  logits = jnp.where(columns[None, :] == self_ids[:, None], MASK_VALUE, logits)

  positive_logit = jnp.take_along_axis(logits, positive_ids[:, None], axis=1)[:, 0]
  per_anchor = jax.nn.logsumexp(logits, axis=1) - positive_logit
  correct = (jnp.argmax(logits, axis=1) == positive_ids).astype(jnp.float32)
  loss_sum, correct_sum = jnp.sum(per_anchor), jnp.sum(correct)
  if axis_name is not None:
    loss_sum, correct_sum = lax.psum((loss_sum, correct_sum), axis_name)
  # loss_a + loss_b: each view's anchors averaged over the B pairs, then added.
  return loss_sum / big_b, {"contrastive_acc": correct_sum / (2 * big_b)}
