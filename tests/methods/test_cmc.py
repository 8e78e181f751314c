"""CMC as a method: the evaluated encoder is [f_L, f_ab] of the two Lab-view encoders, what it
refuses (grey data, normalised inputs, streamed sources with the memory bank), the ImageNet
recipe (two ResNet-50s, 47M parameters), and the whole train step on 8 devices == 1 with
in-batch negatives and with the two memory banks (loss math: tests/losses/test_cmc_loss.py)."""

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from testkit import REPO
from testkit.configs import tiny_config
from testkit.steps import assert_trees_close, max_abs_change

from sslax import setup as setup_lib
from sslax import sharding, train
from sslax.data import sources
from sslax.evaluation import encoder as encoder_lib
from sslax.methods.base import EpochContext
from sslax.methods.cmc import LabViewsEncoder
from sslax.pretext import color


def cmc_config(negatives="batch"):
  c = tiny_config("cmc")
  c.dataset.channels = 3  # declared: the method builds without reading data
  c.cmc.feature_dim = 16
  c.cmc.negatives = negatives
  c.cmc.num_negatives = 8
  return c


def _method(config, devices):
  return setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices))


class PoolDense(nn.Module):
  """A stand-in encoder (compiles in no time): mean over pixels, then a Linear."""

  features: int

  @nn.compact
  def __call__(self, x, train=True):
    return nn.Dense(self.features)(jnp.mean(x, axis=(1, 2)))


def test_evaluated_features_are_both_encoders_concatenated(devices):
  """LabViewsEncoder (the backbone evaluation runs) = [encoder_L(L view), encoder_ab(ab view)]
  with train_CMC.py's Lab normalisation."""
  encoder = LabViewsEncoder(l_encoder=PoolDense(3), ab_encoder=PoolDense(5))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 8, 8, 3)), jnp.float32)
  variables = encoder.init(jax.random.key(0), x)
  got = np.asarray(encoder.apply(variables, x))
  lab = np.asarray(color.rgb_to_lab(x), np.float64)
  views = {
    "l_encoder": lab[..., :1] / 50.0 - 1.0,  # L in [-1, 1]
    "ab_encoder": (lab[..., 1:] - [6.025, -6.6895]) / [92.208, 101.1675],
  }
  halves = []
  for name, view in views.items():
    dense = variables["params"][name]["Dense_0"]
    halves.append(view.mean(axis=(1, 2)) @ dense["kernel"] + dense["bias"])
  np.testing.assert_allclose(got, np.concatenate(halves, axis=1), rtol=1e-5, atol=1e-6)


def test_the_method_network_evaluates_both_views(devices):
  """The method's network().backbone (what sslax.evaluate hands the protocols, on
  params["backbone"]) gives [f_L, f_ab]: twice one ResNet's features; the heads map each
  half to its own feature_dim projection."""
  c = cmc_config()
  net = _method(c, devices[:1]).network()
  x = jnp.zeros((4, 16, 16, 3))
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=False))
  backbone = encoder_lib.backbone_variables(variables["params"], variables["batch_stats"])
  assert set(backbone["params"]) == set(backbone["batch_stats"]) == {"l_encoder", "ab_encoder"}
  feats = jax.eval_shape(lambda v: net.backbone.apply(v, x, train=False), backbone)
  features, z_l, z_ab = jax.eval_shape(lambda v: net.apply(v, x, train=False), variables)
  assert feats.shape == features.shape == (4, 2 * 64)  # ResNet-10 x1/8: 64 features per view
  assert z_l.shape == z_ab.shape == (4, 16)
  assert set(variables["params"]) == {"backbone", "head_l", "head_ab"}


def test_colour_inputs_are_required_and_colour_augmentation_is_off(devices):
  c = cmc_config()
  c.augment.jitter_prob, c.augment.grayscale_prob = 0.8, 0.2
  method = _method(c, devices[:1])
  (view,) = method.views()
  assert (view.jitter_prob, view.grayscale_prob, view.blur_prob, view.solarize_prob) == (0,) * 4
  assert view.crop_scale == tuple(c.augment.crop_scale) and view.flip_prob == 0.5
  with pytest.raises(ValueError, match="need a colour dataset.*openclipart"):
    method.init_inputs(16, 1)
  c.augment.normalize = "imagenet"
  with pytest.raises(ValueError, match="augment.normalize='imagenet'"):
    _method(c, devices[:1])


