"""Behavioural tests for sslax.data.augment (tiny images, CPU only)."""

import numpy as np
import pytest
import tensorflow as tf

from sslax.data import augment as A


def _seed(a, b=0):
  return tf.constant([a, b], tf.int64)


def _rgb(h=16, w=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _grey(h=16, w=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(h, w, 1), dtype=np.uint8)


def _float(img):
  return tf.image.convert_image_dtype(img, tf.float32).numpy()  # the library's uint8 convention


STRONG = A.ViewSpec(size=12, jitter_prob=1.0, grayscale_prob=0.2, blur_prob=0.5, solarize_prob=0.2)


# ----------------------------------------------------------------------------- determinism


def test_make_view_same_seed_same_output_different_seed_different():
  img = _rgb()
  a = A.make_view(img, _seed(1), STRONG).numpy()
  b = A.make_view(img, _seed(1), STRONG).numpy()
  c = A.make_view(img, _seed(2), STRONG).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_int32_and_int64_seeds_both_accepted():
  img = _rgb()
  for dtype in (tf.int32, tf.int64):
    out = A.make_view(img, tf.constant([3, 4], dtype), STRONG)
    assert out.shape == (12, 12, 3)


def test_make_view_deterministic_inside_dataset_map():
  imgs = np.stack([_rgb(seed=i) for i in range(3)])
  seeds = np.array([[7, 0], [7, 0], [8, 0]], np.int64)
  ds = tf.data.Dataset.from_tensor_slices((imgs[[0, 0, 0]], seeds))
  ds = ds.map(lambda x, s: A.make_view(x, s, STRONG))
  assert ds.element_spec.shape == (12, 12, 3)
  first, second, third = [x.numpy() for x in ds]
  np.testing.assert_array_equal(first, second)
  assert not np.allclose(first, third)
  # Graph (dataset) and eager execution agree for the same seed.
  np.testing.assert_allclose(first, A.make_view(imgs[0], seeds[0], STRONG).numpy(), atol=1e-6)


def test_make_views_are_independent_and_reproducible():
  img = _rgb()
  specs = [STRONG, STRONG, A.ViewSpec(size=8)]
  v1 = A.make_views(img, _seed(5), specs)
  v2 = A.make_views(img, _seed(5), specs)
  assert isinstance(v1, tuple) and len(v1) == 3
  assert [v.shape for v in v1] == [(12, 12, 3), (12, 12, 3), (8, 8, 3)]
  for a, b in zip(v1, v2):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # Two views from the same spec must not share a seed.
  assert not np.allclose(v1[0].numpy(), v1[1].numpy())


# ----------------------------------------------------------------------------- crop


def test_random_resized_crop_shape_dtype():
  out = A.random_resized_crop(_rgb(20, 14), _seed(0), 10)
  assert out.shape == (10, 10, 3) and out.dtype == tf.float32


def test_full_scale_unit_ratio_crop_is_plain_resize():
  img = _rgb(16, 16)
  out = A.random_resized_crop(img, _seed(3), 8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  expected = tf.image.resize(_float(img), [8, 8], method="bilinear")
  np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)


def test_crop_of_constant_image_is_constant():
  img = np.full((16, 12, 3), 0.3, np.float32)
  for i in range(5):
    out = A.random_resized_crop(img, _seed(i), 9).numpy()
    np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_sample_crop_box_inside_image_and_within_scale():
  height, width, scale, ratio = 40, 30, (0.08, 1.0), (3 / 4, 4 / 3)
  boxes = np.array(
    [[int(v) for v in A.sample_crop_box(_seed(i), height, width, scale, ratio)] for i in range(200)]
  )
  oh, ow, h, w = boxes.T
  assert (oh >= 0).all() and (ow >= 0).all() and (h >= 1).all() and (w >= 1).all()
  assert (oh + h <= height).all() and (ow + w <= width).all()

  # Fallback for a 40x30 image: 30/40 = 0.75 is inside ratio, so the whole image.
  fallback = (oh == 0) & (ow == 0) & (h == height) & (w == width)
  assert fallback.mean() < 0.1  # 10 attempts rarely all fail
  area = height * width
  hs, ws = h[~fallback], w[~fallback]
  # Rounding moves each side by at most 0.5 px; bound the unrounded area and aspect ratio.
  assert ((hs + 0.5) * (ws + 0.5) >= scale[0] * area).all()
  assert ((hs - 0.5) * (ws - 0.5) <= scale[1] * area).all()
  assert ((ws + 0.5) / (hs - 0.5) >= ratio[0]).all()
  assert ((ws - 0.5) / (hs + 0.5) <= ratio[1]).all()
  # The sampled area fractions actually spread over the range, and positions vary.
  frac = hs * ws / area
  assert frac.min() < 0.25 and frac.max() > 0.75
  assert len(set(zip(oh.tolist(), ow.tolist()))) > 50


def test_sample_crop_box_fallback_is_central_ratio_clamped():
  # scale > 1 can never fit, forcing the fallback. 100x20 is narrower than 3/4 -> h = 20 / 0.75.
  oh, ow, h, w = [int(v) for v in A.sample_crop_box(_seed(0), 100, 20, (2.0, 3.0), (3 / 4, 4 / 3))]
  assert (h, w) == (27, 20)
  assert (oh, ow) == ((100 - 27) // 2, 0)
  # Wider than 4/3 -> w = round(20 * 4/3) = 27.
  oh, ow, h, w = [int(v) for v in A.sample_crop_box(_seed(0), 20, 100, (2.0, 3.0), (3 / 4, 4 / 3))]
  assert (oh, ow, h, w) == (0, (100 - 27) // 2, 20, 27)


# ----------------------------------------------------------------------------- flip / grey


def test_flip_prob_one_and_zero():
  img = _rgb()
  flipped = A.random_flip(img, _seed(0), prob=1.0).numpy()
  np.testing.assert_array_equal(flipped, tf.image.flip_left_right(_float(img)).numpy())
  np.testing.assert_array_equal(A.random_flip(img, _seed(0), prob=0.0).numpy(), _float(img))


def test_flip_half_prob_does_both():
  img = _grey(4, 4)
  flips = [not np.array_equal(A.random_flip(img, _seed(i)).numpy(), _float(img)) for i in range(40)]
  assert 5 < sum(flips) < 35


def test_grayscale_rgb_gives_equal_channels_and_grey_is_identity():
  out = A.random_grayscale(_rgb(), _seed(0), prob=1.0).numpy()
  assert out.shape == (16, 16, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  assert not np.allclose(out, _float(_rgb()))
  grey = _grey()
  np.testing.assert_array_equal(A.random_grayscale(grey, _seed(0), prob=1.0).numpy(), _float(grey))
  np.testing.assert_array_equal(
    A.random_grayscale(_rgb(), _seed(0), prob=0.0).numpy(), _float(_rgb())
  )


# ----------------------------------------------------------------------------- solarize / blur


def test_solarize_matches_formula():
  x = np.array([[0.0, 0.2, 0.49], [0.5, 0.7, 1.0]], np.float32)[..., None]
  out = A.solarize(x, _seed(0), prob=1.0).numpy()
  expected = np.where(x >= 0.5, 1.0 - x, x)
  np.testing.assert_allclose(out, expected, atol=1e-7)
  np.testing.assert_array_equal(A.solarize(x, _seed(0), prob=0.0).numpy(), x)


def test_gaussian_kernel_normalised_symmetric():
  for sigma in (0.1, 1.0, 2.0):
    k = A.gaussian_kernel(sigma, 4).numpy()
    assert k.shape == (9,)
    np.testing.assert_allclose(k.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(k, k[::-1], atol=1e-7)
    assert k.argmax() == 4


def test_blur_kernel_size_is_odd_tenth_at_least_three():
  assert [int(A.blur_kernel_size(s)) for s in (8, 32, 96, 224)] == [3, 3, 9, 23]


def test_blur_preserves_constant_image_and_smooths_noise():
  const = np.full((12, 12, 3), 0.6, np.float32)
  np.testing.assert_allclose(A.gaussian_blur(const, _seed(0), prob=1.0).numpy(), 0.6, atol=1e-6)
  noise = _float(_rgb(32, 32))
  blurred = A.gaussian_blur(noise, _seed(0), prob=1.0, sigma_range=(1.0, 2.0)).numpy()
  assert blurred.shape == noise.shape
  assert blurred.var() < 0.5 * noise.var()
  np.testing.assert_allclose(blurred.mean(), noise.mean(), atol=0.02)
  np.testing.assert_array_equal(A.gaussian_blur(noise, _seed(0), prob=0.0).numpy(), noise)


# ----------------------------------------------------------------------------- jitter


@pytest.mark.parametrize("maker", [_rgb, _grey])
def test_jitter_range_channels_and_prob(maker):
  img = maker()
  for i in range(6):
    out = A.color_jitter(img, _seed(i), strength=1.5, prob=1.0).numpy()
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, _float(img))
  np.testing.assert_array_equal(A.color_jitter(img, _seed(0), prob=0.0).numpy(), _float(img))


def test_jitter_brightness_is_multiplicative():
  # Black stays black under x * b and contrast around the mean; additive brightness would not.
  black = np.zeros((8, 8, 3), np.float32)
  for i in range(4):
    np.testing.assert_allclose(A.color_jitter(black, _seed(i), prob=1.0).numpy(), 0.0, atol=1e-6)


def test_jitter_keeps_grey_rgb_grey():
  grey3 = np.repeat(_float(_grey()), 3, axis=-1)
  for i in range(4):
    out = A.color_jitter(grey3, _seed(i), prob=1.0).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-5)


# ----------------------------------------------------------------------------- views


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("as_float", [False, True])
def test_make_view_shape_dtype_range(channels, as_float):
  img = _rgb() if channels == 3 else _grey()
  if as_float:
    img = _float(img)
  spec = A.ViewSpec(size=10, blur_prob=1.0, solarize_prob=1.0, jitter_prob=1.0, grayscale_prob=1.0)
  out = A.make_view(img, _seed(9), spec).numpy()
  assert out.shape == (10, 10, channels) and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("channels", [1, 3])
def test_static_shapes_in_graph_mode(channels):
  spec = A.ViewSpec(size=10, blur_prob=0.5, solarize_prob=0.5)

  @tf.function(
    input_signature=[tf.TensorSpec([None, None, channels], tf.uint8), tf.TensorSpec([2], tf.int64)]
  )
  def fn(x, s):
    return A.make_view(x, s, spec), A.center_view(x, 7)

  view, centre = fn.get_concrete_function().structured_outputs
  assert view.shape.as_list() == [10, 10, channels]
  assert centre.shape.as_list() == [7, 7, channels]


def test_center_view_is_deterministic_resize():
  img = _rgb(16, 16)
  np.testing.assert_allclose(A.center_view(img, 16).numpy(), _float(img), atol=1e-6)
  expected = tf.image.resize(_float(img), [8, 8]).numpy()
  np.testing.assert_allclose(A.center_view(img, 8).numpy(), expected, atol=1e-6)
  # Non-square: the central square is used, so a 16x24 image equals its middle 16x16.
  wide = _rgb(16, 24)
  np.testing.assert_allclose(A.center_view(wide, 16).numpy(), _float(wide[:, 4:20]), atol=1e-6)


# ----------------------------------------------------------------------------- jitter ranges


def _mid_rgb(h=8, w=8, seed=0):
  """Colourful float pixels in [0.3, 0.7]: no jitter factor of these tests clips them."""
  return np.random.default_rng(seed).uniform(0.3, 0.7, size=(h, w, 3)).astype(np.float32)


ONLY = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}


def test_jitter_ranges_come_from_strength_unless_given_one_by_one():
  assert A.jitter_ranges(1.0) == pytest.approx((0.8, 0.8, 0.8, 0.2))
  assert A.jitter_ranges(0.5) == pytest.approx((0.4, 0.4, 0.4, 0.1))  # MoCo v2's aug+
  # BYOL / Barlow Twins / VICReg / MoCo v3 / DINO: not expressible as a strength.
  assert A.jitter_ranges(0.5, saturation=0.2) == pytest.approx((0.4, 0.4, 0.2, 0.1))
  assert A.jitter_ranges(1.0, 0.4, 0.4, 0.2, 0.1) == pytest.approx((0.4, 0.4, 0.2, 0.1))
  assert A.jitter_ranges(3.0)[3] == 0.5  # the derived hue is capped, as before
  assert A.ViewSpec(size=8, saturation=0.2).jitter == pytest.approx((0.8, 0.8, 0.2, 0.2))


@pytest.mark.parametrize("bad", [{"hue": 0.6}, {"brightness": -0.1}, {"saturation": -1.0}])
def test_jitter_range_out_of_bounds_fails_when_the_spec_is_made(bad):
  with pytest.raises(ValueError, match="colour jitter"):
    A.ViewSpec(size=8, **bad)


def test_hue_only_jitter_shifts_hue_within_its_range_and_keeps_saturation_and_value():
  img = _mid_rgb()
  hsv = tf.image.rgb_to_hsv(img).numpy()
  shifts = []
  for i in range(30):
    out = A.color_jitter(img, _seed(i), prob=1.0, **{**ONLY, "hue": 0.1}).numpy()
    out_hsv = tf.image.rgb_to_hsv(out).numpy()
    np.testing.assert_allclose(out_hsv[..., 1:], hsv[..., 1:], atol=1e-5)
    d = (out_hsv[..., 0] - hsv[..., 0] + 0.5) % 1.0 - 0.5  # circular hue difference
    np.testing.assert_allclose(d, d.flat[0], atol=1e-4)  # one shift for the whole image
    shifts.append(d.flat[0])
  shifts = np.array(shifts)
  assert np.abs(shifts).max() <= 0.1 + 1e-4
  assert shifts.min() < -0.05 and shifts.max() > 0.05  # spread over [-0.1, 0.1]


def test_saturation_only_jitter_factor_is_within_one_plus_minus_its_range():
  img = _mid_rgb()
  grey = tf.image.rgb_to_grayscale(img).numpy()
  factors = []
  for i in range(30):
    out = A.color_jitter(img, _seed(i), prob=1.0, **{**ONLY, "saturation": 0.2}).numpy()
    # torchvision's adjust_saturation: grey + f (x - grey), the grey level unchanged (up to
    # the luma weights' sum, 0.9999).
    np.testing.assert_allclose(tf.image.rgb_to_grayscale(out).numpy(), grey, atol=1e-4)
    f = np.sum((out - grey) * (img - grey)) / np.sum((img - grey) ** 2)
    np.testing.assert_allclose(out, grey + f * (img - grey), atol=1e-5)
    factors.append(f)
  assert 0.8 - 1e-5 <= min(factors) < 0.88 and 1.12 < max(factors) <= 1.2 + 1e-5


@pytest.mark.parametrize("name", ["brightness", "contrast"])
def test_brightness_and_contrast_factors_are_within_one_plus_minus_their_range(name):
  img = _mid_rgb()
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(img)).numpy()
  factors = []
  for i in range(30):
    out = A.color_jitter(img, _seed(i), prob=1.0, **{**ONLY, name: 0.4}).numpy()
    if name == "brightness":
      f = np.median(out / img)
      np.testing.assert_allclose(out, f * img, atol=1e-5)
    else:  # (x - grey mean) f + grey mean
      f = np.sum((out - mean) * (img - mean)) / np.sum((img - mean) ** 2)
      np.testing.assert_allclose(out, (img - mean) * f + mean, atol=1e-5)
    factors.append(f)
  assert 0.6 - 1e-5 <= min(factors) < 0.7 and 1.3 < max(factors) <= 1.4 + 1e-5


def test_jitter_with_every_range_zero_is_the_identity():
  img = _mid_rgb()
  np.testing.assert_array_equal(A.color_jitter(img, _seed(0), prob=1.0, **ONLY).numpy(), img)


@pytest.mark.parametrize("maker", [_rgb, _grey])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_simclr_views_are_bit_identical_with_ranges_unset_or_spelled_out(maker, strength):
  """The SimCLR demo keeps its views: unset ranges are exactly the strength's (0.8 s, 0.2 s)."""
  s = strength
  implicit = A.ViewSpec(size=12, jitter_strength=s, jitter_prob=1.0, blur_prob=0.5)
  explicit = A.ViewSpec(
    size=12,
    jitter_prob=1.0,
    blur_prob=0.5,
    brightness=0.8 * s,
    contrast=0.8 * s,
    saturation=0.8 * s,
    hue=0.2 * s,
  )
  img = maker(20, 14)
  for i in range(6):
    np.testing.assert_array_equal(
      A.make_view(img, _seed(i), implicit).numpy(), A.make_view(img, _seed(i), explicit).numpy()
    )


def test_view_from_the_demo_config_is_the_old_spec():
  from sslax import config as config_lib

  augment = config_lib.base_config("simclr").augment
  assert (augment.brightness, augment.contrast, augment.saturation, augment.hue) == (None,) * 4
  assert augment.normalize == "none"
  spec = A.ViewSpec.from_config(augment, 28, crop_scale=(0.2, 1.0))
  assert spec == A.ViewSpec(size=28, crop_scale=(0.2, 1.0))
  assert spec.jitter == pytest.approx((0.8, 0.8, 0.8, 0.2)) and spec.normalize == "none"
  with augment.unlocked():
    augment.saturation, augment.normalize = 0.2, "imagenet"
  spec = A.ViewSpec.from_config(augment, 28)
  assert spec.jitter == pytest.approx((0.8, 0.8, 0.2, 0.2)) and spec.normalize == "imagenet"


# ----------------------------------------------------------------------------- evaluation view


def test_eval_resize_size_is_size_over_crop_fraction():
  assert A.eval_resize_size(224, 0.875) == 256
  assert A.eval_resize_size(8, 0.875) == 9  # round(9.14)
  assert A.eval_resize_size(28, 1.0) == 28
  for bad in (0.0, 1.5, -0.5):
    with pytest.raises(ValueError, match="crop_fraction"):
      A.eval_resize_size(224, bad)


def _pil_resize_then_centre_crop(img, size, fraction):
  """torchvision's Resize(round(size / fraction)) + CenterCrop(size) on a float image, per
  channel with PIL (mode "F", bilinear, which antialiases when shrinking), in NumPy."""
  from PIL import Image

  h, w = img.shape[:2]
  short = round(size / fraction)
  new_h, new_w = (int(short * h / w), short) if w <= h else (short, int(short * w / h))
  resized = np.stack(
    [
      np.asarray(Image.fromarray(img[..., c], mode="F").resize((new_w, new_h), Image.BILINEAR))
      for c in range(img.shape[-1])
    ],
    axis=-1,
  )
  top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)  # half to even
  return resized[top : top + size, left : left + size]


