"""MoCo v3: the loss vs the paper's formula in NumPy, 8 devices == 1 (loss, grads, train step),
per-device logits [b, B], no gradient to the momentum encoder, the momentum schedule, and the
frozen random patch projection of a ViT."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit import REPO
from testkit.configs import tiny_config
from testkit.steps import (
  assert_trees_close,
  check_loss_eight_devices_equal_one,
  jaxpr_shapes_and_primitives,
  max_abs_change,
  random_batches,
  run_steps,
)
from sslax import setup as setup_lib
from sslax import sharding
from sslax.losses.mocov3 import mocov3_contrastive_loss, mocov3_loss


def mocov3_config():
  c = tiny_config("mocov3")
  c.mocov3.proj_hidden_dim = 32
  c.mocov3.proj_dim = 16
  c.mocov3.pred_hidden_dim = 32
  return c


def vit_config():
  c = mocov3_config()
  c.model.name = "vit"
  c.model.variant = "custom"
  c.model.hidden_size = 16
  c.model.num_layers = 1
  c.model.num_heads = 2
  c.model.patch_size = 4
  c.model.posemb = "sincos2d"
  c.mocov3.freeze_patch_embed = True
  c.optimizer.name = "adamw"
  c.optimizer.base_lr = 1e-2
  c.optimizer.weight_decay = 0.1
  return c


def ctr_numpy(q, k, tau):
  """MoCo v3 alg. 1: ctr(q, k) = CrossEntropy(q k^T / tau, labels = arange(N)) * 2 tau."""
  q = np.asarray(q, np.float64)
  k = np.asarray(k, np.float64)
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  k = k / np.linalg.norm(k, axis=1, keepdims=True)
  total = 0.0
  for i in range(q.shape[0]):
    logits = q[i] @ k.T / tau
    total += -np.log(np.exp(logits[i]) / np.sum(np.exp(logits)))
  return 2 * tau * total / q.shape[0]


def test_loss_matches_paper_formula_on_hand_made_batch():
  q1 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
  q2 = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, -1.0], [2.0, 0.0, 1.0]])
  k1 = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 3.0], [-1.0, 1.0, 0.0]])
  k2 = np.array([[0.9, 0.0, 0.1], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  loss, metrics = mocov3_loss(*(jnp.asarray(x) for x in (q1, q2, k1, k2)), 0.2)
  expected = ctr_numpy(q1, k2, 0.2) + ctr_numpy(q2, k1, 0.2)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  # Accuracy by hand: q1 rows pick k2 rows 0, 1, 2 (all right); q2 row 0 = [.5,.5,0] is
  # closest to k1 row 0, row 1 = [0,1,-1] to k1 row 2 ([-1,1,0]: cos .5 vs -.71), row 2 to k1
  # row 0: 1 of 3 right. Mean over both directions: (3 + 1) / 6.
  np.testing.assert_allclose(float(metrics["contrastive_acc"]), 4 / 6, rtol=1e-6)
  # By hand: with all keys equal, every logit of a row is the same, so ctr = 2 tau log N.
  flat, _ = mocov3_contrastive_loss(jnp.asarray(q1), 3 * jnp.ones((3, 3)), 0.2)
  np.testing.assert_allclose(float(flat), 2 * 0.2 * np.log(3), rtol=1e-6)


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(1)
  arrays = [jnp.asarray(rng.normal(size=(32, 16)), jnp.float32) for _ in range(4)]
  loss, grads = check_loss_eight_devices_equal_one(
    lambda *a, axis_name: mocov3_loss(*a, 0.2, axis_name=axis_name)[0], arrays, devices
  )
  q1, q2, k1, k2 = arrays
  np.testing.assert_allclose(loss, ctr_numpy(q1, k2, 0.2) + ctr_numpy(q2, k1, 0.2), rtol=1e-5)
  # Queries get gradients; keys (momentum encoder outputs) exactly none.
  assert np.abs(grads[0]).max() > 0 and np.abs(grads[1]).max() > 0
  assert not np.any(grads[2]) and not np.any(grads[3])


def test_per_device_logits_are_local_by_global(devices):
  """Negatives are the keys of the GLOBAL batch: each device builds [b, B] logits."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  fn = sharding.shard_over_batch(
    lambda q, k, axis_name: mocov3_contrastive_loss(q, k, 0.2, axis_name=axis_name)[0], mesh, 2
  )
  shapes, prims = jaxpr_shapes_and_primitives(fn, jnp.zeros((64, 8)), jnp.zeros((64, 8)))
  assert (8, 64) in shapes and (64, 64) not in shapes
  assert "all_gather" in prims


