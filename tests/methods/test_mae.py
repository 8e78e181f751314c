"""MAE: masking (ratio, restore order), the masked-only loss vs NumPy, the method end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from testkit import REPO
from testkit.configs import tiny_config
from testkit.steps import assert_trees_close

from sslax import config as config_lib
from sslax import setup as setup_lib
from sslax import sharding, train
from sslax.losses import mae as mae_losses


def mae_loss_numpy(pred, images, mask, p, norm_pix):
  """The reference's loss written out patch by patch: MSE over pixels, mean over masked patches;
  norm_pix divides by sqrt of the unbiased variance (ddof=1, torch's `.var`) + 1e-6."""
  b, h, w, _ = images.shape
  total, count = 0.0, 0
  for i in range(b):
    n = 0
    for r in range(h // p):
      for col in range(w // p):
        patch = (
          images[i, r * p : (r + 1) * p, col * p : (col + 1) * p, :].reshape(-1).astype(np.float64)
        )
        if norm_pix:
          patch = (patch - patch.mean()) / np.sqrt(patch.var(ddof=1) + 1e-6)
        if mask[i, n]:
          total += np.mean((pred[i, n] - patch) ** 2)
          count += 1
        n += 1
  return total / count


def test_patchify_is_row_major_patches():
  images = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  patches = np.asarray(mae_losses.patchify(jnp.asarray(images), 2))
  assert patches.shape == (2, 4, 12)
  np.testing.assert_array_equal(patches[1, 2], images[1, 2:4, 0:2, :].reshape(-1))  # patch (1, 0)
  np.testing.assert_array_equal(patches[0, 1], images[0, 0:2, 2:4, :].reshape(-1))  # patch (0, 1)


@pytest.mark.parametrize("num_patches,ratio,kept", [(16, 0.75, 4), (49, 0.75, 12), (64, 0.5, 32)])
def test_masking_keeps_the_asked_ratio_and_restore_inverts_the_shuffle(num_patches, ratio, kept):
  keep, restore, mask = jax.device_get(
    mae_losses.random_masking(jax.random.key(0), 8, num_patches, ratio)
  )
  assert keep.shape == (8, kept) and restore.shape == (8, num_patches)
  assert kept == int(num_patches * (1 - ratio))
  np.testing.assert_array_equal(mask.sum(1), num_patches - kept)  # per example, exactly
  for i in range(8):
    assert len(set(keep[i])) == kept
    np.testing.assert_array_equal(mask[i, keep[i]], 0)  # kept ones are visible
    # restore inverts the shuffle: the shuffle (argsort of noise) begins with the kept ids, and
    # shuffle[restore] = identity; rebuild the shuffle from restore and check both facts.
    shuffle = np.argsort(restore[i])
    np.testing.assert_array_equal(shuffle[:kept], keep[i])
    np.testing.assert_array_equal(shuffle[restore[i]], np.arange(num_patches))
    tokens = np.arange(num_patches)[shuffle]  # shuffled order
    np.testing.assert_array_equal(np.take_along_axis(tokens, restore[i], 0), np.arange(num_patches))
  # Masks differ between examples (a fresh shuffle each).
  assert len({tuple(m) for m in mask}) > 1


def test_masking_rejects_ratios_that_keep_nothing():
  with pytest.raises(ValueError, match="mask_ratio=0.99 keeps 0 of 16 patches"):
    mae_losses.random_masking(jax.random.key(0), 2, 16, 0.99)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_counts_masked_patches_only(norm_pix):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(3, 8, 8, 2)).astype(np.float32)
  pred = rng.normal(size=(3, 4, 32)).astype(np.float32)
  mask = np.array([[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 1]], np.float32)
  loss = mae_losses.mae_loss(
    jnp.asarray(pred),
    mae_losses.patchify(jnp.asarray(images), 4),
    jnp.asarray(mask),
    norm_pix=norm_pix,
  )
  np.testing.assert_allclose(
    float(loss), mae_loss_numpy(pred, images, mask, 4, norm_pix), rtol=1e-5
  )
  # Changing a visible patch's prediction changes nothing; a masked one changes the loss.
  pred2 = pred.copy()
  pred2[0, 1] += 5.0
  same = mae_losses.mae_loss(
    jnp.asarray(pred2),
    mae_losses.patchify(jnp.asarray(images), 4),
    jnp.asarray(mask),
    norm_pix=norm_pix,
  )
  assert float(same) == float(loss)
  pred2[0, 0] += 5.0
  assert float(
    mae_losses.mae_loss(
      jnp.asarray(pred2),
      mae_losses.patchify(jnp.asarray(images), 4),
      jnp.asarray(mask),
      norm_pix=norm_pix,
    )
  ) > float(loss)


def test_norm_pix_target_uses_the_unbiased_variance_like_torch_var():
  """One 1x1x2 patch (0, 2): mean 1, torch's `.var` (N - 1) is 2, so the target is
  (-1, 1) / sqrt(2 + 1e-6) and a zero prediction costs 1 / (2 + 1e-6) (the biased variance, 1,
  gave 1 / (1 + 1e-6))."""
  images = jnp.asarray([[[[0.0, 2.0]]]])  # [1, 1, 1, 2]
  loss = mae_losses.mae_loss(
    jnp.zeros((1, 1, 2)), mae_losses.patchify(images, 1), jnp.ones((1, 1)), norm_pix=True
  )
  np.testing.assert_allclose(float(loss), 1 / (2 + 1e-6), rtol=1e-6)


def mae_config():
  c = tiny_config("mae")
  c.model.name = "vit"
  c.model.variant = "custom"
  c.model.hidden_size, c.model.num_layers, c.model.num_heads = 32, 2, 2
  c.model.patch_size = 4
  c.model.posemb = "sincos2d"
  c.mae.decoder_width, c.mae.decoder_depth, c.mae.decoder_heads = 16, 1, 2
  c.optimizer.name = "adamw"
  c.optimizer.base_lr = 1e-3
  c.optimizer.weight_decay = 0.05
  return c


def test_method_needs_a_vit_and_one_plain_view(devices):
  c = mae_config()
  c.model.name = "resnet"
  with pytest.raises(ValueError, match="model.name='resnet' must be 'vit'"):
    setup_lib.build(c, devices=devices[:1])
  mesh = sharding.make_mesh({"data": -1}, devices[:1])
  (view,) = setup_lib.build_method(mae_config(), mesh).views()
  assert view.jitter_prob == 0 and view.grayscale_prob == 0 and view.blur_prob == 0
  c = mae_config()
  c.mae.mask_ratio = 1.0
  with pytest.raises(ValueError, match="mask_ratio=1.0 keeps 0 of 16"):
    setup_lib.build_method(c, mesh)


def _images(n, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, 16, 16, 3)).astype(np.float32)


def test_method_loss_is_the_masked_mse_of_the_network(devices):
  """The method's loss, recomputed outside: same masks from the same rng, then NumPy."""
  c = mae_config()
  s = setup_lib.build(c, devices=devices[:1])
  state = setup_lib.init_state(s)
  images = _images(4)
  rng = jax.random.key(3)
  loss, (metrics, _, _) = s.method.loss(
    state.params, {}, {}, {"views": (jnp.asarray(images),)}, rng
  )
  mask_rng, _ = jax.random.split(rng)
  keep, restore, mask = mae_losses.random_masking(mask_rng, 4, 16, 0.75)
  pred = s.method.network().apply(
    {"params": state.params}, jnp.asarray(images), train=False, keep_ids=keep, restore_ids=restore
  )
  expected = mae_loss_numpy(np.asarray(pred), images, np.asarray(mask), 4, norm_pix=True)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["masked_fraction"]), 0.75)
  # network.backbone is the encoder evaluation uses: full images -> [B, 32].
  feats = s.method.network().backbone.apply(
    {"params": state.params["backbone"]}, jnp.asarray(images), train=False
  )
  assert feats.shape == (4, 32)