@pytest.mark.parametrize("shape", [(20, 14, 3), (14, 20, 3), (40, 33, 1), (6, 6, 3), (9, 12, 3)])
def test_center_view_with_crop_fraction_is_resize_then_centre_crop(shape):
  # S = 8 at 0.875: the shorter side goes to 9, then the central 8 x 8 (224 of 256 in miniature).
  img = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
  out = A.center_view(img, 8, crop_fraction=0.875).numpy()
  assert out.shape == (8, 8, shape[-1])
  np.testing.assert_allclose(out, _pil_resize_then_centre_crop(img, 8, 0.875), atol=1e-5)


def test_center_view_crop_fraction_drops_the_border():
  # A 16 x 16 image with a 1 px bright frame: the whole-image view keeps it, 0.875 crops it off.
  img = np.zeros((16, 16, 1), np.float32)
  img[0], img[-1], img[:, 0], img[:, -1] = 1.0, 1.0, 1.0, 1.0
  whole = A.center_view(img, 14).numpy()
  cropped = A.center_view(img, 14, crop_fraction=0.875).numpy()  # 16 -> 16, central 14
  assert whole[0].max() > 0.5
  np.testing.assert_array_equal(cropped, img[1:15, 1:15])


def test_center_view_whole_image_is_unchanged():
  """crop_fraction 1 (the default, the demo's) is the old central-square view, bit for bit."""
  for img, size in ((_grey(28, 28), 28), (_rgb(16, 24), 8), (_rgb(24, 16), 16)):
    x = _float(img)
    side = min(x.shape[:2])
    top, left = (x.shape[0] - side) // 2, (x.shape[1] - side) // 2
    old = tf.image.resize(x[top : top + side, left : left + side], [size, size]).numpy()
    np.testing.assert_array_equal(A.center_view(img, size).numpy(), old)
    np.testing.assert_array_equal(A.center_view(img, size, 1.0, "none").numpy(), old)


