"""Vector quantisation as BEiT v2's VQ-KD tokenizer does it (microsoft/unilm,
beit2/norm_ema_quantizer.py `NormEMAVectorQuantizer`, beit2/modeling_vqkd.py): l2-normalised
features, the nearest of K l2-normalised codes, a straight-through gradient, a commitment term,
and the codebook learnt by EMA of the (normalised) means of the features assigned to each code.

Pure functions. Those that sum over the batch take `axis_name` (the mesh axes the batch is
sharded over, inside `shard_map`; None for one device or for global arrays under `jit`), so the
statistics are the GLOBAL batch's, as the reference's all_reduce of `bins` and `embed_sum`.

Shapes: features z [..., d] (any leading batch / patch axes), codebook [K, d], ids [...] int32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# F.normalize's default eps: x / max(||x||, eps).
NORM_EPS = 1e-12


def _psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def l2_normalize(x, eps: float = NORM_EPS):
  """x [..., d] / max(||x||, eps) along the last axis (torch's F.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def nearest_code(z, codebook):
  """ids [...] int32 of the code nearest to each row of z [..., d] in squared Euclidean distance
  (the reference's |z|^2 + |e|^2 - 2 z.e; ties go to the lowest index, as torch.argmin)."""
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  dots = jnp.einsum("...d,kd->...k", z, codebook, precision=lax.Precision.HIGHEST)
  dist = (
    jnp.sum(jnp.square(z), axis=-1, keepdims=True)
    + jnp.sum(jnp.square(codebook), axis=-1)
    - 2 * dots
  )
  return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def quantize(z, codebook, beta: float = 1.0, *, axis_name=None):
  """The quantiser's forward: z [..., d] (already l2-normalised), codebook [K, d].

  Returns (z_q [..., d]: the nearest codes, with the straight-through gradient of z: the value
  of the code, the gradient passed to z unchanged; ids [...]; commitment loss
  beta * mean((sg(z_q) - z)^2) over every element of the GLOBAL batch, the reference's
  `beta * F.mse_loss(z_q.detach(), z)`). The codebook gets no gradient (it learns by EMA).
  """
  ids = nearest_code(lax.stop_gradient(z), codebook)
  codes = jnp.take(lax.stop_gradient(codebook).astype(z.dtype), ids, axis=0)
  sq = jnp.square(codes - z)
  total = _psum(jnp.sum(sq), axis_name)
  count = _psum(jnp.asarray(sq.size, jnp.float32), axis_name)
  commitment = beta * total / count
  z_q = z + lax.stop_gradient(codes - z)
  return z_q, ids, commitment


def codebook_statistics(z, ids, num_codes: int, *, axis_name=None):
  """Per-code assignment counts [K] and feature sums [K, d] over the global batch (the
  reference's all-reduced `bins = encodings.sum(0)` and `embed_sum = z^T encodings`).

  z [..., d] (no gradient flows: the codebook statistics are not trained), ids [...].
  Segment sums instead of the reference's [M, K] one-hot: the same numbers, O(M d + K d) memory.
  """
  z = lax.stop_gradient(z).astype(jnp.float32)
  flat_z = z.reshape(-1, z.shape[-1])
  flat_ids = ids.reshape(-1)
  counts = jax.ops.segment_sum(jnp.ones_like(flat_ids, jnp.float32), flat_ids, num_codes)
  sums = jax.ops.segment_sum(flat_z, flat_ids, num_codes)
  return _psum(counts, axis_name), _psum(sums, axis_name)


def ema_codebook_update(codebook, counts, sums, decay: float):
  """The reference's codebook step (`NormEMAVectorQuantizer.forward`, training): each used
  code moves to l2norm(decay * e + (1 - decay) * l2norm(sum / count)) of its assigned features;
  an unused code (count 0) keeps e (its "mean" is e itself, and l2norm(e) = e).

  codebook [K, d] (unit rows), counts [K], sums [K, d] (global, `codebook_statistics`).
  """
  codebook = codebook.astype(jnp.float32)
  used = counts > 0
  means = l2_normalize(sums / jnp.where(used, counts, 1.0)[:, None])
  means = jnp.where(used[:, None], means, codebook)
  return l2_normalize(decay * codebook + (1.0 - decay) * means)


def ema_usage_update(usage, counts, decay: float):
  """EMA of the per-batch assignment counts (the reference's `cluster_size` buffer, decay as
  the codebook's): usage <- decay * usage + (1 - decay) * counts. [K]."""
  return decay * usage + (1.0 - decay) * counts


def restart_dead_codes(codebook, usage, candidates, threshold: float):
  """Dead-code restart (not in the reference, which keeps unused codes where they are and
  relies on its k-means initialisation; Jukebox / SoundStream-style): every code whose EMA usage
  is below `threshold` assignments per batch moves to its candidate, a (normalised) encoder
  output of the current batch, and its usage is reset to `threshold`, so it has to win that
  many assignments per batch on average to survive the following steps.

  codebook [K, d], usage [K], candidates [K, d] (row k: code k's replacement).
  Returns (codebook, usage, number of codes restarted). threshold <= 0: nothing restarts.
  """
  dead = usage < threshold
  codebook = jnp.where(dead[:, None], l2_normalize(candidates.astype(jnp.float32)), codebook)
  usage = jnp.where(dead, jnp.asarray(threshold, usage.dtype), usage)
  return codebook, usage, jnp.sum(dead.astype(jnp.int32))


def sample_rows(rng, rows, num: int):
  """`num` rows of rows [M, d], drawn without replacement when M >= num, else with it (the
  reference's `sample_vectors`: randperm(M)[:num] or randint). The draw depends on (rng, M)
  only, so a sharded global array gives the same rows on any number of devices."""
  m = rows.shape[0]
  if m >= num:
    idx = jax.random.permutation(rng, m)[:num]
  else:
    idx = jax.random.randint(rng, (num,), 0, m)
  return jnp.take(rows, idx, axis=0)


def sample_rows_by_weight(rng, rows, weights, num: int):
  """`num` rows of rows [M, d] drawn with replacement, row i with probability weights[i] /
  sum(weights) (k-means++ seeding's D^2 draw when weights are squared distances to the nearest
  code): inverse-CDF sampling, O(M + num log M) memory, so a pod-size global batch (400k rows x
  8192 draws) needs no [num, M] array. All-zero weights: uniform."""
  m = rows.shape[0]
  w = jnp.maximum(weights.astype(jnp.float32), 0.0)
  w = jnp.where(jnp.sum(w) > 0, w, jnp.ones_like(w))
  cdf = jnp.cumsum(w)
  u = jax.random.uniform(rng, (num,), jnp.float32) * cdf[-1]
  idx = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, m - 1)
  return jnp.take(rows, idx, axis=0)


