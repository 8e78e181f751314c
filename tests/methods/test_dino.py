"""DINO: the loss vs the paper's formula in NumPy, 8 devices == 1 (loss, grads, center, whole
train step), no gradient to the teacher, the temperature / momentum / weight-decay schedules,
the head, and the last layer frozen for the first epoch."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit import REPO
from testkit.configs import tiny_config
from testkit.steps import assert_trees_close, check_loss_eight_devices_equal_one, max_abs_change
from sslax import setup as setup_lib
from sslax import sharding, train
from sslax.losses.dino import dino_loss, teacher_temperature, update_center
from sslax.models.dino_head import DINOHead


def dino_config():
  c = tiny_config("dino")  # 64 fake examples, batch 16: 4 steps per epoch
  c.dino.out_dim = 32
  c.dino.hidden_dim = 32
  c.dino.bottleneck_dim = 16
  c.dino.num_local_crops = 2
  c.dino.local_crop_size = 8
  c.dino.warmup_teacher_temp_epochs = 2
  c.dino.freeze_last_layer_epochs = 1.0
  c.optimizer.name = "adamw"
  c.optimizer.base_lr = 1e-3
  c.optimizer.weight_decay = 0.04
  return c


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def dino_numpy(student, teacher, center, student_temp, teacher_temp):
  """DINO eq. (3) / the reference's DINOLoss: average over pairs of different crops (teacher
  crop t in the global crops, student crop v != t) of the batch mean of -P_t . log P_s."""
  student, teacher = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
  p_teacher = _softmax((teacher - np.asarray(center, np.float64)) / teacher_temp)
  log_p_student = np.log(_softmax(student / student_temp))
  total, pairs = 0.0, 0
  for t in range(teacher.shape[1]):
    for v in range(student.shape[1]):
      if v == t:
        continue
      total += np.mean(-np.sum(p_teacher[:, t] * log_p_student[:, v], axis=-1))
      pairs += 1
  return total / pairs


def test_loss_matches_paper_formula_on_hand_made_batch():
  # 2 images, 2 global crops + 1 local crop, K = 3 prototypes.
  student = np.array(
    [
      [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.2, 0.2, 0.1]],
      [[0.0, 0.0, 1.0], [0.3, 0.0, 0.0], [0.0, 1.0, 0.0]],
    ]
  )
  teacher = np.array([[[0.1, 0.0, 0.0], [0.0, 0.05, 0.0]], [[0.0, 0.0, 0.1], [0.02, 0.0, 0.0]]])
  center = np.array([0.01, -0.02, 0.0])
  loss, metrics = dino_loss(
    jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(center), 0.1, 0.04
  )
  np.testing.assert_allclose(
    float(loss), dino_numpy(student, teacher, center, 0.1, 0.04), rtol=1e-5
  )
  # By hand: a uniform student (all logits equal) costs exactly log K, whatever the teacher.
  uniform, _ = dino_loss(jnp.zeros((2, 3, 3)), jnp.asarray(teacher), jnp.asarray(center), 0.1, 0.04)
  np.testing.assert_allclose(float(uniform), np.log(3), rtol=1e-6)
  # A teacher that is uniform after centering has entropy log K; batch entropy of its mean too.
  flat = np.zeros((2, 2, 3)) + center
  _, flat_metrics = dino_loss(
    jnp.asarray(student), jnp.asarray(flat), jnp.asarray(center), 0.1, 0.04
  )
  np.testing.assert_allclose(float(flat_metrics["teacher_entropy"]), np.log(3), rtol=1e-5)
  np.testing.assert_allclose(float(flat_metrics["teacher_batch_entropy"]), np.log(3), rtol=1e-5)
  p = _softmax((teacher - center) / 0.04)
  expected_entropy = np.mean(-np.sum(p * np.log(p), axis=-1))
  np.testing.assert_allclose(float(metrics["teacher_entropy"]), expected_entropy, rtol=1e-5)


def test_same_crop_pairs_are_skipped():
  """Changing student crop 0 only changes the loss through the pair (teacher crop 1, crop 0)."""
  rng = np.random.default_rng(0)
  student = rng.normal(size=(4, 3, 5))
  teacher = rng.normal(size=(4, 2, 5))
  teacher[:, 1] = -50.0  # teacher crop 1 puts all mass on prototype 0 ...
  teacher[:, 1, 0] = 50.0
  moved = student.copy()
  moved[:, 0, 1:] += 3.0  # ... so crop 0's other logits only matter via t=0
  zero = np.zeros(5)
  a = float(dino_loss(jnp.asarray(student), jnp.asarray(teacher), zero, 0.1, 0.04)[0])
  b = float(dino_loss(jnp.asarray(moved), jnp.asarray(teacher), zero, 0.1, 0.04)[0])
  np.testing.assert_allclose(
    [a, b],
    [dino_numpy(student, teacher, zero, 0.1, 0.04), dino_numpy(moved, teacher, zero, 0.1, 0.04)],
    rtol=1e-5,
  )
  assert a != b


def test_eight_devices_equal_one_device_loss_grads_and_center(devices):
  rng = np.random.default_rng(1)
  student = jnp.asarray(rng.normal(size=(32, 4, 16)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(32, 2, 16)), jnp.float32)
  center = jnp.asarray(rng.normal(size=(16,)) * 0.1, jnp.float32)
  loss, grads = check_loss_eight_devices_equal_one(
    lambda s, t, axis_name: dino_loss(s, t, center, 0.1, 0.05, axis_name=axis_name)[0],
    [student, teacher],
    devices,
  )
  np.testing.assert_allclose(loss, dino_numpy(student, teacher, center, 0.1, 0.05), rtol=1e-5)
  assert np.abs(grads[0]).max() > 0
  assert not np.any(grads[1])  # no gradient into the teacher's outputs

  expected = 0.9 * np.asarray(center, np.float64) + 0.1 * np.asarray(teacher).mean(axis=(0, 1))
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    fn = jax.jit(
      jax.shard_map(
        lambda t, c: update_center(c, t, 0.9, axis_name=sharding.BATCH_AXES),
        mesh=mesh,
        in_specs=(jax.P(sharding.BATCH_AXES), jax.P()),
        out_specs=jax.P(),
      )
    )
    got = fn(jax.device_put(teacher, sharding.batch_sharding(mesh)), center)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)
  metrics8 = None
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    m = jax.jit(
      sharding.shard_over_batch(
        lambda s, t, axis_name: dino_loss(s, t, center, 0.1, 0.05, axis_name=axis_name)[1], mesh, 2
      )
    )(student, teacher)
    if metrics8 is not None:
      for k in m:
        np.testing.assert_allclose(float(m[k]), float(metrics8[k]), rtol=1e-5)
    metrics8 = m


def test_teacher_temperature_schedule_is_the_reference_linspace():
  warmup, final, epochs = 0.04, 0.07, 30
  reference = np.concatenate([np.linspace(warmup, final, epochs), np.full(70, final)])
  got = [float(teacher_temperature(e, warmup, final, epochs)) for e in range(100)]
  np.testing.assert_allclose(got, reference, rtol=1e-6)
  assert got[0] == pytest.approx(0.04) and got[29] == pytest.approx(0.07)
  assert float(teacher_temperature(5, warmup, final, 0)) == pytest.approx(final)


def _method(config, devices):
  return setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices))


def test_method_schedules_use_epochs_and_steps(devices):
  c = dino_config()  # 4 steps per epoch, 2 warmup epochs
  c.total_steps = 12
  method = _method(c, devices[:1])
  temps = [float(method.teacher_temperature(jnp.asarray(k))) for k in range(12)]
  np.testing.assert_allclose(temps, [0.04] * 4 + [0.07] * 8, rtol=1e-6)
  # Teacher momentum for the update after the step with 0-based index k: the reference's
  # cosine_scheduler(0.996, 1, epochs, niter)[k].
  k = np.arange(12)
  expected = 1 + 0.5 * (0.996 - 1) * (1 + np.cos(np.pi * k / 12))
  np.testing.assert_allclose([float(method.momentum(i)) for i in k], expected, rtol=1e-7)


def test_head_is_normalised_bottleneck_times_unit_prototypes():
  head = DINOHead(out_dim=7, hidden_dim=12, bottleneck_dim=5, num_layers=3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
  variables = head.init(jax.random.key(0), x)
  p = jax.tree.map(np.asarray, variables["params"])
  assert set(p) == {"dense0", "dense1", "bottleneck", "last_layer"}
  assert "bias" not in p["last_layer"]
  gelu = lambda v: np.asarray(jax.nn.gelu(jnp.asarray(v), approximate=False))
  h = gelu(np.asarray(x) @ p["dense0"]["kernel"] + p["dense0"]["bias"])
  h = gelu(h @ p["dense1"]["kernel"] + p["dense1"]["bias"])
  h = h @ p["bottleneck"]["kernel"] + p["bottleneck"]["bias"]
  h /= np.linalg.norm(h, axis=1, keepdims=True)
  w = p["last_layer"]["kernel"] / np.linalg.norm(p["last_layer"]["kernel"], axis=0, keepdims=True)
  out = np.asarray(head.apply(variables, x))
  np.testing.assert_allclose(out, h @ w, rtol=1e-4, atol=1e-6)
  assert np.abs(out).max() <= 1 + 1e-5  # cosines of unit vectors
  # The gain is fixed to 1: scaling the stored direction changes nothing.
  scaled = jax.tree.map(lambda a: a, variables)
  scaled["params"]["last_layer"]["kernel"] = 5.0 * variables["params"]["last_layer"]["kernel"]
  np.testing.assert_allclose(np.asarray(head.apply(scaled, x)), out, rtol=1e-5, atol=1e-6)


def test_views_are_two_global_then_local_crops(devices):
  views = _method(dino_config(), devices[:1]).views()
  assert [(v.size, v.crop_scale) for v in views] == [(16, (0.4, 1.0))] * 2 + [(8, (0.05, 0.4))] * 2
  assert [(v.blur_prob, v.solarize_prob) for v in views] == [
    (1.0, 0.0),
    (0.1, 0.2),
    (0.5, 0.0),
    (0.5, 0.0),
  ]


def test_bad_config_values_name_the_fix(devices):
  c = dino_config()
  c.dino.local_crop_scale = (0.5, 0.1)
  with pytest.raises(ValueError, match="local_crop_scale"):
    _method(c, devices[:1])
  c = dino_config()
  c.dino.teacher_temp = 0.0
  with pytest.raises(ValueError, match="teacher_temp=0.0"):
    _method(c, devices[:1])
  c = dino_config()
  c.dino.weight_decay_end = 0.4
  c.optimizer.name = "lars"
  with pytest.raises(ValueError, match="optimizer.name=adamw"):
    _method(c, devices[:1])


def _batches(config, num, seed=0):
  """Batches of 2 global + local crops in [0, 1]; each image has its own colour plus noise."""
  rng = np.random.default_rng(seed)
  sizes = [config.dataset.image_size] * 2 + [
    config.dino.local_crop_size
  ] * config.dino.num_local_crops
  out = []
  for _ in range(num):
    colour = rng.uniform(0.1, 0.7, size=(config.batch_size, 1, 1, 3))
    views = tuple(
      (colour + 0.3 * rng.uniform(size=(config.batch_size, s, s, 3))).astype(np.float32)
      for s in sizes
    )
    out.append({"views": views, "label": np.zeros(config.batch_size, np.int32)})
  return out


def _run(config, devices, batches):
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  initial = jax.device_get(state)
  step = train.make_train_step(s)
  states = []
  for b in batches:
    state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
    states.append(jax.device_get(state))
  return initial, states, jax.device_get(metrics)


@pytest.mark.slow
def test_teacher_gets_no_gradient(devices):
  c = dino_config()
  s = setup_lib.build(c, devices=devices[:1])
  state = setup_lib.init_state(s)
  batch = sharding.make_global_batch(s.mesh, _batches(c, 1)[0])
  # Move the teacher away from the student so the test is not at a symmetric point.
  moved = dict(
    state.method_state,
    teacher=jax.tree.map(lambda x: x * 1.1 + 0.01, state.method_state["teacher"]),
  )
  loss = lambda params, teacher, center: s.method.loss(
    params, state.batch_stats, dict(state.method_state, teacher=teacher, center=center), batch, None
  )[0]
  center = state.method_state["center"] + 0.1
  g_params, g_teacher, g_center = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
    state.params, moved["teacher"], center
  )
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves((g_teacher, g_center)))
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g_params)) > 0
  # The teacher does change the loss (zero gradient is the stop-gradient, not a no-op).
  l_moved, l_same = (
    float(jax.jit(loss)(state.params, moved["teacher"], center)),
    float(jax.jit(loss)(state.params, state.method_state["teacher"], center)),
  )
  assert abs(l_moved - l_same) > 1e-4


@pytest.mark.slow
def test_last_layer_frozen_for_the_first_epoch_then_trained(devices):
  c = dino_config()  # 4 steps per epoch, freeze 1 epoch
  c.total_steps = 6
  initial, states, _ = _run(c, devices[:1], _batches(c, 6))
  last = lambda st: st.params["head"]["last_layer"]
  for k in range(4):  # after steps 1..4: untouched, while the rest trains
    assert max_abs_change(last(states[k]), last(initial)) == 0.0
    assert max_abs_change(states[k].params["backbone"], initial.params["backbone"]) > 0
  assert max_abs_change(last(states[4]), last(states[3])) > 0  # step 5: trained
  assert max_abs_change(last(states[5]), last(states[4])) > 0


@pytest.mark.slow
def test_train_step_eight_devices_equal_one_device(devices):
  c = dino_config()
  c.dino.freeze_last_layer_epochs = 0.0
  batches = _batches(c, 2)
  init, s1, m1 = _run(c, devices[:1], batches)
  _, s8, m8 = _run(c, devices, batches)
  s1, s8 = s1[-1], s8[-1]
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
  assert_trees_close(s8.params, s1.params)
  assert_trees_close(s8.batch_stats, s1.batch_stats)
  assert_trees_close(s8.method_state, s1.method_state)
  assert max_abs_change(s1.params, init.params) > 1e-4
  assert int(s1.method_state["step"]) == 2
  # The center moved toward the teacher outputs; the teacher lags the student.
  assert np.abs(s1.method_state["center"]).max() > 0
  teacher_change = max_abs_change(s1.method_state["teacher"]["params"], init.params)
  assert 0 < teacher_change < max_abs_change(s1.params, init.params)


def test_weight_decay_schedule_matches_dino_cosine(devices):
  """With zero gradients AdamW's Adam term is 0, so the update is exactly -lr(t) wd(t) p."""
  c = dino_config()
  c.total_steps = 8
  c.dino.freeze_last_layer_epochs = 0.0
  c.dino.weight_decay_end = 0.4
  s = setup_lib.build(c, devices=devices[:1])
  params = {"backbone": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))}}
  opt_state = s.tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for t in range(8):
    updates, opt_state = s.tx.update(zeros, opt_state, params)
    wd = 0.4 - (0.4 - 0.04) * (np.cos(np.pi * t / 8) + 1) / 2
    np.testing.assert_allclose(
      np.asarray(updates["backbone"]["kernel"]),
      -float(s.run.lr_schedule(t)) * wd * np.ones((3, 2)),
      rtol=1e-5,
      atol=1e-9,
    )
    assert not np.any(np.asarray(updates["backbone"]["bias"]))  # biases: no decay