@pytest.mark.parametrize("channels", [1, 3])
def test_center_view_crop_fraction_static_shape_in_graph_mode(channels):
  @tf.function(input_signature=[tf.TensorSpec([None, None, channels], tf.uint8)])
  def fn(x):
    return A.center_view(x, 7, crop_fraction=0.875)

  assert fn.get_concrete_function().structured_outputs.shape.as_list() == [7, 7, channels]
  assert fn(_rgb(13, 9)[..., :channels]).shape == (7, 7, channels)


# ----------------------------------------------------------------------------- normalisation


def test_normalizations_are_the_references_statistics():
  imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision / PyTorch references
  assert A.NORMALIZATIONS["imagenet"] == imagenet
  assert A.NORMALIZATIONS["swav"] == ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))
  assert A.NORMALIZATIONS["clip"] == (  # open_clip OPENAI_DATASET_MEAN / _STD
    (0.48145466, 0.4578275, 0.40821073),
    (0.26862954, 0.26130258, 0.27577711),
  )
  assert A.NORMALIZATIONS["none"] is None


@pytest.mark.parametrize("name", ["imagenet", "swav", "clip"])
def test_normalize_image_is_minus_mean_over_std(name):
  img = _float(_rgb(4, 5))
  mean, std = (np.array(v, np.float32) for v in A.NORMALIZATIONS[name])
  np.testing.assert_allclose(A.normalize_image(img, name).numpy(), (img - mean) / std, atol=1e-6)
  # A pixel equal to the mean maps to 0; mean + std to 1.
  np.testing.assert_allclose(
    A.normalize_image(np.stack([mean, mean + std])[None], name), [[[0, 0, 0], [1, 1, 1]]], atol=1e-6
  )
  np.testing.assert_array_equal(A.normalize_image(img, "none").numpy(), img)


def test_normalisation_is_the_last_step_of_training_and_evaluation_views():
  img = _rgb(20, 14)
  plain = A.ViewSpec(size=10, jitter_prob=1.0, blur_prob=0.5)
  normed = A.ViewSpec(size=10, jitter_prob=1.0, blur_prob=0.5, normalize="imagenet")
  for i in range(3):
    np.testing.assert_allclose(
      A.make_view(img, _seed(i), normed).numpy(),
      A.normalize_image(A.make_view(img, _seed(i), plain), "imagenet").numpy(),
      atol=1e-6,
    )
  for fraction in (1.0, 0.875):
    np.testing.assert_allclose(
      A.center_view(img, 8, fraction, "imagenet").numpy(),
      A.normalize_image(A.center_view(img, 8, fraction), "imagenet").numpy(),
      atol=1e-6,
    )


def test_rgb_normalisation_of_grey_images_or_unknown_names_fail_naming_the_fix():
  with pytest.raises(ValueError, match="normalize='none'"):
    A.make_view(_grey(), _seed(0), A.ViewSpec(size=8, normalize="imagenet"))
  with pytest.raises(ValueError, match="imagenet"):
    A.ViewSpec(size=8, normalize="imagnet")
