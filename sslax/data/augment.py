"""Stateless per-image view augmentations (SimCLR-style) in TensorFlow ops.

Also the evaluation view (`center_view`) and the input normalisation (`normalize_image`) that
training views and evaluation share.

Every random choice is drawn from an int32/int64 seed of shape [2] through TF's stateless RNG,
so a view is a pure function of (image, seed). That makes input pipelines replayable, shardable
across hosts and resumable mid-epoch without carrying RNG state around. All functions are
graph-safe (usable inside `tf.data.Dataset.map`) and accept images of shape [H, W, C] with
C in {1, 3}, dtype uint8 or float32 in [0, 1]; they return float32 in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from sslax import _lazy

tf = _lazy.module("tensorflow", "the augmentations (TensorFlow ops)")

# torchvision's RandomResizedCrop tries this many boxes before giving up on the scale/ratio.
_CROP_ATTEMPTS = 10

# Methods whose two training views are `augment.crop_size` px (`train_crop_size`): the two-view
# contrastive / siamese methods. The others crop at their own sizes (multi-crop) or need the
# evaluation size (masked image models, pretext tasks).
CROP_SIZE_METHODS = ("simclr", "mocov2", "mocov3", "byol", "simsiam", "barlow_twins", "vicreg")


def train_crop_size(config) -> int:
  """Side in px of the training views of the CROP_SIZE_METHODS: config.augment.crop_size, or
  dataset.image_size when it is 0. Evaluation always sees dataset.image_size.

  Training a convnet on smaller random-resized crops than it is tested on costs ~crop_size^2
  per image, and loses little: the crops already show objects larger than the test view does,
  which testing at a higher resolution compensates (FixRes, Touvron et al. 2019).
  """
  return int(config.augment.get("crop_size", 0) or config.dataset.image_size)


# Per-channel (mean, std) of the input normalisation x -> (x - mean) / std, applied last to
# training views and evaluation views alike. "none": images stay in [0, 1] (SimCLR's TF code,
# BYOL's JAX code); "imagenet": torchvision's ImageNet statistics, which the PyTorch references
# (MoCo, SimSiam, Barlow Twins, VICReg, DINO, MAE) normalise with; "swav": the same with red
# std 0.228, as SwAV's multicropdataset.py and eval_linear.py; "clip": OpenAI CLIP's statistics
# (open_clip's OPENAI_DATASET_MEAN / _STD).
NORMALIZATIONS = {
  "none": None,
  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
  "swav": ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225)),
  "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """One augmented view recipe (SimCLR paper appendix A defaults)."""

  size: int  # output side in pixels
  crop_scale: tuple[float, float] = (0.08, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_prob: float = 0.5
  jitter_prob: float = 0.8  # probability color jitter is applied
  jitter_strength: float = 1.0  # s: brightness 0.8s, contrast 0.8s, saturation 0.8s, hue 0.2s
  grayscale_prob: float = 0.2
  blur_prob: float = 0.0  # Gaussian blur, sigma ~ U(0.1, 2.0), kernel 10% of size (odd)
  solarize_prob: float = 0.0  # pixels >= 0.5 -> 1 - x
  # Colour jitter ranges one by one, as torchvision's ColorJitter(brightness, contrast,
  # saturation, hue); None: from jitter_strength (above). BYOL, Barlow Twins, VICReg, MoCo v3,
  # DINO: (0.4, 0.4, 0.2, 0.1).
  brightness: float | None = None
  contrast: float | None = None
  saturation: float | None = None
  hue: float | None = None  # at most 0.5
  normalize: str = "none"  # a key of NORMALIZATIONS, applied after every other stage

  def __post_init__(self):
    _ = self.jitter  # raises on a bad range now, not when the pipeline is traced
    _normalization(self.normalize)

  @property
  def jitter(self) -> tuple[float, float, float, float]:
    """(brightness, contrast, saturation, hue) ranges of the colour jitter, as ColorJitter's."""
    return jitter_ranges(
      self.jitter_strength, self.brightness, self.contrast, self.saturation, self.hue
    )

  @classmethod
  def from_config(cls, augment, size: int, **overrides) -> "ViewSpec":
    """The view `config.augment` describes, at `size` px; `overrides` replace single fields
    (a method's own crop scale, per-view blur/solarize, no colour for pixel targets ...).

    The one place a ViewSpec is built from config: every method's views() goes through here.
    """
    fields = dict(
      size=size,
      crop_scale=tuple(augment.crop_scale),
      flip_prob=augment.flip_prob,
      jitter_prob=augment.jitter_prob,
      jitter_strength=augment.jitter_strength,
      grayscale_prob=augment.grayscale_prob,
      blur_prob=augment.blur_prob,
      solarize_prob=augment.solarize_prob,
      brightness=augment.brightness,
      contrast=augment.contrast,
      saturation=augment.saturation,
      hue=augment.hue,
      normalize=augment.normalize,
    )
    fields.update(overrides)
    if "crop_scale" in overrides:
      fields["crop_scale"] = tuple(fields["crop_scale"])
    return cls(**fields)