def spherical_kmeans(rng, z, num_codes: int, num_iters: int = 10):
  """The reference's codebook initialisation (`kmeans(..., use_cosine_sim=True)`, run on the
  first batch when `quantize_kmeans_init`): num_codes means sampled from the rows of z [M, d]
  (l2-normalised), then num_iters rounds of: assign each row to the mean of largest dot
  product, move each mean to the l2-normalised average of its rows (a mean with no rows stays).

  Runs on the global z under jit (the sums are over every row, so the result is the same on
  any number of devices). Returns (means [K, d], counts [K] of the last assignment).
  """
  z = lax.stop_gradient(z).astype(jnp.float32)
  means = sample_rows(rng, z, num_codes)
  counts = jnp.zeros((num_codes,), jnp.float32)
  for _ in range(num_iters):
    dots = jnp.einsum("md,kd->mk", z, means, precision=lax.Precision.HIGHEST)
    ids = jnp.argmax(dots, axis=-1)
    counts, sums = codebook_statistics(z, ids, num_codes)
    new = l2_normalize(sums / jnp.maximum(counts, 1.0)[:, None])
    means = jnp.where((counts == 0)[:, None], means, new)
  return means, counts


def cosine_distance_loss(pred, target, *, axis_name=None):
  """VQ-KD's reconstruction loss (`calculate_rec_loss`, rec_loss_type="cosine"): the mean over
  the global batch's patches of 1 - cos(pred, target). pred, target [..., D]; the target
  (teacher features) gets no gradient."""
  target = lax.stop_gradient(target)
  cos = jnp.sum(l2_normalize(pred.astype(jnp.float32)) * l2_normalize(target), axis=-1)
  total = _psum(jnp.sum(1.0 - cos), axis_name)
  count = _psum(jnp.asarray(cos.size, jnp.float32), axis_name)
  return total / count


def constant_code_rec_loss(target):
  """The distillation loss (`cosine_distance_loss`) of the best prediction that ignores the
  codes: with one code everywhere the decoder sees only positions, so at best it predicts one
  unit vector per patch position, the mean direction of the targets there.

  target [B, N, D] (teacher features; B images, N positions) -> 1 - mean over positions of
  || mean over images of target / ||target|| ||: the floor a tokenizer must get below.
  """
  unit = l2_normalize(jnp.asarray(target, jnp.float32))
  return 1.0 - jnp.mean(jnp.linalg.norm(jnp.mean(unit, axis=0), axis=-1))


def code_statistics(counts):
  """Usage of a codebook from its assignment counts [K] (a batch's, or a whole test set's):
  (fraction of codes used at least once, perplexity exp(H(p)) of p = counts / sum(counts):
  K for uniform use, 1 for a single code)."""
  counts = jnp.asarray(counts, jnp.float32)
  total = jnp.maximum(jnp.sum(counts), 1.0)
  p = counts / total
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.mean((counts > 0).astype(jnp.float32)), jnp.exp(entropy)
