"""Colorization (Zhang, Isola & Efros 2016, "Colorful Image Colorization") as a pretext task.

Input: the CIE L channel only. The backbone is `LightnessEncoder(resnet)`: it takes RGB
images [B, S, S, 3], converts them to L inside the network (so evaluation and export feed it
ordinary RGB and it sees what it saw in training), scales L to [-1, 1] and runs the ResNet.

Output: per-pixel logits over Q quantised ab bins (`sslax.pretext.color`: the in-gamut cells
of a `grid`-unit lattice; 262 for the paper's grid of 10, where the paper lists 313). The
ResNet's last spatial map (stride 8 with the small stem) goes through a small decoder
(`UpsamplingDecoder`: nearest 2x upsample + conv + BN + ReLU, `decoder_upsamples` times,
then a 1x1 conv to Q logits) to a map of side S / `target_stride` (the paper predicts at 1/4
resolution; so do we by default). The ground-truth ab is downsampled (antialiased) to that
size and encoded softly (5 nearest bins, Gaussian sigma 5; `soft_encoding=False`: one-hot).

Loss: cross entropy, averaged over pixels and the global batch, optionally weighted per pixel
by the class-rebalancing weight of its nearest bin (paper eq. 4, lambda 0.5, prior smoothed
with sigma 5). The bin prior is counted once, over (at most `prior_num_examples` of) the
training set with centre crops, by `before_epoch` before the first step, and stored in the
method state (so it is checkpointed and not recounted on resume).

Metrics: `pretext_accuracy` = fraction of pixels whose arg-max bin is the nearest bin of the
true colour; `pretext_chance` = the rate of the batch's most frequent bin (the accuracy of the
best constant prediction on that batch, an upper bound on any constant predictor). With
rebalancing on, the arg-max deliberately favours rare colours, so accuracy can stay below
that chance on data dominated by one colour (clip art on white: ~70% of pixels are neutral);
`constant_predictor_loss` (the loss of the best constant distribution on the batch) is then
the baseline to compare the loss with.

Grey datasets (1 channel) are refused at setup: there is no colour to predict.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslax import sharding
from sslax.data import pipeline
from sslax.data.augment import ViewSpec
from sslax.methods.base import Method
from sslax.models import get_dtype, make_backbone
from sslax.models.decoders import EncoderDecoder, UpsamplingDecoder
from sslax.pretext import color

COLOUR_DATASET_HINT = (
  "--config.dataset.name=openclipart (configs/colorization_openclipart.py; "
  "get the data with `bash scripts/get_image_text_data.sh`)"
)


class LightnessEncoder(nn.Module):
  """RGB [B, S, S, 3] in [0, 1] -> encoder(L / 50 - 1) with L the CIE lightness [B, S, S, 1]."""

  encoder: nn.Module

  def __call__(self, x, train: bool = True):
    if x.shape[-1] != 3:
      raise ValueError(
        f"colorization's encoder needs RGB images [..., 3], got shape {x.shape}; "
        f"colorization needs a colour dataset, e.g. {COLOUR_DATASET_HINT}."
      )
    lightness = color.rgb_to_lab(x)[..., :1]
    return self.encoder(lightness / 50.0 - 1.0, train=train)


def ab_targets(images: jax.Array, target_size: int) -> jax.Array:
  """RGB [B, S, S, 3] -> ab [B, s, s, 2] at the prediction resolution (antialiased resize)."""
  ab = color.rgb_to_lab(images)[..., 1:]
  b, size = ab.shape[0], ab.shape[1]
  if size == target_size:
    return ab
  return jax.image.resize(ab, (b, target_size, target_size, 2), "linear", antialias=True)


def colorization_loss(
  logits: jax.Array,
  ab: jax.Array,
  centers,
  *,
  soft: bool,
  bin_weights: jax.Array | None = None,
  num_neighbours: int = color.PAPER_NEIGHBOURS,
  sigma: float = color.PAPER_SIGMA,
) -> tuple[jax.Array, dict]:
  """Per-pixel multinomial cross entropy (Zhang et al. eq. 2), mean over pixels and batch.

  logits [B, s, s, Q]; ab [B, s, s, 2] true colours; centers [Q, 2]; bin_weights [Q] or None
  (class rebalancing: pixel weight = weight of the pixel's nearest bin).
  """
  nearest = color.hard_encode(ab, centers)  # [B, s, s]
  num_bins = logits.shape[-1]
  if soft:
    target = color.soft_encode(ab, centers, num_neighbours=num_neighbours, sigma=sigma)
  else:
    target = jax.nn.one_hot(nearest, num_bins)
  ce = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)  # [B, s, s]
  if bin_weights is not None:
    ce = ce * bin_weights[nearest]
  frequency = jnp.mean(jax.nn.one_hot(nearest, num_bins), axis=(0, 1, 2))  # [Q]
  # The trivial predictor: the best constant distribution for this batch (the weighted mean
  # target), whose loss is the weighted entropy; the loss must fall well below it.
  w = jnp.ones_like(ce) if bin_weights is None else bin_weights[nearest]
  constant = jnp.sum(w[..., None] * target, axis=(0, 1, 2)) / jnp.sum(w)
  constant_ce = -jnp.sum(target * jnp.log(jnp.maximum(constant, 1e-30)), axis=-1)
  metrics = {
    "pretext_accuracy": jnp.mean(jnp.argmax(logits, -1) == nearest),
    "pretext_chance": jnp.max(frequency),
    "constant_predictor_loss": jnp.mean(w * constant_ce),
  }
  return jnp.mean(ce), metrics


class Colorization(Method):
  name = "colorization"

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        grid=color.PAPER_GRID,  # ab bin size (paper: 10)
        soft_encoding=True,  # paper: 5-NN Gaussian soft targets; False: one-hot
        num_neighbours=color.PAPER_NEIGHBOURS,
        sigma=color.PAPER_SIGMA,
        rebalance=True,  # paper's class rebalancing of rare colours
        rebalance_lambda=color.PAPER_LAMBDA,
        prior_num_examples=10000,  # training images counted for the bin prior
        target_stride=4,  # predict ab at S / 4 (the paper: 1/4 resolution)
        decoder_upsamples=1,  # stride-8 map (small stem) -> stride 4
        decoder_width=64,
        crop_scale=(0.5, 1.0),  # only geometric augmentation: colour jitter would
        flip_prob=0.5,  # corrupt the target
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, size = config.colorization, config.dataset.image_size
    if cfg.target_stride < 1 or size % cfg.target_stride:
      raise ValueError(
        f"config.colorization.target_stride={cfg.target_stride} must be >= 1 and "
        f"divide config.dataset.image_size={size}."
      )
    if not 0 <= cfg.rebalance_lambda <= 1:
      raise ValueError(
        f"config.colorization.rebalance_lambda={cfg.rebalance_lambda} must be in "
        "[0, 1] (paper: 0.5)."
      )
    self.centers = color.ab_bin_centers(cfg.grid)
    if cfg.num_neighbours < 1 or cfg.num_neighbours > len(self.centers):
      raise ValueError(
        f"config.colorization.num_neighbours={cfg.num_neighbours} must be in "
        f"[1, {len(self.centers)}] (paper: 5)."
      )
    self.target_size = size // cfg.target_stride

  @property
  def num_bins(self) -> int:
    return len(self.centers)

  def views(self):
    cfg = self.config.colorization
    # Colour is the target: its own crop/flip, no photometric augmentation.
    spec = ViewSpec.from_config(
      self.config.augment,
      self.run.image_size,
      crop_scale=cfg.crop_scale,
      flip_prob=cfg.flip_prob,
      jitter_prob=0.0,
      grayscale_prob=0.0,
      blur_prob=0.0,
      solarize_prob=0.0,
    )
    return (spec,)

  def network(self):
    cfg, dtype = self.config.colorization, get_dtype(self.config.dtype)
    backbone = LightnessEncoder(make_backbone(self.config.model, self.config.dtype))
    decoder = UpsamplingDecoder(
      out_channels=self.num_bins,
      out_size=self.target_size,
      num_upsamples=cfg.decoder_upsamples,
      width=cfg.decoder_width,
      dtype=dtype,
    )
    return EncoderDecoder(backbone=backbone, decoder=decoder)

  def init_inputs(self, image_size, channels):
    if channels != 3:
      raise ValueError(
        f"colorization needs a colour dataset: config.dataset.name="
        f"{self.config.dataset.name!r} has {channels} channel(s). Use {COLOUR_DATASET_HINT}."
      )
    return super().init_inputs(image_size, channels)

  def init_state(self, rng, variables):
    return {
      "bin_weights": jnp.ones((self.num_bins,), jnp.float32),
      "prior_counts": jnp.zeros((self.num_bins,), jnp.float32),
      "prior_ready": jnp.zeros((), jnp.int32),
    }

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.colorization
    images = batch["views"][0]
    (_, logits), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
    )
    weights = method_state["bin_weights"] if cfg.rebalance else None
    loss, metrics = colorization_loss(
      logits,
      ab_targets(images, self.target_size),
      self.centers,
      soft=cfg.soft_encoding,
      bin_weights=weights,
      num_neighbours=cfg.num_neighbours,
      sigma=cfg.sigma,
    )
    return loss, (metrics, updates["batch_stats"], method_state)

  # ---- The bin prior for class rebalancing: one pass over the training set, before step 1.

  def bin_counts(self, source, batch_size: int) -> jax.Array:
    """[Q] nearest-bin counts of the target-resolution ab of (up to prior_num_examples)
    centre-cropped training images, on the mesh (each process reads its rows)."""
    limit = self.config.colorization.prior_num_examples
    replicated = sharding.replicated(self.mesh)

    @functools.partial(jax.jit, out_shardings=replicated)
    def count(images, mask):
      nearest = color.hard_encode(ab_targets(images, self.target_size), self.centers)
      onehot = jax.nn.one_hot(nearest, self.num_bins) * mask[:, None, None, None]
      return jnp.sum(onehot, axis=(0, 1, 2))

    total, seen = jnp.zeros((self.num_bins,)), 0
    for local in pipeline.eval_batches(
      source,
      image_size=self.config.dataset.image_size,
      global_batch=batch_size,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    ):
      batch = sharding.make_global_batch(self.mesh, local)
      total = total + count(batch["image"], batch["mask"].astype(jnp.float32))
      seen += batch_size
      if limit and seen >= limit:
        break
    return total

  def before_epoch(self, state, epoch, ctx):
    cfg = self.config.colorization
    if not cfg.rebalance or int(jax.device_get(state.method_state["prior_ready"])):
      return state
    counts = self.bin_counts(ctx.train_source, self.config.eval.batch_size)
    weights = color.rebalancing_weights(
      counts, self.centers, lam=cfg.rebalance_lambda, sigma=cfg.sigma
    )
    new = dict(
      state.method_state,
      bin_weights=weights,
      prior_counts=counts,
      prior_ready=jnp.ones((), jnp.int32),
    )
    if jax.process_index() == 0:
      c = np.asarray(counts)
      print(
        f"colorization: bin prior from {int(c.sum())} pixels; {int((c > 0).sum())} of "
        f"{self.num_bins} bins seen; rebalancing weights in "
        f"[{float(jnp.min(weights)):.3g}, {float(jnp.max(weights)):.3g}]",
        flush=True,
      )
    new = jax.device_put(new, jax.tree.map(lambda _: sharding.replicated(self.mesh), new))
    return state.replace(method_state=new)
