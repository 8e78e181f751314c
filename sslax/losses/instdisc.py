"""Instance discrimination against a memory bank (Wu et al. 2018, "Unsupervised Feature Learning
via Non-Parametric Instance Discrimination"; reference zhirongw/lemniscate.pytorch, lib/).

The bank holds one unit feature per training example: v_i, row i of a [R, D] array (R >= N,
`bank_rows`; rows past N are never sampled nor written). With f the current unit feature of
example i and T the temperature:

* non-parametric softmax (`LinearAverage` + cross entropy), `full_softmax_loss`:
    P(i | f) = exp(v_i.f / T) / sum_{j < N} exp(v_j.f / T),   loss = -mean log P(i | f_i).
* NCE (`NCEAverage` + `NCECriterion`), `nce_loss`: m noise rows drawn uniformly from the N
  examples for every query (the positive v_i is scored beside them), P_j = exp(v_j.f / T) / Z
  with the constant Z = N * mean(exp(v.f / T)) over the B (m + 1) scores of the first batch
  (then fixed: the `z` state), P_n = 1 / N and
    h(j) = P_j / (P_j + m P_n)   (the probability that j came from the data, not the noise),
    loss = -1/B sum_i [log h(pos_i) + sum_{noise j} log(1 - h(j))].
  The reference adds eps = 1e-7 to both denominators; here the same terms are computed in log
  space (stable for the tiny P_j of far rows) without it.
* the bank update after the loss, with the pre-update rows as positives (`update_bank`):
    v_i <- normalize(mu v_i + (1 - mu) f_i)   (mu = 0.5).
  The bank gets no gradient (a buffer in the reference).

Sharding. Every function takes the local rows of the batch and `axis_name` (the mesh axes the
batch is split over; None for one device). The bank is either whole on every device
(`bank_axis=None`) or split by rows over one mesh axis (`bank_axis`: each device holds R / F
contiguous rows). Scores are taken as (queries @ bank rows.T) then the wanted columns: with a
split bank every device scores the queries of its `bank_axis` group against its own rows and
a reduce-scatter returns each device its queries' scores, so no device ever holds the whole
bank or a [b, m + 1, D] gather; per-device memory is [b F, R / F]. Writes are a scatter of the
global batch's rows (all-gathered, B x D) into the rows each device owns.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from sslax.losses.common import MASK_VALUE, gather_rows_invariant, l2_normalize

# Bank rows are padded to a multiple of this, so the FSDP rule (sslax.sharding.fsdp_spec) can
# split them over any power-of-two "fsdp" axis up to it, whatever N is (ImageNet's is odd).
BANK_ROW_MULTIPLE = 1024
PAPER_TEMPERATURE = 0.07
PAPER_MOMENTUM = 0.5
PAPER_NEGATIVES = 4096


def bank_rows(num_examples: int) -> int:
  """Rows of the bank for `num_examples` examples: N rounded up to BANK_ROW_MULTIPLE."""
  return -(-num_examples // BANK_ROW_MULTIPLE) * BANK_ROW_MULTIPLE


def init_bank(rng: jax.Array, num_rows: int, dim: int) -> jax.Array:
  """[num_rows, dim] uniform in [-a, a], a = sqrt(3 / dim): rows of about unit norm, the
  reference's `torch.rand(N, D) * 2 stdv - stdv` with stdv = 1 / sqrt(D / 3)."""
  a = math.sqrt(3.0 / dim)
  return jax.random.uniform(rng, (num_rows, dim), jnp.float32, -a, a)


def bank_dots(x, bank, indices, *, bank_axis=None):
  """Scores <x_i, bank[indices_ik]> of local queries against bank rows.

  Args:
    x: [b, D] local queries.
    bank: [R_local, D] this device's bank rows (the whole bank when bank_axis is None).
    indices: [b, K] int global row ids in [0, R).
    bank_axis: mesh axis the bank rows are split over (contiguous blocks, in axis order).

  Returns [b, K] float32. Gradients flow to x only (the bank is a buffer).
  """
  x = x.astype(jnp.float32)
  bank = lax.stop_gradient(bank.astype(jnp.float32))
  if bank_axis is None:
    return jnp.take_along_axis(x @ bank.T, indices, axis=1)
  rows = bank.shape[0]
  queries = lax.all_gather(x, bank_axis, axis=0, tiled=True)  # the group's queries [b F, D]
  wanted = lax.all_gather(indices, bank_axis, axis=0, tiled=True) - lax.axis_index(bank_axis) * rows
  mine = (wanted >= 0) & (wanted < rows)
  dots = jnp.take_along_axis(queries @ bank.T, jnp.clip(wanted, 0, rows - 1), axis=1)
  # Every score is on exactly one device: the sum hands each device its own queries' rows.
  return lax.psum_scatter(jnp.where(mine, dots, 0.0), bank_axis, scatter_dimension=0, tiled=True)


