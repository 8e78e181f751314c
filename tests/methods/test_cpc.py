"""CPC v2: the patch grid on a coordinate image, the masked context network is causal over
rows, the backbone's features are the grid mean of the patch encoder (and export as the plain
encoder), the loss is the InfoNCE of the network's outputs, and 8 devices == 1 device."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import sharding
from sslax.losses.cpc import cpc_loss
from sslax.methods.cpc import MaskedContext, PatchGridEncoder, patch_grid
from sslax.models import make_backbone


def cpc_config():
  c = tiny_config("cpc")  # 16 px views: a 3 x 3 grid of 8 px patches every 4 px
  c.dataset.train_size, c.dataset.channels = 64, 3
  c.cpc.patch_size, c.cpc.patch_stride = 8, 4
  c.cpc.prediction_offsets = (1, 2)
  c.cpc.context_blocks, c.cpc.context_width, c.cpc.target_dim = 2, 16, 8
  return c


@pytest.mark.parametrize("size, patch, stride, grid, margin", [(16, 8, 4, 3, 0), (18, 8, 4, 3, 1)])
def test_patch_grid_cuts_overlapping_patches_every_stride(size, patch, stride, grid, margin):
  images = np.arange(2 * size * size, dtype=np.float32).reshape(2, size, size, 1)
  out = np.asarray(patch_grid(jnp.asarray(images), patch, stride))
  assert out.shape == (2, grid, grid, patch, patch, 1)
  for n in range(2):
    for i in range(grid):
      for j in range(grid):
        r, c = margin + i * stride, margin + j * stride
        np.testing.assert_array_equal(out[n, i, j], images[n, r : r + patch, c : c + patch])


def test_grids_that_do_not_fit_are_refused(devices):
  c = cpc_config()
  c.cpc.patch_size = 12  # a 2 x 2 grid: offset 2 has no target
  with pytest.raises(ValueError, match=r"prediction_offsets=\(1, 2\).*\[1, 2\) rows"):
    setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))
  c.cpc.patch_size = 16  # one patch per side
  with pytest.raises(ValueError, match="make a 1 x 1 grid on 16 px"):
    setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))


def test_context_at_a_row_sees_only_that_row_and_the_rows_above():
  context = MaskedContext(num_blocks=3, width=8)
  rng = np.random.default_rng(0)
  z, noise = rng.normal(size=(2, 2, 5, 4, 6)).astype(np.float32)
  variables = jax.jit(context.init)(jax.random.key(1), z)
  apply = jax.jit(lambda x: context.apply(variables, x))
  out = np.asarray(apply(z))
  for row in range(5):
    below, same = z.copy(), z.copy()
    below[:, row + 1 :] += noise[:, row + 1 :]
    same[:, row] += 1.0
    below, same = np.asarray(apply(below)), np.asarray(apply(same))
    np.testing.assert_array_equal(below[:, : row + 1], out[:, : row + 1])
    np.testing.assert_array_equal(same[:, :row], out[:, :row])
    assert not np.allclose(same[:, row], out[:, row])  # its own row is seen
    if row + 1 < 5:
      assert not np.allclose(below[:, row + 1 :], out[:, row + 1 :])
  # Three blocks reach three rows up: row 3 sees row 0, row 4 does not.
  far = z.copy()
  far[:, 0] += 1.0
  far = np.asarray(apply(far))
  assert not np.allclose(far[:, 3], out[:, 3]) and np.array_equal(far[:, 4], out[:, 4])


class _PatchEncoder(nn.Module):
  """A stand-in encoder with BatchNorm: patches [M, p, p, C] -> [M, 4]."""

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Dense(4, name="embed")(x.reshape(x.shape[0], -1))
    return nn.BatchNorm(use_running_average=not train, name="bn")(x)


def test_backbone_is_the_grid_mean_of_the_patch_encoder_with_its_parameters():
  encoder = _PatchEncoder()
  backbone = PatchGridEncoder(encoder=encoder, patch_size=8, stride=4)
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
  variables = backbone.init(jax.random.key(0), images, train=False)
  # No parameters of its own: the layout of the plain encoder (what sslax.export rebuilds).
  plain = encoder.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, plain)
  variables = jax.tree.map(lambda x: x + 0.5, variables)  # non-trivial BN statistics
  features = backbone.apply(variables, images, train=False)
  patches = patch_grid(images, 8, 4).reshape(18, 8, 8, 3)
  per_patch = encoder.apply(variables, patches, train=False).reshape(2, 9, 4)
  np.testing.assert_allclose(features, per_patch.mean(axis=1), rtol=1e-5, atol=1e-6)
  grid = backbone.apply(variables, images, train=False, method=PatchGridEncoder.grid)
  np.testing.assert_allclose(grid, per_patch.reshape(2, 3, 3, 4), rtol=1e-5, atol=1e-6)


def test_training_network_backbone_holds_exactly_the_configured_encoder(devices):
  c = cpc_config()
  s = setup_lib.build(c, devices=devices[:1], data_free=True)
  shapes = jax.eval_shape(s.init_fn, jax.random.key(0))
  plain = jax.eval_shape(
    lambda: make_backbone(c.model).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  )
  assert jax.tree.map(np.shape, shapes.params["backbone"]) == jax.tree.map(
    np.shape, plain["params"]
  )
  assert set(shapes.params) == {"backbone", "context", "targets", "predict0", "predict1"}


def loss_and_grads(devices, images):
  """-> host (loss, metrics, batch_stats, grads) of the method's loss, one compile."""
  s = setup_lib.build(cpc_config(), devices=devices, data_free=True)
  state = setup_lib.init_state(s)
  batch = sharding.make_global_batch(s.mesh, {"views": (images,)})
  fn = jax.value_and_grad(
    lambda p: s.method.loss(p, state.batch_stats, {}, batch, jax.random.key(0)), has_aux=True
  )
  (loss, (metrics, stats, _)), grads = jax.jit(fn)(state.params)
  return jax.device_get((loss, metrics, stats, grads))


def _images(seed=0):
  return np.random.default_rng(seed).uniform(size=(16, 16, 16, 3)).astype(np.float32)


def test_loss_is_the_patch_info_nce_of_the_network_outputs(devices):
  """Forward only (one compile; the gradients are checked in the 8-device test)."""
  s = setup_lib.build(cpc_config(), devices=devices[:1], data_free=True)
  state = s.init_fn(jax.random.key(0))
  batch = {"views": (jnp.asarray(_images()),)}

  def fn(params):
    loss, (metrics, _, _) = s.method.loss(params, state.batch_stats, {}, batch, jax.random.key(0))
    variables = {"params": params, "batch_stats": state.batch_stats}
    outputs, _ = s.method.network().apply(
      variables, batch["views"][0], train=True, mutable=["batch_stats"]
    )
    return loss, metrics, outputs

  loss, metrics, (predictions, targets) = jax.device_get(jax.jit(fn)(state.params))
  assert predictions.shape == (16, 2, 3, 3, 8) and targets.shape == (16, 3, 3, 8)
  want, want_metrics = cpc_loss(predictions, targets, (1, 2))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["cpc_accuracy"], want_metrics["cpc_accuracy"])


@pytest.mark.slow
def test_eight_devices_equal_one_device_loss_and_grads(devices):
  images = _images(seed=1)
  l1, m1, s1, g1 = loss_and_grads(devices[:1], images)
  l8, m8, s8, g8 = loss_and_grads(devices, images)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s8, s1)
  # Every part learns: the patch encoder, the context, the targets and each offset's map.
  for name in ("backbone", "context", "targets", "predict0", "predict1"):
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g1[name])) > 0, name
