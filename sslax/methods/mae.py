"""MAE (He et al. 2021): masked autoencoders. Encode a random 25% of the patches with the ViT,
reconstruct the pixels of the other 75% with a small decoder, loss on the masked patches only.

One view (random resized crop + flip, no colour augmentation). `network.backbone` is the ViT
encoder; evaluation and export run it on full, unmasked images. No cross-device term: the loss
is a mean over the global batch inside the jitted step.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslax.data.augment import ViewSpec
from sslax.losses import mae as mae_losses
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.models import get_dtype, make_backbone
from sslax.models.mae_decoder import MAEDecoder


class MAENetwork(nn.Module):
  """images [B, H, W, C] -> pixel predictions [B, N, p*p*C] for every patch (image order).

  keep_ids [B, K] / restore_ids [B, N] (from `sslax.losses.mae.random_masking`) choose the
  visible patches; None encodes all patches (used at init). return_features: also return the
  encoder's features [B, width] of the visible patches, pooled as the backbone pools (class
  token, or the mean of the visible patch tokens).
  """

  backbone: nn.Module
  decoder: nn.Module

  def __call__(
    self, images, train: bool = True, keep_ids=None, restore_ids=None, return_features=False
  ):
    p = self.backbone.patch_size
    grid = (images.shape[1] // p, images.shape[2] // p)
    if restore_ids is None:
      restore_ids = jnp.broadcast_to(
        jnp.arange(grid[0] * grid[1]), (images.shape[0], grid[0] * grid[1])
      )
    latent = self.backbone(images, train=train, keep_ids=keep_ids, return_tokens=True)
    pred = self.decoder(latent, restore_ids, grid, p * p * images.shape[3])
    if not return_features:
      return pred
    if self.backbone.pool == "cls":
      return pred, latent[:, 0]
    return pred, jnp.mean(latent[:, self.backbone.num_prefix_tokens :], axis=1)


class MAE(Method):
  name = "mae"
  # The probe sees the encoder's features of the visible 25% of the patches (the pass the
  # loss makes), not of the whole image as evaluation does: a lower, noisier accuracy.
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        mask_ratio=0.75,  # fraction of patches hidden from the encoder
        norm_pix_loss=True,  # per-patch normalised pixel targets (paper default)
        decoder_width=512,  # the paper's ViT-B/L default: 512-d, 8 blocks, 16 heads
        decoder_depth=8,
        decoder_heads=16,
        decoder_mlp_dim=0,  # 0 = 4 * decoder_width
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    if config.model.name != "vit":
      raise ValueError(
        f"MAE masks ViT patches; config.model.name={config.model.name!r} must be "
        f"'vit' (set --config.model.name=vit)."
      )
    cfg = config.mae
    grid = config.dataset.image_size // config.model.patch_size
    mae_losses.num_kept(grid * grid, cfg.mask_ratio)  # raises for a bad ratio
    if cfg.decoder_width % cfg.decoder_heads:
      raise ValueError(
        f"config.mae.decoder_width={cfg.decoder_width} is not divisible by "
        f"config.mae.decoder_heads={cfg.decoder_heads}."
      )

  def views(self):
    # Pixels are the target: geometric augmentation only (MAE: crop + flip).
    no_colour = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    return (ViewSpec.from_config(self.config.augment, self.run.image_size, **no_colour),)

  def network(self):
    cfg, backbone = self.config.mae, make_backbone(self.config.model, self.config.dtype)
    decoder = MAEDecoder(
      width=cfg.decoder_width,
      depth=cfg.decoder_depth,
      num_heads=cfg.decoder_heads,
      mlp_dim=cfg.decoder_mlp_dim,
      num_prefix_tokens=backbone.num_prefix_tokens,
      remat_policy=backbone.remat_policy,
      attention=backbone.attention,
      dtype=get_dtype(self.config.dtype),
    )
    return MAENetwork(backbone=backbone, decoder=decoder)

  def loss(self, params, batch_stats, method_state, batch, rng):
    (images,) = batch["views"]
    b, h, w, _ = images.shape
    p = self.config.model.patch_size
    num_patches = (h // p) * (w // p)
    mask_rng, drop_rng = jax.random.split(rng)
    keep_ids, restore_ids, mask = mae_losses.random_masking(
      mask_rng, b, num_patches, self.config.mae.mask_ratio
    )
    pred, features = self.network().apply(
      {"params": params},
      images,
      train=True,
      keep_ids=keep_ids,
      restore_ids=restore_ids,
      return_features=True,
      rngs={"dropout": drop_rng},
    )
    loss = mae_losses.mae_loss(
      pred, mae_losses.patchify(images, p), mask, norm_pix=self.config.mae.norm_pix_loss
    )
    metrics = {"masked_fraction": jnp.mean(mask), PROBE_FEATURES: features}
    return loss, (metrics, batch_stats, method_state)