def _setup(config, devices):
  s = setup_lib.build(config, devices=devices)
  return s, setup_lib.init_state(s)


@pytest.mark.slow
def test_momentum_encoder_gets_no_gradient(devices):
  s, state = _setup(mocov3_config(), devices[:1])
  batch = sharding.make_global_batch(s.mesh, random_batches(1)[0])
  moved = jax.tree.map(lambda x: x * 1.1 + 0.01, state.method_state)
  loss = lambda params, ms: s.method.loss(params, state.batch_stats, ms, batch, None)[0]
  g_params, g_momentum = jax.jit(jax.grad(loss, argnums=(0, 1)))(state.params, moved)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(g_momentum))
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g_params)) > 0
  l_moved = float(jax.jit(loss)(state.params, moved))
  l_same = float(jax.jit(loss)(state.params, state.method_state))
  assert abs(l_moved - l_same) > 1e-4
  # The momentum encoder has no predictor; the projector ends in an affine-free BN (MoCo v3).
  assert set(state.method_state["teacher"]["params"]) == {"backbone", "projector"}
  assert "out_bn" in state.batch_stats["projector"]
  assert "out_bn" not in state.params["projector"]


def test_momentum_schedule_is_cosine_to_one(devices):
  c = mocov3_config()
  c.total_steps = 10
  method = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))
  got = np.array([float(method.momentum(k)) for k in range(11)])
  # The reference's adjust_moco_momentum: 1 - 0.5 (1 + cos(pi k / K)) (1 - m).
  expected = 1 - 0.5 * (1 + np.cos(np.pi * np.arange(11) / 10)) * (1 - 0.99)
  np.testing.assert_allclose(got, expected, rtol=1e-7)
  assert got[-1] == 1.0


@pytest.mark.slow
def test_train_step_eight_devices_equal_one_device(devices):
  c = mocov3_config()
  batches = random_batches(2)
  init, s1, m1 = run_steps(c, devices[:1], batches)
  _, s8, m8 = run_steps(c, devices, batches)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
  assert_trees_close(s8.params, s1.params)
  assert_trees_close(s8.batch_stats, s1.batch_stats)
  assert_trees_close(s8.method_state, s1.method_state)
  assert max_abs_change(s1.params, init.params) > 1e-4
  # One trainer step later the momentum encoder is m k_0 + (1 - m) q_1, in numbers.
  _, one, _ = run_steps(c, devices[:1], batches[:1])
  m = 1 - 0.5 * (1 + np.cos(np.pi * 1 / c.total_steps)) * (1 - c.mocov3.momentum)
  for name in ("backbone", "projector"):
    jax.tree.map(
      lambda k0, q1, k1: np.testing.assert_allclose(
        k1,
        m * np.asarray(k0, np.float64) + (1 - m) * np.asarray(q1, np.float64),
        rtol=1e-6,
        atol=1e-7,
      ),
      init.method_state["teacher"]["params"][name],
      one.params[name],
      one.method_state["teacher"]["params"][name],
    )


@pytest.mark.slow
def test_frozen_patch_projection_stays_at_random_init_with_vit(devices):
  c = vit_config()
  init, state, metrics = run_steps(c, devices[:1], random_batches(3))
  embed0, embed3 = init.params["backbone"]["patch_embed"], state.params["backbone"]["patch_embed"]
  assert max_abs_change(embed3, embed0) == 0.0  # no step, no weight decay
  rest = {k: v for k, v in state.params["backbone"].items() if k != "patch_embed"}
  rest0 = {k: v for k, v in init.params["backbone"].items() if k != "patch_embed"}
  assert max_abs_change(rest, rest0) > 1e-4
  assert np.isfinite(metrics["loss"])
  # Without the option it trains (so the test above can fail).
  c.mocov3.freeze_patch_embed = False
  init, state, _ = run_steps(c, devices[:1], random_batches(1))
  assert (
    max_abs_change(state.params["backbone"]["patch_embed"], init.params["backbone"]["patch_embed"])
    > 0
  )