# ----------------------------------------------------------------------------- helpers


def _to_float(image) -> tf.Tensor:
  image = tf.convert_to_tensor(image)
  if image.dtype == tf.uint8:
    return tf.image.convert_image_dtype(image, tf.float32)  # scales by 1/255
  return tf.cast(image, tf.float32)


def _channels(image: tf.Tensor) -> int:
  # The channel count decides which ops exist (e.g. hue), so it must be known at trace time.
  channels = image.shape[-1]
  if channels not in (1, 3):
    raise ValueError(f"expected a static channel dim of 1 or 3, got shape {image.shape}")
  return channels


def _split(seed, num: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), num))


def _maybe(fn: Callable, image: tf.Tensor, seed, prob: float) -> tf.Tensor:
  """Returns fn(image, sub_seed) with probability `prob`, else `image` (same shape)."""
  if isinstance(prob, (int, float)) and prob <= 0:
    return image  # skip building the branch at all; the coin could never land anyway
  coin_seed, fn_seed = _split(seed, 2)
  apply = tf.random.stateless_uniform([], coin_seed) < prob
  out = tf.cond(apply, lambda: fn(image, fn_seed), lambda: image)
  out.set_shape(image.shape)
  return out


def _luma(image: tf.Tensor) -> tf.Tensor:
  """[H, W, C] -> [H, W, 1] grey level (ITU-R 601 weights for RGB)."""
  return image if image.shape[-1] == 1 else tf.image.rgb_to_grayscale(image)


# ----------------------------------------------------------------------------- crop


