"""DINOv2's losses beside DINO's: the iBOT patch loss, the KoLeo regulariser and
Sinkhorn-Knopp centering of the teacher (Oquab et al. 2023; facebookresearch/dinov2,
`dinov2/loss/`). Pure functions with `axis_name`: the single-device math is the sharded math.

Where the reference reduces per GPU, sslax reduces over the global batch, so a run means the
same thing on any number of devices:
  - KoLeo: the reference searches each sample's nearest neighbour within its GPU's batch
    (`koleo_loss` per device chunk); here within the global batch (all-gathered, O(b x B)
    memory per device like the contrastive losses). A larger batch has closer neighbours, so
    at equal weight the regulariser is somewhat stronger than the reference's per-GPU one.
  - iBOT: the reference averages per-sample masked-patch means over its GPU's samples and DDP
    averages the GPUs: the global-batch mean when every GPU has the same batch, as here.
  - Sinkhorn-Knopp: as the reference, every sum over samples (or masked patches) is global.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import gather_rows, l2_normalize
from sslax.losses.swav import sinkhorn_knopp


def _psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def sinkhorn_knopp_teacher(teacher_logits, teacher_temp: float, *, mask=None, axis_name=None):
  """Teacher targets by Sinkhorn-Knopp (3 iterations) instead of centring + softmax.

  teacher_logits: [b, K] (class tokens) or [b, N, K] (patch tokens; `mask` [b, N] chooses the
  masked ones, which are the only samples of the assignment problem, as the reference's
  `sinkhorn_knopp_teacher(..., n_masked_patches_tensor)`). Returns float32 targets of the same
  shape whose rows sum to 1 (zero rows where `mask` is False), without gradient.
  """
  shape = teacher_logits.shape
  flat = teacher_logits.reshape(-1, shape[-1])
  weights = None if mask is None else mask.reshape(-1)
  q = sinkhorn_knopp(flat, teacher_temp, 3, axis_name=axis_name, sample_weights=weights)
  return q.reshape(shape)


def koleo_loss(x, *, axis_name=None, eps: float = 1e-8):
  """Kozachenko-Leonenko entropy estimator: -mean_i log(||x_i - x_nn(i)|| + eps) of the
  l2-normalised rows, nn(i) the nearest other row of the global batch.

  x: [b, D] local rows (DINOv2: the student's class tokens before the head). The distance is
  torch's PairwiseDistance(eps=1e-8), ||x_i - x_j + eps||, as the reference; gradients reach
  both x_i and its neighbour. Returns a scalar, the mean over the global batch.
  """
  x = l2_normalize(x.astype(jnp.float32), eps=eps * eps)
  everyone, offset = gather_rows(x, axis_name)  # [B, D]
  dots = lax.stop_gradient(x @ everyone.T)  # [b, B]: the nearest neighbour is not differentiated
  rows = jnp.arange(x.shape[0])
  dots = dots.at[rows, offset + rows].set(-jnp.inf)  # not oneself
  neighbour = everyone[jnp.argmax(dots, axis=1)]
  distance = jnp.sqrt(jnp.sum(jnp.square(x - neighbour + eps), axis=-1))
  total = _psum(jnp.sum(-jnp.log(distance + eps)), axis_name)
  count = _psum(jnp.asarray(x.shape[0], jnp.float32), axis_name)
  return total / count


def ibot_patch_loss(student_logits, teacher_probs, mask, student_temp: float, *, axis_name=None):
  """iBOT's masked-patch loss: cross-entropy of the teacher's patch targets against the
  student's predictions on the patches the student did not see.

  student_logits: [b, N, K] student head outputs of the patch tokens (of masked images).
  teacher_probs: [b, N, K] targets (centred softmax or `sinkhorn_knopp_teacher`).
  mask: [b, N] bool, True where the patch was masked for the student.
  Each sample's loss is its mean over its masked patches (0 when it has none, as the
  reference's clamp(min=1)), and the loss is the mean over every sample of the global batch,
  masked or not. Returns a scalar.
  """
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
  ce = -jnp.sum(lax.stop_gradient(teacher_probs) * log_p, axis=-1)  # [b, N]
  m = mask.astype(jnp.float32)
  per_sample = jnp.sum(ce * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
  total = _psum(jnp.sum(per_sample), axis_name)
  count = _psum(jnp.asarray(m.shape[0], jnp.float32), axis_name)
  return total / count


def ibot_patch_loss_gathered(
  student_logits, teacher_probs, weights, num_samples: int, student_temp: float, *, axis_name=None
):
  """`ibot_patch_loss` on masked patch tokens gathered into fixed-size rows (the reference's
  `forward_masked` on its `upperbound` buffer).

  student_logits: [u, K] student patch-head outputs of gathered masked patches (and padding).
  teacher_probs: [u, K] their targets.
  weights: [u] 1 / (masked patches of the row's sample) for a real row, 0 for padding.
  num_samples: the number of samples (masked or not) of the GLOBAL batch the rows came from.
  Returns sum_u weights_u H(teacher_u, softmax(student_u / T)) / num_samples: each sample's mean
  over its masked patches, averaged over every sample, as `ibot_patch_loss`.
  """
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
  ce = -jnp.sum(lax.stop_gradient(teacher_probs) * log_p, axis=-1)  # [u]
  total = _psum(jnp.sum(ce * lax.stop_gradient(weights)), axis_name)
  return total / num_samples


def update_patch_center(center, teacher_logits, valid, momentum: float, *, axis_name=None):
  """iBOT's patch centre: center <- m center + (1 - m) mean of the teacher's patch-head outputs
  over the masked patches of the global batch (`valid` [u] marks real rows of the gathered
  [u, K] buffer). The reference averages over its whole padded buffer (its `[:n_masked]` slice
  acts on a leading axis of size 1); here padding rows do not count."""
  t = lax.stop_gradient(teacher_logits.astype(jnp.float32))
  v = valid.astype(jnp.float32)
  total = _psum(jnp.sum(t * v[:, None], axis=0), axis_name)
  count = _psum(jnp.sum(v), axis_name)
  return momentum * center + (1.0 - momentum) * total / jnp.maximum(count, 1.0)
