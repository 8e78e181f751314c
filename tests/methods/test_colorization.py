"""Colorization: Lab conversion vs the CIE formulas, ab bins, soft encoding, rebalancing,
the loss vs NumPy, 8 devices == 1, the bin prior pass, and the refusal of grey data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import sharding
from sslax.methods.colorization import ab_targets, colorization_loss
from sslax.pretext import color


# ---- An independent reference from the CIE / sRGB definitions (float64, D65 white).


def srgb_to_lab_reference(rgb):
  rgb = np.asarray(rgb, np.float64)
  lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  m = np.array(
    [
      [0.4124564, 0.3575761, 0.1804375],
      [0.2126729, 0.7151522, 0.0721750],
      [0.0193339, 0.1191920, 0.9503041],
    ]
  )
  x, y, z = np.moveaxis(lin @ m.T, -1, 0)
  xn, yn, zn = 0.95047, 1.0, 1.08883
  eps, kappa = 216 / 24389, 24389 / 27  # CIE's exact constants

  def f(t):
    return np.where(t > eps, np.cbrt(t), (kappa * t + 16) / 116)

  fx, fy, fz = f(x / xn), f(y / yn), f(z / zn)
  return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -1)


def test_lab_matches_cie_reference_and_round_trips():
  rng = np.random.default_rng(0)
  rgb = np.concatenate(
    [rng.uniform(size=(500, 3)), np.eye(3), [[1, 1, 1], [0, 0, 0], [0.02, 0.01, 0.03]]]
  )
  lab = np.asarray(color.rgb_to_lab(jnp.asarray(rgb, jnp.float32)))
  np.testing.assert_allclose(lab, srgb_to_lab_reference(rgb), atol=2e-3)
  np.testing.assert_allclose(lab[-3], [100, 0, 0], atol=1e-3)  # D65 white
  np.testing.assert_allclose(lab[-2], [0, 0, 0], atol=1e-4)
  back = np.asarray(color.lab_to_rgb(jnp.asarray(lab)))
  np.testing.assert_allclose(back, rgb, atol=1e-4)


def test_bin_centres_are_the_in_gamut_grid_cells():
  centers = color.ab_bin_centers(10.0)
  assert centers.shape[1] == 2 and 250 <= len(centers) <= 313
  np.testing.assert_array_equal(centers % 10, 0)
  # Every sRGB colour's nearest grid cell is a bin (checked on the reference's Lab).
  rng = np.random.default_rng(1)
  ab = srgb_to_lab_reference(rng.uniform(size=(2000, 3)))[:, 1:]
  cells = {tuple(c) for c in (np.round(ab / 10) * 10).tolist()}
  assert cells <= {tuple(c) for c in centers.tolist()}
  # A coarser grid gives fewer bins.
  assert len(color.ab_bin_centers(20.0)) < len(centers)


def test_hard_and_soft_encoding_on_hand_made_values():
  centers = color.ab_bin_centers(10.0)
  index = {tuple(c): i for i, c in enumerate(centers.tolist())}
  ab = jnp.asarray([[3.0, -4.0], [12.0, 27.0], [-16.0, 44.0], [0.0, 0.0]])
  np.testing.assert_array_equal(
    color.hard_encode(ab, centers),
    [index[(0, 0)], index[(10, 30)], index[(-20, 40)], index[(0, 0)]],
  )
  # At a bin centre: itself (d = 0) and its 4 grid neighbours (d = 10) share the mass with
  # weights 1 : e^-2 (Gaussian, sigma 5: exp(-100 / 50)).
  soft = np.asarray(color.soft_encode(ab[3:], centers))[0]
  w0 = 1 / (1 + 4 * np.exp(-2))
  assert soft[index[(0, 0)]] == pytest.approx(w0, rel=1e-5)
  for nb in [(10, 0), (-10, 0), (0, 10), (0, -10)]:
    assert soft[index[nb]] == pytest.approx(w0 * np.exp(-2), rel=1e-5)
  assert soft.sum() == pytest.approx(1.0) and (soft > 0).sum() == 5


def test_rebalancing_weights_formula():
  centers = np.array([[0.0, 0.0], [10.0, 0.0], [40.0, 0.0]], np.float32)
  counts = np.array([70.0, 25.0, 5.0])
  lam, sigma = 0.5, 5.0
  # NumPy: Gaussian smoothing of p over the bin centres, mix with uniform, invert, E_p~[w] = 1.
  p = counts / counts.sum()
  d2 = ((centers[:, None] - centers[None]) ** 2).sum(-1)
  smooth = np.exp(-d2 / (2 * sigma**2)) @ p
  smooth /= smooth.sum()
  w = 1 / ((1 - lam) * smooth + lam / 3)
  w /= (smooth * w).sum()
  got = np.asarray(color.rebalancing_weights(jnp.asarray(counts), centers, lam=lam, sigma=sigma))
  np.testing.assert_allclose(got, w, rtol=1e-5)
  assert got[2] > got[1] > got[0]  # rare colours weigh more
  np.testing.assert_allclose(
    color.rebalancing_weights(jnp.asarray(counts), centers, lam=1.0), 1.0, rtol=1e-5
  )  # lambda = 1: uniform weights


def test_loss_matches_numpy_cross_entropy():
  centers = color.ab_bin_centers(10.0)
  rng = np.random.default_rng(2)
  ab = rng.uniform(-40, 40, size=(2, 3, 3, 2)).astype(np.float32)
  logits = rng.normal(size=(2, 3, 3, len(centers))).astype(np.float32)
  weights = rng.uniform(0.5, 2.0, size=len(centers)).astype(np.float32)
  for soft in (False, True):
    loss, metrics = colorization_loss(
      jnp.asarray(logits), jnp.asarray(ab), centers, soft=soft, bin_weights=jnp.asarray(weights)
    )
    # NumPy: nearest bin by brute force; soft targets from the 5 nearest, Gaussian sigma 5.
    d2 = ((ab[..., None, :] - centers) ** 2).sum(-1)
    nearest = d2.argmin(-1)
    if soft:
      target = np.zeros_like(d2)
      top = np.argsort(d2, axis=-1)[..., :5]
      g = np.exp(-np.take_along_axis(d2, top, -1) / 50)
      np.put_along_axis(target, top, g / g.sum(-1, keepdims=True), -1)
    else:
      target = np.eye(len(centers))[nearest]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -(target * logp).sum(-1) * weights[nearest]
    np.testing.assert_allclose(float(loss), ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(
      float(metrics["pretext_accuracy"]), (logits.argmax(-1) == nearest).mean()
    )


def colour_config():
  c = tiny_config("colorization")
  c.colorization.decoder_width = 16
  c.colorization.grid = 20.0  # fewer bins: a faster test
  c.colorization.prior_num_examples = 32
  c.eval.batch_size = 16
  return c


def colourful_batch(batch=16, size=16, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.uniform(0.1, 0.9, size=(batch, 1, 1, 3))
  grad = np.linspace(0, 0.3, size)[None, :, None, None]
  return np.clip(base + grad + 0.05 * rng.normal(size=(batch, size, size, 3)), 0, 1).astype(
    np.float32
  )


def loss_and_grads(config, devices, images, bin_weights):
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  ms = dict(state.method_state, bin_weights=jnp.asarray(bin_weights))
  batch = sharding.make_global_batch(s.mesh, {"views": (images,)})
  fn = jax.jit(
    jax.value_and_grad(
      lambda p: s.method.loss(p, state.batch_stats, ms, batch, jax.random.key(0)), has_aux=True
    )
  )
  (loss, (metrics, stats, _)), grads = fn(state.params)
  return jax.device_get((loss, metrics, stats, grads))


@pytest.mark.slow  # test budget (2026-11-30): per-pixel loss, no cross-device term but BN; ~90 s
def test_eight_devices_equal_one_loss_and_grads(devices):
  config = colour_config()
  images = colourful_batch()
  q = len(color.ab_bin_centers(config.colorization.grid))
  weights = np.random.default_rng(3).uniform(0.5, 2.0, size=q).astype(np.float32)
  l1, m1, s1, g1 = loss_and_grads(config, devices[:1], images, weights)
  l8, m8, s8, g8 = loss_and_grads(config, devices, images, weights)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s8, s1)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g1["backbone"])) > 0


def test_encoder_sees_only_lightness(devices):
  """Two images with the same L and different ab give the same backbone features."""
  config = colour_config()
  s = setup_lib.build(config, devices=devices[:1])
  state = setup_lib.init_state(s)
  rng = np.random.default_rng(4)
  lab = np.concatenate(
    [rng.uniform(30, 70, size=(4, 16, 16, 1)), rng.uniform(-15, 15, size=(4, 16, 16, 2))], -1
  ).astype(np.float32)
  recoloured = lab.copy()
  recoloured[..., 1:] *= -1  # opposite colours, same lightness (all in gamut at these L)
  images = [color.lab_to_rgb(jnp.asarray(x)) for x in (lab, recoloured)]
  lightness = [np.asarray(color.rgb_to_lab(x))[..., 0] for x in images]
  assert np.abs(lightness[0] - lightness[1]).max() < 0.01
  variables = {"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]}
  f = [np.asarray(s.method.network().backbone.apply(variables, x, train=False)) for x in images]
  np.testing.assert_allclose(f[0], f[1], atol=0.05 * np.abs(f[0]).max() + 1e-6)
  assert np.abs(np.asarray(images[0]) - np.asarray(images[1])).max() > 0.1  # colours did differ


def test_bin_prior_is_counted_once_before_training(devices):
  config = colour_config()
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  state = s.method.before_epoch(state, 0, s.epoch_context())
  ms = jax.device_get(state.method_state)
  side = config.dataset.image_size // config.colorization.target_stride
  assert ms["prior_ready"] == 1
  assert ms["prior_counts"].sum() == pytest.approx(32 * side * side)  # prior_num_examples
  np.testing.assert_allclose(
    ms["bin_weights"], color.rebalancing_weights(ms["prior_counts"], s.method.centers), rtol=1e-5
  )
  # The hard bins of the first 32 centre crops (independent of the pass's batching).
  src = s.train_source
  imgs = jax.image.resize(
    jnp.asarray(src.images[:32], jnp.float32) / 255.0, (32, 16, 16, 3), "linear"
  )
  counts = np.bincount(
    np.asarray(color.hard_encode(ab_targets(imgs, side), s.method.centers)).ravel(),
    minlength=len(s.method.centers),
  )
  np.testing.assert_allclose(ms["prior_counts"], counts)
  again = s.method.before_epoch(
    state, 1, s.epoch_context()
  )  # a second epoch (or a resume) does not recount
  assert again is state


def test_grey_dataset_is_refused_with_a_clear_error(devices, tmp_path):
  config = colour_config()
  config.dataset.name = "fashion_mnist"
  config.dataset.image_size = 28
  config.colorization.target_stride = 4
  try:
    with pytest.raises(ValueError, match="colorization needs a colour dataset.*openclipart"):
      setup_lib.build(config, devices=devices[:1])
  except Exception as e:  # pragma: no cover - only where Fashion-MNIST is not installed
    if "DatasetNotFoundError" in type(e).__name__:
      pytest.skip("Fashion-MNIST not on this machine")
    raise


def test_masks_and_targets_deterministic():
  images = jnp.asarray(colourful_batch(batch=2))
  np.testing.assert_array_equal(ab_targets(images, 4), ab_targets(images, 4))
