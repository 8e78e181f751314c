"""Stateless per-image view augmentations (SimCLR-style) in TensorFlow ops.

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

import tensorflow as tf

# torchvision's RandomResizedCrop tries this many boxes before giving up on the scale/ratio.
_CROP_ATTEMPTS = 10


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


def _jitter(image: tf.Tensor, seed, strength: float) -> tf.Tensor:
  order_seed, b_seed, c_seed, s_seed, h_seed = _split(seed, 5)
  lo, hi = max(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
  bright = tf.random.stateless_uniform([], b_seed, lo, hi)
  contrast = tf.random.stateless_uniform([], c_seed, lo, hi)
  sat = tf.random.stateless_uniform([], s_seed, lo, hi)
  hue_max = min(0.2 * strength, 0.5)  # adjust_hue rejects |delta| > 0.5
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

  # Saturation and hue do nothing to a grey image, so they are not even built for 1 channel.
  ops = [brightness_op, contrast_op]
  if _channels(image) == 3:
    ops += [saturation_op, hue_op]
  order = tf.argsort(tf.random.stateless_uniform([len(ops)], order_seed))
  x = image
  for step in range(len(ops)):
    # Clip after each op so later ops see a valid image, like SimCLR does.
    branches = [lambda op=op, x=x: tf.clip_by_value(op(x), 0.0, 1.0) for op in ops]
    x = tf.switch_case(order[step], branches)
    x.set_shape(image.shape)
  return x


def color_jitter(image, seed, strength=1.0, prob=0.8) -> tf.Tensor:
  """[H, W, C] -> float32 [H, W, C] in [0, 1].

  With probability `prob`, applies brightness, contrast, saturation and hue (in a random
  order) with SimCLR's ranges scaled by `strength`. 1-channel images get only brightness
  and contrast.
  """
  image = _to_float(image)
  _channels(image)
  return _maybe(lambda x, s: _jitter(x, s, strength), image, seed, prob)


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
  """[H, W, C] uint8/float -> float32 [spec.size, spec.size, C] in [0, 1].

  Order: crop -> flip -> jitter -> grayscale -> blur -> solarize. Each stage has its own seed
  drawn up front, so turning one stage off does not change what the others do.
  """
  s_crop, s_flip, s_jit, s_grey, s_blur, s_sol = _split(seed, 6)
  x = random_resized_crop(image, s_crop, spec.size, spec.crop_scale, spec.crop_ratio)
  x = random_flip(x, s_flip, spec.flip_prob)
  x = color_jitter(x, s_jit, spec.jitter_strength, spec.jitter_prob)
  x = random_grayscale(x, s_grey, spec.grayscale_prob)
  x = gaussian_blur(x, s_blur, spec.blur_prob)
  x = solarize(x, s_sol, spec.solarize_prob)
  return x


def make_views(image, seed, specs: Sequence[ViewSpec]) -> tuple[tf.Tensor, ...]:
  """One view per spec, each from its own seed split off `seed`; returns a tuple of tensors."""
  seeds = _split(seed, len(specs))
  return tuple(make_view(image, s, spec) for s, spec in zip(seeds, specs))


def center_view(image, size) -> tf.Tensor:
  """Eval preprocessing: [H, W, C] -> float32 [size, size, C], no randomness.

  Takes the largest central square first so non-square inputs are not distorted; for square
  inputs this is a plain bilinear resize.
  """
  image = _to_float(image)
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  crop = tf.slice(
    image, tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, 0]), tf.stack([side, side, -1])
  )
  out = tf.image.resize(crop, [size, size], method="bilinear")
  out.set_shape([size, size, image.shape[-1]])
  return out