def sample_crop_box(seed, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """Samples an Inception-style crop box inside a [height, width] image.

  All attempts are drawn at once and the first one that fits is kept, which avoids a
  data-dependent loop in the graph. If none fits, falls back to the largest central box
  whose aspect ratio is clamped into `ratio` (torchvision's behaviour).

  Returns:
    (offset_h, offset_w, crop_h, crop_w): int32 scalars.
  """
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  area_seed, ratio_seed, oh_seed, ow_seed = _split(seed, 4)
  n = _CROP_ATTEMPTS

  area = tf.cast(height * width, tf.float32)
  target = area * tf.random.stateless_uniform([n], area_seed, scale[0], scale[1])
  # Log-uniform so that r and 1/r are equally likely.
  aspect = tf.exp(
    tf.random.stateless_uniform([n], ratio_seed, math.log(ratio[0]), math.log(ratio[1]))
  )
  crop_w = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  crop_h = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  valid = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)

  # Offsets are uniform over every position where the box fits; invalid attempts get
  # garbage here but are never selected.
  def offsets(s, full, crop):
    slack = tf.maximum(full - crop, 0)
    u = tf.random.stateless_uniform([n], s)
    return tf.minimum(tf.cast(tf.floor(u * tf.cast(slack + 1, tf.float32)), tf.int32), slack)

  off_h = offsets(oh_seed, height, crop_h)
  off_w = offsets(ow_seed, width, crop_w)
  first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)  # argmax keeps the first max

  in_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
  too_tall = in_ratio < ratio[0]
  too_wide = in_ratio > ratio[1]
  fb_w = tf.where(
    too_wide, tf.cast(tf.round(tf.cast(height, tf.float32) * ratio[1]), tf.int32), width
  )
  fb_h = tf.where(
    too_tall, tf.cast(tf.round(tf.cast(width, tf.float32) / ratio[0]), tf.int32), height
  )
  fb_w = tf.clip_by_value(fb_w, 1, width)
  fb_h = tf.clip_by_value(fb_h, 1, height)

  ok = tf.reduce_any(valid)
  return (
    tf.where(ok, tf.gather(off_h, first), (height - fb_h) // 2),
    tf.where(ok, tf.gather(off_w, first), (width - fb_w) // 2),
    tf.where(ok, tf.gather(crop_h, first), fb_h),
    tf.where(ok, tf.gather(crop_w, first), fb_w),
  )


def random_resized_crop(image, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
  """[H, W, C] -> float32 [size, size, C]: random box (see `sample_crop_box`), bilinear resize."""
  image = _to_float(image)
  shape = tf.shape(image)
  off_h, off_w, crop_h, crop_w = sample_crop_box(seed, shape[0], shape[1], scale, ratio)
  crop = tf.slice(image, tf.stack([off_h, off_w, 0]), tf.stack([crop_h, crop_w, -1]))
  out = tf.image.resize(crop, [size, size], method="bilinear")
  out.set_shape([size, size, image.shape[-1]])
  return out


# ----------------------------------------------------------------------------- photometric


def random_flip(image, seed, prob=0.5) -> tf.Tensor:
  """[H, W, C] -> float32 [H, W, C], mirrored left-right with probability `prob`."""
  return _maybe(lambda x, _: tf.image.flip_left_right(x), _to_float(image), seed, prob)


def jitter_ranges(
  strength: float = 1.0, brightness=None, contrast=None, saturation=None, hue=None
) -> tuple[float, float, float, float]:
  """(brightness, contrast, saturation, hue) jitter ranges; each None comes from `strength` s as
  SimCLR's colour distortion: 0.8 s, 0.8 s, 0.8 s, 0.2 s (hue capped at 0.5).

  As torchvision's ColorJitter: brightness, contrast and saturation factors are drawn from
  [max(0, 1 - x), 1 + x], the hue shift from [-hue, hue] (a fraction of the hue circle).
  """
  derived = (0.8 * strength, 0.8 * strength, 0.8 * strength, min(0.2 * strength, 0.5))
  given = (brightness, contrast, saturation, hue)
  out = tuple(float(d if g is None else g) for d, g in zip(derived, given))
  for name, value in zip(("brightness", "contrast", "saturation", "hue"), out):
    if not value >= 0:
      raise ValueError(f"colour jitter {name}={value} must be >= 0 (0 turns that op off).")
  if out[3] > 0.5:
    raise ValueError(f"colour jitter hue={out[3]} must be at most 0.5 (half the hue circle).")
  return out


def _jitter(image: tf.Tensor, seed, ranges: tuple[float, float, float, float]) -> tf.Tensor:
  order_seed, b_seed, c_seed, s_seed, h_seed = _split(seed, 5)
  b_range, c_range, s_range, hue_max = ranges

  def factor(s, x):
    return tf.random.stateless_uniform([], s, max(0.0, 1.0 - x), 1.0 + x)

  bright = factor(b_seed, b_range)
  contrast = factor(c_seed, c_range)
  sat = factor(s_seed, s_range)
  hue = tf.random.stateless_uniform([], h_seed, -hue_max, hue_max)

  def brightness_op(x):
    return x * bright  # multiplicative, as in SimCLR (not tf.image's additive brightness)

  def contrast_op(x):
    mean = tf.reduce_mean(_luma(x))
    return (x - mean) * contrast + mean

  def saturation_op(x):
    grey = _luma(x)
    return grey + sat * (x - grey)

  def hue_op(x):
    return tf.image.adjust_hue(x, hue)

  # An op with range 0 is left out (as ColorJitter does); saturation and hue do nothing to a
  # grey image, so they are not even built for 1 channel.
  ops = [op for op, r in ((brightness_op, b_range), (contrast_op, c_range)) if r > 0]
  if _channels(image) == 3:
    ops += [op for op, r in ((saturation_op, s_range), (hue_op, hue_max)) if r > 0]
  if not ops:
    return image
  order = tf.argsort(tf.random.stateless_uniform([len(ops)], order_seed))
  x = image
  for step in range(len(ops)):
    # Clip after each op so later ops see a valid image, like SimCLR does.
    branches = [lambda op=op, x=x: tf.clip_by_value(op(x), 0.0, 1.0) for op in ops]
    x = tf.switch_case(order[step], branches)
    x.set_shape(image.shape)
  return x


def color_jitter(
  image, seed, strength=1.0, prob=0.8, *, brightness=None, contrast=None, saturation=None, hue=None
) -> tf.Tensor:
  """[H, W, C] -> float32 [H, W, C] in [0, 1].

  With probability `prob`, applies brightness, contrast, saturation and hue (in a random
  order) with the ranges of `jitter_ranges` (SimCLR's scaled by `strength`, unless given one by
  one). 1-channel images get only brightness and contrast.
  """
  ranges = jitter_ranges(strength, brightness, contrast, saturation, hue)
  image = _to_float(image)
  _channels(image)
  return _maybe(lambda x, s: _jitter(x, s, ranges), image, seed, prob)


def random_grayscale(image, seed, prob=0.2) -> tf.Tensor:
  """[H, W, C] -> float32 [H, W, C]; RGB becomes luma replicated to 3 channels w.p. `prob`."""
  image = _to_float(image)
  if _channels(image) == 1:
    return image
  return _maybe(lambda x, _: tf.tile(_luma(x), [1, 1, 3]), image, seed, prob)


def blur_kernel_size(side) -> tf.Tensor:
  """Gaussian kernel length for an image side: 10% of it, made odd, at least 3 (int32)."""
  k = tf.maximum(tf.cast(side, tf.int32) // 10, 3)
  return k + 1 - k % 2


def gaussian_kernel(sigma, radius) -> tf.Tensor:
  """1-D normalised Gaussian of length 2 * radius + 1 (float32)."""
  sigma = tf.cast(sigma, tf.float32)
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  k = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
  return k / tf.reduce_sum(k)


def _blur(image: tf.Tensor, sigma) -> tf.Tensor:
  channels = _channels(image)
  shape = tf.shape(image)
  radius = blur_kernel_size(tf.minimum(shape[0], shape[1])) // 2
  kernel = gaussian_kernel(sigma, radius)
  k_w = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
  k_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
  # Mirror padding instead of zeros so borders are not darkened (a flat image stays flat).
  x = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
  x = tf.nn.depthwise_conv2d(x, k_w, strides=[1, 1, 1, 1], padding="VALID")
  x = tf.nn.depthwise_conv2d(x, k_h, strides=[1, 1, 1, 1], padding="VALID")
  return x[0]


def gaussian_blur(image, seed, prob, sigma_range=(0.1, 2.0)) -> tf.Tensor:
  """[H, W, C] -> float32 [H, W, C]; separable Gaussian blur, sigma ~ U(sigma_range), w.p. `prob`."""

  def blur(x, s):
    return _blur(x, tf.random.stateless_uniform([], s, sigma_range[0], sigma_range[1]))

  return _maybe(blur, _to_float(image), seed, prob)


def solarize(image, seed, prob, threshold=0.5) -> tf.Tensor:
  """[H, W, C] -> float32 [H, W, C]; pixels >= threshold become 1 - x, w.p. `prob`."""
  return _maybe(lambda x, _: tf.where(x >= threshold, 1.0 - x, x), _to_float(image), seed, prob)


# ----------------------------------------------------------------------------- views


def make_view(image, seed, spec: ViewSpec) -> tf.Tensor:
  """[H, W, C] uint8/float -> float32 [spec.size, spec.size, C], in [0, 1] before normalising.

  Order: crop -> flip -> jitter -> grayscale -> blur -> solarize -> normalise. Each stage has
  its own seed drawn up front, so turning one stage off does not change what the others do.
  """
  s_crop, s_flip, s_jit, s_grey, s_blur, s_sol = _split(seed, 6)
  b, c, s, h = spec.jitter
  x = random_resized_crop(image, s_crop, spec.size, spec.crop_scale, spec.crop_ratio)
  x = random_flip(x, s_flip, spec.flip_prob)
  x = color_jitter(x, s_jit, prob=spec.jitter_prob, brightness=b, contrast=c, saturation=s, hue=h)
  x = random_grayscale(x, s_grey, spec.grayscale_prob)
  x = gaussian_blur(x, s_blur, spec.blur_prob)
  x = solarize(x, s_sol, spec.solarize_prob)
  return normalize_image(x, spec.normalize)


def make_views(image, seed, specs: Sequence[ViewSpec]) -> tuple[tf.Tensor, ...]:
  """One view per spec, each from its own seed split off `seed`; returns a tuple of tensors."""
  seeds = _split(seed, len(specs))
  return tuple(make_view(image, s, spec) for s, spec in zip(seeds, specs))


def _normalization(name: str):
  if name not in NORMALIZATIONS:
    raise ValueError(
      f"Unknown input normalisation {name!r}; choose one of {tuple(NORMALIZATIONS)}."
    )
  return NORMALIZATIONS[name]


def normalize_image(image, name: str = "none") -> tf.Tensor:
  """[..., C] float images in [0, 1] -> (x - mean) / std per channel, with the statistics
  NORMALIZATIONS[name] (torchvision's Normalize); "none" returns the image as it is."""
  stats = _normalization(name)
  image = _to_float(image)
  if stats is None:
    return image
  mean, std = stats
  if image.shape[-1] != len(mean):
    raise ValueError(
      f"normalisation {name!r} has statistics for {len(mean)} channels but the images have "
      f"shape {image.shape}; use normalize='none' for grey images."
    )
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def eval_resize_size(size: int, crop_fraction: float) -> int:
  """Shorter side the evaluation view resizes to before its centre crop of `size`: round(size /
  crop_fraction), e.g. 256 for 224 at 0.875."""
  if not 0 < crop_fraction <= 1:
    raise ValueError(f"crop_fraction={crop_fraction} must be in (0, 1]; 1 is the whole image.")
  return round(size / crop_fraction)


def center_view(image, size, crop_fraction: float = 1.0, normalize: str = "none") -> tf.Tensor:
  """Eval preprocessing: [H, W, C] -> float32 [size, size, C], no randomness.

  crop_fraction 1 (small images, 28-32 px): the largest central square, bilinear-resized to
  `size`, so non-square inputs are not distorted; for square inputs a plain bilinear resize.
  crop_fraction f < 1 (ImageNet-size images; f = 0.875 is 224 of 256): as torchvision's
  Resize(round(size / f)) + CenterCrop(size) of the DINO / MoCo v3 evaluations: the shorter
  side is resized to round(size / f) (the longer one to floor of the same scale), bilinearly
  with antialiasing (as PIL), then the central size x size window is kept (offsets rounded as
  torchvision's center_crop). Last, the input normalisation `normalize` (see normalize_image).
  """
  image = _to_float(image)
  shape = tf.shape(image)
  if crop_fraction == 1.0:
    side = tf.minimum(shape[0], shape[1])
    crop = tf.slice(
      image,
      tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, 0]),
      tf.stack([side, side, -1]),
    )
    out = tf.image.resize(crop, [size, size], method="bilinear")
  else:
    short = eval_resize_size(size, crop_fraction)
    h, w = shape[0], shape[1]
    # torchvision: the longer side becomes int(short * long / old_short).
    new_h = tf.where(h <= w, short, (short * h) // w)
    new_w = tf.where(h <= w, (short * w) // h, short)
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)

    def offset(full):  # int(round((full - size) / 2)), half to even like Python's round
      return tf.cast(tf.round(tf.cast(full - size, tf.float32) / 2.0), tf.int32)

    out = tf.slice(resized, tf.stack([offset(new_h), offset(new_w), 0]), [size, size, -1])
  out.set_shape([size, size, image.shape[-1]])
  return normalize_image(out, normalize)