def test_freezing_patch_projection_of_a_resnet_is_a_clear_error(devices):
  c = mocov3_config()
  c.mocov3.freeze_patch_embed = True
  with pytest.raises(ValueError, match="freeze_patch_embed=False"):
    _setup(c, devices[:1])


def test_bad_values_name_the_fix(devices):
  c = mocov3_config()
  c.mocov3.temperature = 0.0
  with pytest.raises(ValueError, match="temperature=0.0"):
    setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))


def test_tpu_config_builds_vit_s_with_the_papers_heads(devices):
  """configs/mocov3_vits_tpu.py: ViT-S/16 + 4096-wide heads, shapes only (jax.eval_shape)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(
    "cfg",
    os.path.join(REPO, "configs", "mocov3_vits_tpu.py"),
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert (c.batch_size, c.total_epochs, c.optimizer.base_lr, c.mocov3.momentum) == (
    4096,
    300,
    1.5e-4,
    0.99,
  )
  method = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))
  net = method.network()
  shapes = jax.eval_shape(
    lambda: net.init(jax.random.key(0), *method.init_inputs(224, 3), train=False)
  )
  params = shapes["params"]
  assert params["backbone"]["patch_embed"]["kernel"].shape == (16, 16, 3, 384)
  # moco-v3 vits.py vit_small: 12 heads of 32 (DINO's ViT-S, our VARIANTS["S"]: 6 of 64).
  blocks = params["backbone"]["encoder"]
  assert len(blocks) == 12
  assert blocks["block0"]["attn"]["query"]["kernel"].shape == (384, 12, 32)
  assert params["projector"]["dense0"]["kernel"].shape == (384, 4096)
  assert params["projector"]["out"]["kernel"].shape == (4096, 256)
  assert params["predictor"]["out"]["kernel"].shape == (4096, 256)
  # MoCo_ViT: both heads end in a bias-free Linear + BatchNorm1d(affine=False); tau 0.2.
  for head in ("projector", "predictor"):
    assert "bias" not in params[head]["out"] and "out_bn" not in params[head]
    assert "out_bn" in shapes["batch_stats"][head]
  assert method.temperature == 0.2


def test_temperature_follows_the_reference_per_backbone(devices, monkeypatch):
  """main_moco.py: --moco-t defaults to 1.0 (every ResNet recipe of CONFIG.md); the ViT
  recipes pass --moco-t=.2. An explicit config value wins; the loss gets the resolved one."""
  mesh = sharding.make_mesh({"data": -1}, devices[:1])
  build = lambda c: setup_lib.build_method(c, mesh)
  assert mocov3_config().mocov3.temperature is None
  assert build(mocov3_config()).temperature == 1.0
  assert build(vit_config()).temperature == 0.2
  c = mocov3_config()
  c.mocov3.temperature = 0.5
  assert build(c).temperature == 0.5
  c = mocov3_config()
  c.mocov3.heads = "vit"  # MoCo_ViT's heads and temperature on a ResNet
  assert build(c).temperature == 0.2
  c.mocov3.heads = "convnext"
  with pytest.raises(ValueError, match="heads='convnext'"):
    build(c)

  import sslax.methods.mocov3 as mocov3_module

  seen = []

  def recording_loss(q1, q2, k1, k2, temperature, *, axis_name=None):
    seen.append(temperature)
    return mocov3_loss(q1, q2, k1, k2, temperature, axis_name=axis_name)

  monkeypatch.setattr(mocov3_module, "mocov3_loss", recording_loss)
  c = mocov3_config()
  method = build(c)
  net, key = method.network(), jax.random.key(0)
  variables = jax.eval_shape(lambda: net.init(key, *method.init_inputs(16, 3), train=False))
  method_state = jax.eval_shape(lambda v: method.init_state(key, v), variables)
  view = jax.ShapeDtypeStruct((c.batch_size, 16, 16, 3), jnp.float32)
  jax.eval_shape(  # shapes only: traces the loss without compiling it
    lambda v, ms, batch: method.loss(v["params"], v["batch_stats"], ms, batch, None),
    variables,
    method_state,
    {"views": (view, view)},
  )
  assert seen == [1.0]
