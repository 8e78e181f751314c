"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023), full-gather and ring-chunked.

On the global batch of B image-text pairs, with unit embeddings x_i, y_j,

  S_ij = t * <x_i, y_j> + b,     t = exp(t'), learnable t' (init log 10) and b (init -10)
  L = -1/B * sum_i sum_j log sigmoid(z_ij * S_ij),   z_ij = 1 if i == j else -1

Every pair is an independent binary problem, so no softmax normalisation crosses devices.

* `siglip_loss(..., chunked=False)`: all-gather the texts, per-device logits [b, B].
* `siglip_loss(..., chunked=True)`: the paper's chunked implementation (section 3.3): text
  blocks of b rows travel around the ring of devices (`lax.ppermute`), each device adds the
  loss of its images against the block it holds ([b, b] logits). The backward pass (custom VJP)
  runs the ring again, carrying each block's gradient home, so nothing of size B is stored.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.clip import pass_to_next, ring_size
from sslax.losses.common import gather_rows, l2_normalize

INIT_LOG_SCALE = 2.302585092994046  # log 10 (paper: t' = log 10)
INIT_BIAS = -10.0


def _augment(u, y, bias):
  """Folds the bias into the dot product: [u, b] . [y, 1] = u . y + b (so the ring core only
  sees two arrays and the bias gradient comes from ordinary autodiff outside it)."""
  b = u.shape[0]
  return (
    jnp.concatenate([u, jnp.broadcast_to(bias, (b, 1)).astype(u.dtype)], axis=1),
    jnp.concatenate([y, jnp.ones((b, 1), y.dtype)], axis=1),
  )


def _ring_forward(u, y, axis_name):
  n = ring_size(axis_name)
  s0 = u @ y.T
  diag = jnp.sum(u * y, axis=1)
  # -log sigmoid(-s) on every pair of the own block, then fix the positives on the diagonal.
  loss = (
    jnp.sum(jax.nn.softplus(s0)) - jnp.sum(jax.nn.softplus(diag)) + jnp.sum(jax.nn.softplus(-diag))
  )
  row_max_neg = jnp.max(jnp.where(jnp.eye(u.shape[0], dtype=bool), -jnp.inf, s0), axis=1)

  def step(_, carry):
    loss, row_max_neg, y_blk = carry
    y_blk = pass_to_next(y_blk, axis_name, n)
    s = u @ y_blk.T  # [b, b], all negatives
    return loss + jnp.sum(jax.nn.softplus(s)), jnp.maximum(row_max_neg, jnp.max(s, 1)), y_blk

  loss, row_max_neg, _ = lax.fori_loop(1, n, step, (loss, row_max_neg, y))
  sums = (loss, jnp.sum((diag > row_max_neg).astype(jnp.float32)))
  if axis_name is not None:
    sums = lax.psum(sums, axis_name)
  return sums


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _ring_siglip(u, y, axis_name):
  return _ring_forward(u, y, axis_name)


def _ring_siglip_fwd(u, y, axis_name):
  return _ring_forward(u, y, axis_name), (u, y)


def _ring_siglip_bwd(axis_name, residuals, cotangents):
  """dL/dS_ij = g * (sigmoid(S_ij) - delta_ij); each text block's gradient rides with it."""
  u, y = residuals
  g = cotangents[0]
  n = ring_size(axis_name)
  g0 = g * (jax.nn.sigmoid(u @ y.T) - jnp.eye(u.shape[0], dtype=u.dtype))
  du = g0 @ y

  def step(_, carry):
    du, (y_blk, dy_blk) = carry
    y_blk, dy_blk = pass_to_next((y_blk, dy_blk), axis_name, n)
    gk = g * jax.nn.sigmoid(u @ y_blk.T)
    return du + gk @ y_blk, (y_blk, dy_blk + gk.T @ u)

  du, (_, dy) = lax.fori_loop(1, n, step, (du, (y, g0.T @ u)))
  return du, pass_to_next(dy, axis_name, n)


_ring_siglip.defvjp(_ring_siglip_fwd, _ring_siglip_bwd)


def siglip_loss(image_emb, text_emb, log_scale, bias, *, axis_name=None, chunked: bool = False):
  """SigLIP's sigmoid loss over the global batch, normalised by B as in the paper.

  Args:
    image_emb, text_emb: [b, D] local embeddings (L2-normalised here); row i are a pair.
    log_scale: scalar t' (the scale is exp(t'), not clipped); bias: scalar b.
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.
    chunked: False: all-gather, logits [b, B] per device. True: ring exchange, [b, b].

  Returns (loss, metrics): image_to_text_acc (the positive beats every negative of its row),
  logit_scale, logit_bias.
  """
  x = l2_normalize(image_emb.astype(jnp.float32))
  y = l2_normalize(text_emb.astype(jnp.float32))
  scale = jnp.exp(log_scale.astype(jnp.float32))
  bias = bias.astype(jnp.float32)
  b = x.shape[0]
  if chunked:
    u, yb = _augment(scale * x, y, bias)
    loss_sum, correct = _ring_siglip(u, yb, axis_name)
  else:
    gy, offset = gather_rows(y, axis_name)
    logits = scale * x @ gy.T + bias  # [b, B]
    positive = jnp.arange(gy.shape[0])[None, :] == (jnp.arange(b) + offset)[:, None]
    labels = jnp.where(positive, 1.0, -1.0)
    loss_sum = -jnp.sum(jax.nn.log_sigmoid(labels * logits))
    neg_max = jnp.max(jnp.where(positive, -jnp.inf, logits), axis=1)
    correct = jnp.sum((jnp.sum(jnp.where(positive, logits, 0.0), 1) > neg_max).astype(jnp.float32))
    if axis_name is not None:
      loss_sum, correct = lax.psum((loss_sum, correct), axis_name)
  big_b = b * ring_size(axis_name)
  return loss_sum / big_b, {
    "image_to_text_acc": correct / big_b,
    "logit_scale": scale,
    "logit_bias": bias,
  }