def test_registers_are_prefix_tokens_the_decoder_drops(devices):
  """A ViT with a class token and register tokens (3 prefix tokens): the decoder predicts one
  row per patch, the loss is still the masked MSE of those rows, and gap pooling averages the
  visible patch tokens only (not the class token or registers)."""
  c = mae_config()
  c.model.num_registers, c.model.class_token, c.model.pool = 2, True, "gap"
  s = setup_lib.build(c, devices=devices[:1])
  state = setup_lib.init_state(s)
  images = _images(2)
  rng = jax.random.key(0)
  loss, _ = s.method.loss(state.params, {}, {}, {"views": (jnp.asarray(images),)}, rng)
  keep, restore, mask = mae_losses.random_masking(jax.random.split(rng)[0], 2, 16, 0.75)
  network = s.method.network()
  pred, feats = network.apply(
    {"params": state.params},
    jnp.asarray(images),
    train=False,
    keep_ids=keep,
    restore_ids=restore,
    return_features=True,
  )
  assert pred.shape == (2, 16, 4 * 4 * 3)
  expected = mae_loss_numpy(np.asarray(pred), images, np.asarray(mask), 4, norm_pix=True)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  tokens = network.backbone.apply(
    {"params": state.params["backbone"]},
    jnp.asarray(images),
    train=False,
    keep_ids=keep,
    return_tokens=True,
  )
  assert tokens.shape == (2, 1 + 2 + 4, 32)
  want = tokens[:, 3:].mean(axis=1)
  np.testing.assert_allclose(np.asarray(feats), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_train_step_eight_devices_equal_one(devices):
  c = mae_config()
  batches = [{"views": (_images(16, seed=i),), "label": np.zeros(16, np.int32)} for i in range(3)]
  results = []
  for devs in (devices[:1], devices):
    s = setup_lib.build(c, devices=devs)
    state = setup_lib.init_state(s)
    step = train.make_train_step(s)
    losses = []
    for b in batches:
      state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
      losses.append(float(metrics["loss"]))
    results.append((jax.device_get(state.params), losses))
  (p1, l1), (p8, l8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  assert_trees_close(p8, p1, rtol=1e-4, atol=1e-6)


def test_config_keys_validate():
  c = mae_config()
  config_lib.validate(c)
  assert c.mae.mask_ratio == 0.75 and c.mae.norm_pix_loss


def _load_config(name):
  import importlib.util
  import os

  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_tpu_config_is_the_papers_vitb16_by_shape(devices):
  c = _load_config("mae_vitb16_tpu")
  config_lib.check_unknown_keys(c)
  assert (c.batch_size, c.total_epochs, c.mae.mask_ratio, c.optimizer.b2) == (
    4096,
    1600.0,
    0.75,
    0.95,
  )
  assert c.optimizer.base_lr * c.batch_size / 256 == pytest.approx(2.4e-3)
  net = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1])).network()
  shapes = jax.eval_shape(
    lambda: net.init(jax.random.key(0), jnp.zeros((2, 224, 224, 3)), train=False)
  )
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  # ViT-B/16 without position table (fixed sin-cos) and key bias: 85.8M; decoder 512 x 8: 26M.
  assert 85.0e6 < count(shapes["params"]["backbone"]) < 86.0e6
  assert 25.0e6 < count(shapes["params"]["decoder"]) < 27.0e6
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes["params"]))


def test_fashion_mnist_config_validates():
  c = _load_config("mae_vit_fashion_mnist")
  config_lib.validate(c)
  assert c.method == "mae" and c.model.patch_size == 4
