"""BEiT's masked image modelling loss (microsoft/unilm, beit2/engine_for_pretraining.py): the
cross-entropy of the predicted visual token at each masked patch against the tokenizer's code
of that patch, averaged over the masked patches of the global batch (and nothing else).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def masked_patch_ids(masks, size: int):
  """The masked positions of each row in a fixed-size buffer.

  masks [B, N] bool; size bounds each row's masked count (BEiT: num_mask_patches). Returns
  (ids [B, size] int32: the row's masked patch indices in increasing order, padded with 0;
  valid [B, size] bool: True for real entries). A row with more than `size` masked patches
  would lose the rest, so `size` must bound the masks (beit_masks masks at most its count).
  """

  def one(row):
    (ids,) = jnp.nonzero(row, size=size, fill_value=0)
    return ids.astype(jnp.int32), jnp.arange(size) < jnp.sum(row)

  return jax.vmap(one)(masks)


def masked_token_cross_entropy(logits, targets, valid, *, axis_name=None):
  """Cross-entropy over the masked patches only: sum over valid entries of
  -log softmax(logits)[target] / (number of valid entries), over the GLOBAL batch.

  logits [B, U, K] (U: the masked-patch buffer), targets [B, U] int, valid [B, U] bool.
  Returns (loss, accuracy of the argmax over the valid entries) -- the reference's `loss` and
  `mlm_acc` (nn.CrossEntropyLoss over logits of `x[bool_masked_pos]`).
  """
  logits = logits.astype(jnp.float32)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  v = valid.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  sums = jnp.stack([-jnp.sum(picked * v), jnp.sum(correct * v), jnp.sum(v)])
  if axis_name is not None:
    sums = lax.psum(sums, axis_name)
  count = jnp.maximum(sums[2], 1.0)
  return sums[0] / count, sums[1] / count
