"""Context encoder (Pathak et al. 2016, "Context Encoders: Feature Learning by Inpainting").

The backbone is the encoder: it sees the image with a region hidden (filled with
`fill_value`) and a decoder reconstructs the pixels from the backbone's last spatial map
(`UpsamplingDecoder`, 3 upsamplings from the stride-8 map of the small-stem ResNet, then a
resize to the image size). Loss: L2 (mean squared error) over the hidden pixels; with
`context_weight > 0` the visible pixels add their squared error times that weight (the
paper's reconstruction of a slightly larger region with a small weight outside the hole).
The paper's adversarial loss is left out: it sharpens the reconstruction but the paper
reports features for the L2-only encoder too, and it would need a second network and
optimizer.

Differences from the paper: the paper's encoder-decoder joins the two with a channel-wise
fully connected layer over a 4x4 map so that centre pixels see the whole context; our
ResNet's last map already has a receptive field covering the image, so the decoder is
convolutional. Masks: "center" (the paper's central square, half the side) or
"random_blocks" (`sslax.pretext.inpainting`), a fresh draw per example from the step's key.

Metric: `reconstruction_mse` (hidden pixels) next to `mean_predictor_mse`, the error of
predicting each hidden pixel by the mean of the batch's hidden pixels (the trivial predictor
the loss must beat).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from sslax.data.augment import ViewSpec
from sslax.methods.base import Method
from sslax.models import get_dtype, make_backbone
from sslax.models.decoders import EncoderDecoder, UpsamplingDecoder
from sslax.pretext import inpainting


def inpainting_loss(
  reconstruction: jax.Array, images: jax.Array, masks: jax.Array, context_weight: float = 0.0
) -> tuple[jax.Array, dict]:
  """reconstruction, images [B, S, S, C]; masks bool [B, S, S] (True = hidden).

  -> (sum over pixels of w * |x - x^|^2 / (C * sum of w), metrics), w = 1 on hidden pixels
  and context_weight on visible ones: the mean squared error over the weighted pixels of the
  global batch.
  """
  hidden = masks.astype(jnp.float32)[..., None]
  weight = hidden + context_weight * (1.0 - hidden)
  sq = (reconstruction - images) ** 2
  channels = images.shape[-1]
  loss = jnp.sum(weight * sq) / (channels * jnp.sum(weight))
  n_hidden = channels * jnp.sum(hidden)
  hidden_mse = jnp.sum(hidden * sq) / n_hidden
  hidden_mean = jnp.sum(hidden * images) / n_hidden
  baseline = jnp.sum(hidden * (images - hidden_mean) ** 2) / n_hidden
  return loss, {"reconstruction_mse": hidden_mse, "mean_predictor_mse": baseline}


class Inpainting(Method):
  name = "inpainting"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        mask="center",  # center | random_blocks
        mask_fraction=0.5,  # center: side of the hidden square / image side (paper: 0.5)
        num_blocks=4,  # random_blocks: squares per image ...
        block_size=8,  # ... and their side in pixels
        fill_value=0.5,  # what the encoder sees in the hole (images are in [0, 1])
        context_weight=0.0,  # weight of the visible pixels' squared error (0: hole only)
        decoder_upsamples=3,  # stride-8 map (small stem) -> full resolution
        decoder_width=64,
        crop_scale=(0.5, 1.0),
        flip_prob=0.5,
        jitter_prob=0.0,  # the paper uses no colour augmentation
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, size = config.inpainting, config.dataset.image_size
    if cfg.mask not in inpainting.MASK_KINDS:
      raise ValueError(
        f"config.inpainting.mask={cfg.mask!r}; choose one of {inpainting.MASK_KINDS}."
      )
    if cfg.mask == "center":
      inpainting.center_box(size, cfg.mask_fraction)  # validates the fraction
    elif not (1 <= cfg.block_size <= size and cfg.num_blocks >= 1):
      raise ValueError(
        f"config.inpainting.block_size={cfg.block_size} must be in [1, image size "
        f"{size}] and num_blocks={cfg.num_blocks} >= 1."
      )
    if cfg.context_weight < 0:
      raise ValueError(f"config.inpainting.context_weight={cfg.context_weight} must be >= 0.")

  def views(self):
    cfg = self.config.inpainting
    # Pixels are the target: the method's own crop/flip/jitter, no grey, blur or solarize.
    spec = ViewSpec.from_config(
      self.config.augment,
      self.run.image_size,
      crop_scale=cfg.crop_scale,
      flip_prob=cfg.flip_prob,
      jitter_prob=cfg.jitter_prob,
      grayscale_prob=0.0,
      blur_prob=0.0,
      solarize_prob=0.0,
    )
    return (spec,)

  def network(self):
    cfg, dtype = self.config.inpainting, get_dtype(self.config.dtype)
    # out_channels=0: the decoder outputs as many channels as the input image has.
    decoder = UpsamplingDecoder(
      out_channels=0,
      out_size=self.config.dataset.image_size,
      num_upsamples=cfg.decoder_upsamples,
      width=cfg.decoder_width,
      dtype=dtype,
    )
    return EncoderDecoder(
      backbone=make_backbone(self.config.model, self.config.dtype), decoder=decoder
    )

  def masks(self, rng: jax.Array, batch: int) -> jax.Array:
    cfg = self.config.inpainting
    return inpainting.make_masks(
      rng,
      batch,
      self.config.dataset.image_size,
      kind=cfg.mask,
      fraction=cfg.mask_fraction,
      num_blocks=cfg.num_blocks,
      block_size=cfg.block_size,
    )

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.inpainting
    images = batch["views"][0]
    masks = self.masks(rng, images.shape[0])
    (_, reconstruction), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      inpainting.apply_mask(images, masks, cfg.fill_value),
      train=True,
      mutable=["batch_stats"],
    )
    loss, metrics = inpainting_loss(reconstruction, images, masks, cfg.context_weight)
    return loss, (metrics, updates["batch_stats"], method_state)