def test_only_the_memory_bank_needs_example_indices(devices):
  streamed = sources.TFDSSource(
    name="imagenet2012",
    split="train",
    data_dir=None,
    num_examples=1000,
    num_classes=10,
    class_names=tuple("abcdefghij"),
  )
  for negatives in ("batch", "memory_bank"):
    method = _method(cmc_config(negatives), devices[:1])
    ctx = EpochContext(train_source=streamed, mesh=method.mesh, state_sharding=None)
    if negatives == "batch":
      assert method.before_epoch("state", 0, ctx) == "state"
      assert method.init_state(jax.random.key(0), {}) == {}
    else:
      with pytest.raises(ValueError, match="cmc keeps one memory-bank row .* streamed from TFDS"):
        method.before_epoch("state", 0, ctx)


def test_tpu_recipe_is_two_resnet50s_with_memory_banks(devices):
  path = os.path.join(REPO, "configs", "cmc_tpu.py")
  spec = importlib.util.spec_from_file_location("cmc_tpu", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert module.TPU_TOPOLOGY == "v5e:4x4"
  assert (c.batch_size, c.total_epochs, c.cmc.negatives, c.cmc.num_negatives) == (
    128,
    240.0,
    "memory_bank",
    16384,
  )
  method = _method(c, devices[:1])
  shapes = jax.eval_shape(
    lambda: method.network().init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
  )
  count = lambda tree: sum(np.prod(x.shape) for x in jax.tree.leaves(tree))
  backbone = shapes["params"]["backbone"]
  # ResNet-50 without fc: 23.5M; the L encoder's stem has 1 input channel, the ab one's 2.
  assert 46.9e6 < count(backbone) < 47.1e6  # the paper's "47M"
  assert backbone["l_encoder"]["stem_conv"]["kernel"].shape == (7, 7, 1, 64)
  assert backbone["ab_encoder"]["stem_conv"]["kernel"].shape == (7, 7, 2, 64)
  state = jax.eval_shape(method.init_state, jax.random.key(0), shapes)
  assert state["bank_l"].shape == state["bank_ab"].shape == (1252 * 1024, 128)
  per_epoch = method.run.steps_per_epoch
  lr = [float(method.run.lr_schedule(e * per_epoch)) for e in (0, 119, 120, 160, 200, 239)]
  np.testing.assert_allclose(lr, [0.03, 0.03, 0.003, 3e-4, 3e-5, 3e-5], rtol=1e-5)


def _batches():
  rng = np.random.default_rng(0)
  index = rng.permutation(64).astype(np.int32)
  out = []
  for rows in (index[:16], np.concatenate([index[8:16], index[16:24]])):
    colour = rng.uniform(0.1, 0.7, size=(16, 1, 1, 3))
    views = (colour + 0.3 * rng.uniform(size=(16, 16, 16, 3))).astype(np.float32)
    out.append({"views": (views,), "label": np.zeros(16, np.int32), "index": rows})
  return out


@pytest.mark.slow
@pytest.mark.parametrize("negatives", ["batch", "memory_bank"])
def test_train_step_eight_devices_equal_one_device(negatives, devices):
  batches = _batches()
  meshes = [(devices[:1], {"data": 1}), (devices, {"data": 8})]
  if negatives == "memory_bank":
    meshes.append((devices, {"data": 2, "fsdp": 4}))  # banks split by rows over "fsdp"
  out, init = [], None
  for devs, mesh in meshes:
    c = cmc_config(negatives)
    c.mesh = mesh
    s = setup_lib.build(c, devices=devs)
    init = jax.device_get(setup_lib.init_state(s)) if init is None else init
    state = jax.device_put(init, s.state_sharding)
    step = train.make_train_step(s)
    for b in batches:
      state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
    if mesh.get("fsdp", 1) > 1:
      assert state.method_state["bank_l"].sharding.spec == P("fsdp", None)
    out.append(jax.device_get((state, metrics)))
  s1, m1 = out[0]
  for s8, m8 in out[1:]:
    for key in m1:
      np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert_trees_close(s8.params, s1.params, rtol=1e-4, atol=1e-6)
    assert_trees_close(s8.batch_stats, s1.batch_stats, rtol=1e-4, atol=1e-6)
    assert_trees_close(s8.method_state, s1.method_state, rtol=1e-5, atol=1e-6)
  # Both encoders and both heads learn.
  for name in ("l_encoder", "ab_encoder"):
    assert max_abs_change(s1.params["backbone"][name], init.params["backbone"][name]) > 1e-4
  for name in ("head_l", "head_ab"):
    assert max_abs_change(s1.params[name], init.params[name]) > 1e-4
