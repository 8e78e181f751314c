"""MAE (He et al. 2021): patchify, per-example random masking, and the masked-patch MSE loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def patchify(images, patch_size: int):
  """images [B, H, W, C] -> patches [B, N, p*p*C], N = (H/p)(W/p) in row-major patch order.

  A patch's pixels are flattened as (row in patch, column in patch, channel), matching the ViT's
  patch embedding and `sslax.models.vit.ViT(keep_ids=...)` indices.
  """
  b, h, w, c = images.shape
  p = patch_size
  if h % p or w % p:
    raise ValueError(f"Image size {h}x{w} is not divisible by patch_size={p}.")
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def num_kept(num_patches: int, mask_ratio: float) -> int:
  """Visible patches per image: floor(N (1 - mask_ratio)), as the MAE reference code."""
  keep = int(num_patches * (1 - mask_ratio))
  if not 0 < keep <= num_patches:
    raise ValueError(
      f"mask_ratio={mask_ratio} keeps {keep} of {num_patches} patches; pick a "
      f"ratio in [0, 1) that leaves at least one patch visible."
    )
  return keep


def random_masking(rng: jax.Array, batch: int, num_patches: int, mask_ratio: float):
  """A fresh random mask per example, by sorting uniform noise (MAE's per-sample shuffle).

  Returns:
    keep_ids [B, K] int32: the visible patches, K = num_kept(N, mask_ratio), in shuffled order.
    restore_ids [B, N] int32: the inverse permutation of the shuffle, so that
      take_along_axis(concat([visible, masked]), restore_ids) puts tokens back in image order.
    mask [B, N] float32: 1 for masked (to be reconstructed) patches, 0 for visible, image order.
  """
  keep = num_kept(num_patches, mask_ratio)
  noise = jax.random.uniform(rng, (batch, num_patches))
  shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)  # ascending: small noise is kept
  restore = jnp.argsort(shuffle, axis=1).astype(jnp.int32)
  shuffled_mask = (jnp.arange(num_patches) >= keep).astype(jnp.float32)
  mask = jnp.take_along_axis(jnp.broadcast_to(shuffled_mask, (batch, num_patches)), restore, axis=1)
  return shuffle[:, :keep], restore, mask


def mae_loss(pred, target, mask, *, norm_pix: bool = True, eps: float = 1e-6):
  """Mean squared error on the masked patches only (MAE eq. in sec. 3, "Reconstruction target").

  Args:
    pred: [B, N, P] the decoder's pixel predictions per patch (image order).
    target: [B, N, P] the patchified input images.
    mask: [B, N] 1 for masked patches, 0 for visible ones.
    norm_pix: normalise each target patch by its own pixel mean and variance
      ((x - mean) / sqrt(var + eps)), the paper's default, which improves representations.
      var is the unbiased variance (divided by P - 1), as the reference's torch `.var` in
      facebookresearch/mae `forward_loss`.
  Returns the loss averaged over the global number of masked patches (a plain mean over the
  jitted global batch, so any sharding of the batch gives the same value).
  """
  target = target.astype(jnp.float32)
  if norm_pix:
    mean = jnp.mean(target, axis=-1, keepdims=True)
    var = jnp.var(target, axis=-1, keepdims=True, ddof=1)  # torch's unbiased `.var`
    target = (target - mean) / jnp.sqrt(var + eps)
  per_patch = jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)  # [B, N]
  return jnp.sum(per_patch * mask) / jnp.sum(mask)