def nce_loss(dots, z, *, temperature: float, num_examples: int, axis_name=None):
  """NCE of the non-parametric softmax (Wu et al. eq. 5-7; lemniscate's NCECriterion).

  Args:
    dots: [b, 1 + m] local scores v.f: column 0 the query's own bank row, then m noise rows.
    z: float32 scalar, the normalising constant; <= 0 = not set yet: it is set from this
      (global) batch, Z = N * mean exp(dots / T), as the reference does on its first batch.
    temperature: T.
    num_examples: N (the noise distribution is uniform, P_n = 1 / N).
    axis_name: mesh axes the batch is split over; None for one device.

  Returns (loss averaged over the global batch, metrics, z used). Z is a constant: no gradient
  flows through it. metrics: `positive_prob` (mean P of the positive, the reference's
  `prob`), `contrastive_acc` (positive scored above every noise row), `nce_z`.
  """
  dots = dots.astype(jnp.float32)
  num_noise, batch = dots.shape[1] - 1, jnp.asarray(dots.shape[0], jnp.float32)
  scores = dots / temperature
  exp_sum = jnp.sum(jnp.exp(scores))
  if axis_name is not None:
    exp_sum, batch = lax.psum((exp_sum, batch), axis_name)
  first = exp_sum / (batch * (num_noise + 1)) * num_examples
  z = lax.stop_gradient(jnp.where(z > 0, z, first).astype(jnp.float32))
  log_p = scores - jnp.log(z)  # log P_j
  log_noise = math.log(num_noise / num_examples)  # log(m P_n)
  log_denominator = jnp.logaddexp(log_p, log_noise)  # log(P_j + m P_n)
  log_h_pos = log_p[:, 0] - log_denominator[:, 0]
  log_h_noise = log_noise - log_denominator[:, 1:]
  sums = (
    -(jnp.sum(log_h_pos) + jnp.sum(log_h_noise)),
    jnp.sum(jnp.exp(log_p[:, 0])),
    jnp.sum((dots[:, 0] > jnp.max(dots[:, 1:], axis=1)).astype(jnp.float32)),
  )
  if axis_name is not None:
    sums = lax.psum(sums, axis_name)
  loss_sum, prob_sum, correct = sums
  metrics = {"positive_prob": prob_sum / batch, "contrastive_acc": correct / batch, "nce_z": z}
  return loss_sum / batch, metrics, z


def full_softmax_loss(
  x, bank, labels, *, temperature: float, num_examples: int, axis_name=None, bank_axis=None
):
  """Cross entropy of the non-parametric softmax over all N bank rows (Wu et al. eq. 2;
  lemniscate's LinearAverage + CrossEntropyLoss): exact, for a bank small enough to gather.

  Args:
    x: [b, D] local unit features; labels: [b] their example indices; bank: as `bank_dots`.

  Per-device logits are [b, R]. Returns (loss averaged over the global batch, metrics) with
  metrics["contrastive_acc"]: the own row has the highest score among the N.
  """
  x = x.astype(jnp.float32)
  bank = lax.stop_gradient(bank.astype(jnp.float32))
  if bank_axis is not None:
    bank = lax.all_gather(bank, bank_axis, axis=0, tiled=True)
  logits = x @ bank.T / temperature  # [b, R]
  logits = jnp.where(jnp.arange(bank.shape[0]) < num_examples, logits, MASK_VALUE)
  own = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  sums = (
    jnp.sum(jax.nn.logsumexp(logits, axis=1) - own),
    jnp.sum((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32)),
    jnp.asarray(x.shape[0], jnp.float32),
  )
  if axis_name is not None:
    sums = lax.psum(sums, axis_name)
  loss_sum, correct, batch = sums
  return loss_sum / batch, {"contrastive_acc": correct / batch}


def update_bank(bank, features, labels, *, momentum: float, axis_name=None, bank_axis=None):
  """The bank after the global batch's momentum update: v_i <- normalize(mu v_i + (1 - mu) f_i).

  Args:
    bank: [R_local, D] this device's rows (see `bank_dots`).
    features: [b, D] local features (normalised here, behind a stop-gradient).
    labels: [b] their example indices; negative ones (no index) are not written.
    momentum: mu (the reference: 0.5).

  Every device receives the B rows of the global batch (device order) and writes those it
  holds, so the result equals the single-device update of the whole bank.
  """
  feats = gather_rows_invariant(
    lax.stop_gradient(l2_normalize(features.astype(jnp.float32))), axis_name
  )
  ids = gather_rows_invariant(labels, axis_name)
  rows = bank.shape[0]
  if bank_axis is not None:
    ids = ids - lax.axis_index(bank_axis) * rows
  mine = (ids >= 0) & (ids < rows)
  old = bank[jnp.clip(ids, 0, rows - 1)].astype(jnp.float32)
  new = l2_normalize(momentum * old + (1.0 - momentum) * feats)
  return bank.at[jnp.where(mine, ids, rows)].set(new.astype(bank.dtype), mode="drop")


def memory_bank_loss(
  x,
  labels,
  noise,
  bank,
  z,
  *,
  loss: str,
  temperature: float,
  num_examples: int,
  axis_name=None,
  bank_axis=None,
):
  """The loss of local features x [b, D] (normalised here) against a bank, by name.

  loss="nce": `nce_loss` on the scores of [own row, noise [b, m] rows]; "softmax":
  `full_softmax_loss` (noise unused). Returns (loss, metrics, z) (z unchanged for softmax).
  """
  x = l2_normalize(x.astype(jnp.float32))
  if loss == "softmax":
    value, metrics = full_softmax_loss(
      x,
      bank,
      labels,
      temperature=temperature,
      num_examples=num_examples,
      axis_name=axis_name,
      bank_axis=bank_axis,
    )
    return value, metrics, z
  if loss != "nce":
    raise ValueError(f"Unknown memory-bank loss {loss!r}; choose 'nce' or 'softmax'.")
  indices = jnp.concatenate([labels[:, None], noise], axis=1)
  dots = bank_dots(x, bank, indices, bank_axis=bank_axis)
  return nce_loss(dots, z, temperature=temperature, num_examples=num_examples, axis_name=axis_name)
