"""CLIP's symmetric contrastive loss (Radford et al. 2021), full-gather and ring-chunked.

Both variants compute, on the global batch of B image-text pairs,

  S_ij = s * <x_i, y_j>            x, y: unit image / text embeddings, s = exp(t')
  L = 1/(2B) * sum_i [ (logsumexp_j S_ij - S_ii) + (logsumexp_j S_ji - S_ii) ]

(cross entropy of each image over all texts plus each text over all images).

The loss uses exp(t') as it is: the cap of 100 on the scale is a clamp of the parameter t' to
[0, ln 100] after every optimizer step (`clamp_log_scale`, applied by
`sslax.methods.clip.CLIP.constrain_params`), as open_clip does after `optimizer.step()`; the
forward pass never cuts the gradient of t'.

* `clip_loss(..., chunked=False)`: every device all-gathers the embeddings and builds its
  [b, B] logits (b = B / devices); gradients flow back through the gather. Peak memory grows
  with B.
* `clip_loss(..., chunked=True)`: a ring exchange (`lax.ppermute`): the text embeddings travel
  around the devices in blocks of b rows, each device only ever holds a [b, b] block of logits
  and running log-sum-exps. The backward pass runs the ring again (custom VJP) instead of
  storing every block, so per-device memory is independent of the number of devices, i.e. of
  B at a fixed per-device batch.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import gather_rows, l2_normalize

MAX_LOGIT_SCALE = 100.0  # CLIP keeps the learned logit scale exp(t') at most 100


def clamp_log_scale(log_scale, max_scale: float = MAX_LOGIT_SCALE):
  """The parameter t' clamped to [0, ln max_scale] (scale in [1, max_scale]), in its own dtype.

  Applied to the parameter after each optimizer step, not inside the loss (open_clip's
  `logit_scale.clamp_(0, math.log(100))` under no_grad).
  """
  return jnp.clip(log_scale, 0.0, math.log(max_scale)).astype(log_scale.dtype)


# --------------------------------------------------------------------------------------------
# Ring helpers (shared with siglip.py)
# --------------------------------------------------------------------------------------------


def ring_size(axis_name) -> int:
  return 1 if axis_name is None else lax.axis_size(axis_name)


def pass_to_next(tree, axis_name, n: int):
  """Sends every array of `tree` from device r to device r + 1 (mod n) along the batch axes."""
  if n == 1:
    return tree
  perm = [(i, (i + 1) % n) for i in range(n)]
  return jax.tree.map(lambda a: lax.ppermute(a, axis_name, perm), tree)


def _lse(s, axis):
  return jax.nn.logsumexp(s, axis=axis)


# --------------------------------------------------------------------------------------------
# Ring (chunked) core with a custom VJP: S = u @ y.T where u already holds the scale.
# --------------------------------------------------------------------------------------------


def _ring_forward(u, y, axis_name):
  """-> (global loss sum, correct image->text, correct text->image, row_lse [b], col_lse [b])."""
  n = ring_size(axis_name)
  s0 = u @ y.T  # own block: holds the positives
  diag = jnp.sum(u * y, axis=1)
  row_lse, row_max = _lse(s0, 1), jnp.max(s0, 1)
  # The column statistics of a text block travel with it and are complete when it gets home.
  blk = (y, _lse(s0, 0), jnp.max(s0, 0))

  def step(_, carry):
    row_lse, row_max, blk = carry
    blk = pass_to_next(blk, axis_name, n)
    y_blk, col_lse, col_max = blk
    s = u @ y_blk.T  # [b, b]: local images x a text block
    return (
      jnp.logaddexp(row_lse, _lse(s, 1)),
      jnp.maximum(row_max, jnp.max(s, 1)),
      (y_blk, jnp.logaddexp(col_lse, _lse(s, 0)), jnp.maximum(col_max, jnp.max(s, 0))),
    )

  row_lse, row_max, blk = lax.fori_loop(1, n, step, (row_lse, row_max, blk))
  col_lse, col_max = pass_to_next(blk[1:], axis_name, n)  # the last hop brings them home
  sums = (
    jnp.sum(row_lse - diag) + jnp.sum(col_lse - diag),
    jnp.sum((diag >= row_max).astype(jnp.float32)),
    jnp.sum((diag >= col_max).astype(jnp.float32)),
  )
  if axis_name is not None:
    sums = lax.psum(sums, axis_name)
  return sums, (row_lse, col_lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _ring_clip(u, y, axis_name):
  return _ring_forward(u, y, axis_name)[0]


def _ring_clip_fwd(u, y, axis_name):
  sums, (row_lse, col_lse) = _ring_forward(u, y, axis_name)
  return sums, (u, y, row_lse, col_lse)


def _ring_clip_bwd(axis_name, residuals, cotangents):
  """dL/dS_ij = g * (P_ij + Q_ij - 2 delta_ij): P the row softmax, Q the column softmax.

  The ring runs again: each text block carries its column log-sum-exps and the gradient
  accumulated for it so far; after a full turn the gradient arrives back at its owner.
  """
  u, y, row_lse, col_lse = residuals
  g = cotangents[0]  # accuracies have no gradient
  n = ring_size(axis_name)

  def grad_block(s, col_lse_blk):
    return g * (jnp.exp(s - row_lse[:, None]) + jnp.exp(s - col_lse_blk[None, :]))

  g0 = grad_block(u @ y.T, col_lse) - 2 * g * jnp.eye(u.shape[0], dtype=u.dtype)
  du = g0 @ y
  blk = (y, col_lse, g0.T @ u)

  def step(_, carry):
    du, blk = carry
    y_blk, col_lse_blk, dy_blk = pass_to_next(blk, axis_name, n)
    gk = grad_block(u @ y_blk.T, col_lse_blk)
    return du + gk @ y_blk, (y_blk, col_lse_blk, dy_blk + gk.T @ u)

  du, blk = lax.fori_loop(1, n, step, (du, blk))
  dy = pass_to_next(blk[2], axis_name, n)
  return du, dy


_ring_clip.defvjp(_ring_clip_fwd, _ring_clip_bwd)


# --------------------------------------------------------------------------------------------
# Public loss
# --------------------------------------------------------------------------------------------


def clip_loss(
  image_emb,
  text_emb,
  log_scale,
  *,
  axis_name=None,
  chunked: bool = False,
):
  """CLIP's symmetric InfoNCE over the global batch.

  Args:
    image_emb: [b, D] local image embeddings (L2-normalised here).
    text_emb: [b, D] local text embeddings; row i is the caption of image i.
    log_scale: scalar t', the learnable log of the logit scale (CLIP initialises it to
      log(1 / 0.07)); the scale is exp(t'), unclipped here (the trainer clamps t' after
      each step, see `clamp_log_scale`).
    axis_name: mesh axis (or axes) the batch is sharded over; None for one device.
    chunked: False: all-gather, per-device logits [b, B]. True: ring exchange, per-device
      logits [b, b] and memory independent of the number of devices.

  Returns (loss, metrics): metrics image_to_text_acc / text_to_image_acc (fraction of rows
  whose own pair has the highest logit) and logit_scale.
  """
  x = l2_normalize(image_emb.astype(jnp.float32))
  y = l2_normalize(text_emb.astype(jnp.float32))
  scale = jnp.exp(log_scale.astype(jnp.float32))
  u = scale * x
  if chunked:
    loss_sum, i2t, t2i = _ring_clip(u, y, axis_name)
  else:
    gx, offset = gather_rows(x, axis_name)
    gy, _ = gather_rows(y, axis_name)
    labels = jnp.arange(x.shape[0]) + offset  # global ids of the local rows
    logits_i = u @ gy.T  # [b, B] local images x all texts
    logits_t = scale * y @ gx.T  # [b, B] local texts x all images
    pos = jnp.sum(u * y, axis=1)
    loss_sum = jnp.sum(_lse(logits_i, 1) - pos) + jnp.sum(_lse(logits_t, 1) - pos)
    i2t = jnp.sum((jnp.argmax(logits_i, 1) == labels).astype(jnp.float32))
    t2i = jnp.sum((jnp.argmax(logits_t, 1) == labels).astype(jnp.float32))
    if axis_name is not None:
      loss_sum, i2t, t2i = lax.psum((loss_sum, i2t, t2i), axis_name)
  big_b = x.shape[0] * ring_size(axis_name)
  return loss_sum / (2 * big_b), {
    "image_to_text_acc": i2t / big_b,
    "text_to_image_acc": t2i / big_b,
    "logit_scale": scale,
  }
