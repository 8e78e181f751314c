"""Exemplar-CNN's loss (Dosovitskiy et al. 2014, "Discriminative Unsupervised Feature Learning with
Convolutional Neural Networks"; 2016 TPAMI "... with Exemplar Convolutional Neural Networks").

Every seed image i is a surrogate class; its members are the random transformations T x_i. A
linear classifier over the encoder's features, logits = W f(T x_i) + b, is trained with the
multinomial logistic loss (the paper's eq. 1, averaged over the batch instead of summed over
classes and transformations):

  L = -1/B sum_b log softmax(logits_b)[y_b],   y_b = the seed index of example b.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jax import lax


def exemplar_loss(logits, labels, *, axis_name=None):
  """Mean softmax cross-entropy over the surrogate classes and top-1 accuracy.

  Args:
    logits: [b, K] classifier outputs for the local examples (K surrogate classes).
    labels: [b] int surrogate class (seed index) of each example, in [0, K).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device or for a
      global batch under `jax.jit` (XLA then sums over devices itself).

  Returns (loss, {"pretext_accuracy"}): the mean over the global batch of both.
  """
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  total, hits, count = jnp.sum(ce), jnp.sum(correct), jnp.float32(ce.shape[0])
  if axis_name is not None:
    total, hits, count = lax.psum((total, hits, count), axis_name)
  return total / count, {"pretext_accuracy": hits / count}
