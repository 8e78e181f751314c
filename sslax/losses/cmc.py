"""Contrastive Multiview Coding's two-view loss (Tian, Krishnan & Isola 2019; reference
HobbitLong/CMC, NCE/ and train_CMC.py): L = L(L -> ab) + L(ab -> L).

Each direction contrasts the features of one view with candidates of the other view (eq. 2):
the anchor's own other-view feature is the positive, other examples' are the negatives.
train_CMC.py adds the two directions (`loss = l_loss + ab_loss`); so do we.

* `cross_view_batch_loss`: the negatives are the other B - 1 examples of the global batch
  (gathered from every device, as SimCLR's), softmax cross entropy at temperature T:
    l_loss = -1/B sum_i log exp(l_i.ab_i / T) / sum_j exp(l_i.ab_j / T), ab_loss the same with
  the views swapped (CLIP's loss, twice). Per-device logits are [b, B].
* `cross_view_bank_loss`: the reference's memory bank (`NCEAverage`): one bank per view, the
  L features scored against the ab bank and the ab features against the L bank (the same
  m noise rows for both, as the reference draws one `idx`), NCE with one constant Z per
  direction, then each bank's momentum update with its own view's features
  (`sslax.losses.instdisc`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from sslax.losses import instdisc
from sslax.losses.clip import clip_loss


def cross_view_batch_loss(z_l, z_ab, temperature: float, *, axis_name=None):
  """CMC's loss with in-batch negatives: l_loss + ab_loss.

  Args:
    z_l, z_ab: [b, D] local features of the L and ab encoders (normalised here); row i of both
      is the same image.
    temperature: T.
    axis_name: mesh axes the batch is split over; None for one device.

  This is CLIP's symmetric InfoNCE (`sslax.losses.clip.clip_loss`, per-device logits [b, B])
  at the fixed scale 1 / T: CLIP averages the two directions, train_CMC.py adds them, so the
  value is twice CLIP's. Returns (loss, metrics): `l_to_ab_acc`, `ab_to_l_acc` (fraction of
  anchors whose own pair scores highest) and their mean `contrastive_acc`. Gradients reach
  both encoders through the anchors and, via the gather, the candidates.
  """
  log_scale = jnp.asarray(-math.log(temperature), jnp.float32)
  loss, metrics = clip_loss(z_l, z_ab, log_scale, axis_name=axis_name)
  l_acc, ab_acc = metrics["image_to_text_acc"], metrics["text_to_image_acc"]
  return 2.0 * loss, {
    "l_to_ab_acc": l_acc,
    "ab_to_l_acc": ab_acc,
    "contrastive_acc": (l_acc + ab_acc) / 2,
  }


def cross_view_bank_loss(
  z_l,
  z_ab,
  labels,
  noise,
  bank_l,
  bank_ab,
  nce_z_l,
  nce_z_ab,
  *,
  temperature: float,
  momentum: float,
  num_examples: int,
  axis_name=None,
  bank_axis=None,
):
  """CMC's loss against two memory banks (NCEAverage + NCECriterion of the reference).

  Args:
    z_l, z_ab: [b, D] local features of the two encoders; labels: [b] their example indices.
    noise: [b, m] noise row ids (uniform over the N examples), shared by both directions.
    bank_l, bank_ab: the views' banks (this device's rows, see `instdisc.bank_dots`).
    nce_z_l, nce_z_ab: the directions' normalising constants (<= 0: set from this batch).

  Returns (l_loss + ab_loss, metrics, (new bank_l, new bank_ab), (z_l used, z_ab used)).
  """
  common = dict(
    loss="nce",
    temperature=temperature,
    num_examples=num_examples,
    axis_name=axis_name,
    bank_axis=bank_axis,
  )
  # The reference's out_l: the L features against the ab bank; out_ab: ab against the L bank.
  l_loss, l_metrics, new_z_l = instdisc.memory_bank_loss(
    z_l, labels, noise, bank_ab, nce_z_l, **common
  )
  ab_loss, ab_metrics, new_z_ab = instdisc.memory_bank_loss(
    z_ab, labels, noise, bank_l, nce_z_ab, **common
  )
  update = dict(momentum=momentum, axis_name=axis_name, bank_axis=bank_axis)
  banks = (
    instdisc.update_bank(bank_l, z_l, labels, **update),
    instdisc.update_bank(bank_ab, z_ab, labels, **update),
  )
  metrics = {
    "l_loss": l_loss,
    "ab_loss": ab_loss,
    "l_prob": l_metrics["positive_prob"],
    "ab_prob": ab_metrics["positive_prob"],
    "contrastive_acc": (l_metrics["contrastive_acc"] + ab_metrics["contrastive_acc"]) / 2,
    "nce_z_l": new_z_l,
    "nce_z_ab": new_z_ab,
  }
  return l_loss + ab_loss, metrics, banks, (new_z_l, new_z_ab)
