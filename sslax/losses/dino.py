"""DINO's self-distillation loss, the teacher centering and temperature schedule (Caron et al. 2021).

The student's softmax over K prototypes at temperature tau_s predicts the teacher's centred,
sharpened softmax at tau_t for every pair of different crops (the teacher sees only the global
crops). The per-pair cross entropies only involve one image, so the cross-device terms are the
mean over the global batch and the center, a running mean of the teacher's outputs over the
GLOBAL batch (all-reduced, as in the reference's `update_center`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def teacher_temperature(epoch, warmup_temp: float, final_temp: float, warmup_epochs: int):
  """The reference's schedule: np.linspace(warmup_temp, final_temp, warmup_epochs) over epochs
  0 .. warmup_epochs - 1, then final_temp. `epoch` is an integer (array) epoch index."""
  if warmup_epochs <= 0:
    return jnp.asarray(final_temp, jnp.float32)
  epoch = jnp.asarray(epoch, jnp.float32)
  progress = jnp.clip(epoch / max(warmup_epochs - 1, 1), 0.0, 1.0)
  warm = warmup_temp + (final_temp - warmup_temp) * progress
  return jnp.where(epoch < warmup_epochs, warm, final_temp).astype(jnp.float32)


def dino_loss(
  student_logits, teacher_logits, center, student_temp: float, teacher_temp, *, axis_name=None
):
  """DINO eq. (3): mean over pairs (t, s), s != t, of H(P_teacher(t), P_student(s)).

  Args:
    student_logits: [b, V, K] head outputs of the student for all V crops of b local images,
      the G global crops first (in the teacher's order).
    teacher_logits: [b, G, K] teacher head outputs for the G global crops; stop-gradient here.
    center: [K] the running center, subtracted from the teacher logits.
    student_temp: tau_s (0.1).
    teacher_temp: tau_t (0.04 -> 0.07 during warmup); a scalar, may be traced.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.

  P_teacher = softmax((t - center) / tau_t), P_student = softmax(s / tau_s). Each image has
  G * V - G pairs (teacher crop t, student crop v != t); the loss averages over pairs and over
  the B images of the global batch. Returns (loss, metrics) with the collapse monitors of the
  paper's fig. 7: `teacher_entropy`, the mean entropy of P_teacher (log K when uniform
  collapse), and `teacher_batch_entropy`, the entropy of the global batch mean of P_teacher
  (0 when every image falls on one prototype).
  """
  teacher_probs = centered_teacher_probs(teacher_logits, center, teacher_temp)
  return cross_entropy_over_pairs(student_logits, teacher_probs, student_temp, axis_name=axis_name)


def centered_teacher_probs(teacher_logits, center, teacher_temp):
  """softmax((teacher_logits - center) / teacher_temp) over the last axis, float32, no gradient."""
  teacher = lax.stop_gradient(teacher_logits.astype(jnp.float32) - center)
  return jax.nn.softmax(teacher / teacher_temp, axis=-1)


def cross_entropy_over_pairs(student_logits, teacher_probs, student_temp: float, *, axis_name=None):
  """`dino_loss` given the teacher's targets [b, G, K] (centred softmax, or DINOv2's
  Sinkhorn-Knopp codes): mean over images and over pairs (t, v != t) of
  H(teacher_probs[t], softmax(student_logits[v] / student_temp)), with the collapse monitors."""
  num_global, num_crops = teacher_probs.shape[1], student_logits.shape[1]
  if num_crops < num_global:
    raise ValueError(
      f"DINO: the student sees {num_crops} crops but the teacher {num_global} "
      f"global crops; the student's crops must start with the teacher's."
    )
  teacher_probs = lax.stop_gradient(teacher_probs.astype(jnp.float32))
  student_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
  cross = -jnp.einsum("bgk,bvk->bgv", teacher_probs, student_logp)  # [b, G, V]
  different = jnp.arange(num_global)[:, None] != jnp.arange(num_crops)[None, :]
  num_pairs = num_global * num_crops - num_global
  per_image = jnp.sum(jnp.where(different, cross, 0.0), axis=(1, 2)) / num_pairs

  entropy = -jnp.sum(teacher_probs * jnp.log(jnp.maximum(teacher_probs, 1e-30)), axis=-1)
  sums = (
    jnp.sum(per_image),
    jnp.sum(entropy),
    jnp.sum(teacher_probs, axis=(0, 1)),
    jnp.asarray(per_image.shape[0], jnp.float32),
  )
  if axis_name is not None:
    sums = lax.psum(sums, axis_name)
  loss_sum, entropy_sum, probs_sum, count = sums
  mean_probs = probs_sum / (count * num_global)
  batch_entropy = -jnp.sum(mean_probs * jnp.log(jnp.maximum(mean_probs, 1e-30)))
  return loss_sum / count, {
    "teacher_entropy": entropy_sum / (count * num_global),
    "teacher_batch_entropy": batch_entropy,
  }


def update_center(center, teacher_logits, momentum: float, *, axis_name=None):
  """center <- m center + (1 - m) mean of the teacher outputs over the global batch and crops.

  Args:
    center: [K] the current center, the same on every device.
    teacher_logits: [b, G, K] local teacher outputs (stop-gradient here).
    momentum: m (0.9 in DINO).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.
  """
  teacher = lax.stop_gradient(teacher_logits.astype(jnp.float32))
  total = jnp.sum(teacher, axis=(0, 1))
  count = jnp.asarray(teacher.shape[0] * teacher.shape[1], jnp.float32)
  if axis_name is not None:
    total, count = lax.psum((total, count), axis_name)
  return momentum * center + (1.0 - momentum) * total / count