def test_tpu_config_builds_vit_s16_with_the_papers_head(devices):
  """configs/dino_vits16_tpu.py: ViT-S/16 + 65536 prototypes, 2 x 224 + 10 x 96 crops."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(
    "cfg",
    os.path.join(REPO, "configs", "dino_vits16_tpu.py"),
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  method = _method(c, devices[:1])
  assert [v.size for v in method.views()] == [224] * 2 + [96] * 10
  net = method.network()
  init = lambda x: net.init(jax.random.key(0), x, train=False)
  params = jax.eval_shape(init, jnp.zeros((2, 224, 224, 3)))["params"]
  assert params["head"]["last_layer"]["kernel"].shape == (256, 65536)
  assert params["head"]["dense0"]["kernel"].shape == (384, 2048)
  # The student takes the 96 px local crops (6 x 6 patches) with the same params.
  groups = (jnp.zeros((2, 2, 224, 224, 3)), jnp.zeros((2, 10, 96, 96, 3)))
  out = jax.eval_shape(lambda p, g: net.apply({"params": p}, g, train=False), params, groups)
  assert out[1].shape == (2, 12, 65536)


@pytest.mark.slow
def test_stochastic_depth_in_the_student_only_with_vit(devices):
  """ViT drop_path_rate > 0: the student's loss depends on the rng, the teacher (built without
  stochastic depth, as the reference) does not: its center update is the same for any rng."""
  c = dino_config()
  c.model.name = "vit"
  c.model.variant = "custom"
  c.model.hidden_size = 16
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.patch_size = 4
  c.model.drop_path_rate = 0.5
  s = setup_lib.build(c, devices=devices[:1])
  state = setup_lib.init_state(s)
  batch = sharding.make_global_batch(s.mesh, _batches(c, 1)[0])
  run = jax.jit(
    lambda key: s.method.loss(state.params, state.batch_stats, state.method_state, batch, key)
  )
  (loss_a, (_, _, ms_a)), (loss_b, (_, _, ms_b)) = run(jax.random.key(1)), run(jax.random.key(2))
  assert abs(float(loss_a) - float(loss_b)) > 1e-6
  np.testing.assert_array_equal(np.asarray(ms_a["center"]), np.asarray(ms_b["center"]))
