"""BYOL: paper formula, 8 devices == 1 (loss, grads, train step), stop-gradient, EMA schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.steps import (
  check_loss_eight_devices_equal_one,
  check_train_step_eight_equal_one,
  max_abs_change,
  random_batches,
  run_steps,
  tiny_method_config,
)
from sslax import setup as setup_lib
from sslax import losses, sharding


def byol_numpy(p1, p2, t1, t2):
  """BYOL eq. (2): L = || q/|q| - z'/|z'| ||^2, plus the symmetric L~ (views swapped)."""

  def regression(q, z):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return np.sum((q - z) ** 2, axis=1)

  p1, p2, t1, t2 = (np.asarray(x, np.float64) for x in (p1, p2, t1, t2))
  return np.mean(regression(p1, t2) + regression(p2, t1))


def test_matches_paper_formula_on_hand_made_batch():
  p1 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
  p2 = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, -1.0], [2.0, 0.0, 1.0]])
  t1 = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 3.0], [-1.0, 1.0, 0.0]])
  t2 = np.array([[0.9, 0.0, 0.1], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  loss, metrics = losses.byol_loss(*(jnp.asarray(x) for x in (p1, p2, t1, t2)))
  np.testing.assert_allclose(float(loss), byol_numpy(p1, p2, t1, t2), rtol=1e-5)
  # The symmetrised loss is the sum of both directions: 4 - 2 (cos_12 + cos_21) per example.
  np.testing.assert_allclose(float(loss), 4 - 4 * float(metrics["cosine"]), rtol=1e-5)
  # Identical directions give 0 (scale does not matter), opposite ones the maximum 8.
  zero, _ = losses.byol_loss(jnp.asarray(p1), jnp.asarray(p2), 3 * jnp.asarray(p2), jnp.asarray(p1))
  top, _ = losses.byol_loss(jnp.asarray(p1), jnp.asarray(p2), -jnp.asarray(p2), -jnp.asarray(p1))
  np.testing.assert_allclose([float(zero), float(top)], [0.0, 8.0], atol=1e-6)


def test_eight_devices_equal_one_device_loss_and_grads(devices):
  rng = np.random.default_rng(1)
  arrays = [jnp.asarray(rng.normal(size=(32, 16)), jnp.float32) for _ in range(4)]
  loss, grads = check_loss_eight_devices_equal_one(
    lambda *a, axis_name: losses.byol_loss(*a, axis_name=axis_name)[0], arrays, devices
  )
  np.testing.assert_allclose(loss, byol_numpy(*arrays), rtol=1e-5)
  # Predictions get gradients; the targets get exactly none (stop-gradient inside the loss).
  assert np.abs(grads[0]).max() > 0 and np.abs(grads[1]).max() > 0
  assert not np.any(grads[2]) and not np.any(grads[3])


def _setup(config, devices):
  s = setup_lib.build(config, devices=devices)
  return s, setup_lib.init_state(s)


@pytest.mark.slow  # test budget (2026-11-30): ~60 s; the EMA teacher's stop-gradient is also tested for DINO/MoCo
def test_target_gets_no_gradient(devices):
  """Through the whole method: d loss / d method_state (target params, BN stats) is zero."""
  s, state = _setup(tiny_method_config("byol"), devices[:1])
  batch = sharding.make_global_batch(s.mesh, random_batches(1)[0])
  # Move the target away from the online net so the test is not at a symmetric point.
  target = jax.tree.map(lambda x: x * 1.1 + 0.01, state.method_state)
  loss = lambda params, ms: s.method.loss(params, state.batch_stats, ms, batch, None)[0]
  g_params, g_target = jax.jit(jax.grad(loss, argnums=(0, 1)))(state.params, target)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(g_target))
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g_params)) > 0
  # The target does change the loss value (so zero gradient is the stop-gradient, not a no-op).
  l_moved = float(jax.jit(loss)(state.params, target))
  l_same = float(jax.jit(loss)(state.params, state.method_state))
  assert abs(l_moved - l_same) > 1e-4


def test_momentum_schedule_reaches_one_at_the_last_step(devices):
  c = tiny_method_config("byol")
  c.total_steps = 10
  method = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))
  taus = np.array([float(method.momentum(k)) for k in range(11)])
  base = c.byol.base_momentum
  expected = 1 - (1 - base) * (np.cos(np.pi * np.arange(11) / 10) + 1) / 2
  np.testing.assert_allclose(taus, expected, rtol=1e-6)
  assert taus[0] == pytest.approx(base) and taus[-1] == 1.0
  assert np.all(np.diff(taus) > 0)


def test_total_steps_match_the_trainer_for_epoch_based_runs(devices):
  c = tiny_method_config("byol")
  c.total_steps = 0
  c.total_epochs = 2.5  # 64 examples / batch 16 = 4 steps per epoch -> 10 steps
  s = setup_lib.build(c, devices=devices[:1])
  assert s.method.run.total_steps == s.run.total_steps == 10


def target_ema_reference(global_step, base_ema, max_steps):
  """byol/utils/schedules.py `target_ema`: 1 - (1 - base) * 0.5 (1 + cos(pi min(k, K) / K))."""
  k = min(global_step, max_steps)
  return 1.0 - (1.0 - base_ema) * 0.5 * (1.0 + np.cos(np.pi * k / max_steps))


def test_after_update_applies_ema_with_the_references_tau_of_the_step(devices):
  """byol_experiment.py `_update_fn(global_step=k)` (0-based) mixes the online params after
  that step's update in with tau = target_ema(k); the trainer calls after_update with the steps
  taken, k + 1. So the first update uses tau(0) = base_ema, the last tau(K - 1) < 1."""
  c = tiny_method_config("byol")  # total_steps = 4
  method = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))
  rng = np.random.default_rng(0)
  tree = lambda: {
    name: {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    for name in ("backbone", "projector", "predictor")
  }
  method_state = {"teacher": method.teacher.init({"params": tree(), "batch_stats": {}})}
  online = tree()
  for steps_taken in (1, 2, 4):
    tau = target_ema_reference(steps_taken - 1, 0.996, 4)
    new = method.after_update(method_state, online, jnp.asarray(steps_taken))
    for name in ("backbone", "projector"):
      np.testing.assert_allclose(
        new["teacher"]["params"][name]["kernel"],
        tau * np.asarray(method_state["teacher"]["params"][name]["kernel"], np.float64)
        + (1 - tau) * np.asarray(online[name]["kernel"], np.float64),
        rtol=1e-6,
        atol=1e-7,
      )
    assert tau < 1.0
  assert target_ema_reference(0, 0.996, 4) == pytest.approx(0.996)
  assert "predictor" not in new["teacher"]["params"]
  # BN statistics of the target are not averaged by after_update (see BYOL.loss).
  assert new["teacher"]["batch_stats"] is method_state["teacher"]["batch_stats"]


def test_views_are_asymmetric(devices):
  c = tiny_method_config("byol")
  v1, v2 = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1])).views()
  assert (v1.blur_prob, v1.solarize_prob, v2.blur_prob, v2.solarize_prob) == (1.0, 0.0, 0.1, 0.2)


@pytest.mark.slow  # whole train step on 8 devices vs 1; the loss-and-grads 8 == 1 test stays in the default suite
def test_train_step_eight_devices_equal_one_device(devices):
  init, state, metrics = check_train_step_eight_equal_one("byol", devices, num_steps=2)
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["loss"] <= 8
  assert (
    max_abs_change(state.method_state["teacher"]["params"]["backbone"], init.params["backbone"]) > 0
  )
  # The target lags the online network (momentum close to 1).
  assert max_abs_change(
    state.method_state["teacher"]["params"], init.method_state["teacher"]["params"]
  ) < max_abs_change(
    {k: state.params[k] for k in ("backbone", "projector")},
    {k: init.params[k] for k in ("backbone", "projector")},
  )


def test_trainer_applies_the_ema_after_each_step(devices):
  """One trainer step (global_step 0 in the reference): target_1 = tau(0) target_0 +
  (1 - tau(0)) online_1 with tau(0) = base_momentum, in numbers."""
  c = tiny_method_config("byol")
  init, state, _ = run_steps(c, devices[:1], random_batches(1))
  tau = target_ema_reference(0, c.byol.base_momentum, c.total_steps)
  assert tau == c.byol.base_momentum
  for name in ("backbone", "projector"):
    jax.tree.map(
      lambda t0, o1, t1: np.testing.assert_allclose(
        t1,
        tau * np.asarray(t0, np.float64) + (1 - tau) * np.asarray(o1, np.float64),
        rtol=1e-6,
        atol=1e-7,
      ),
      init.method_state["teacher"]["params"][name],
      state.params[name],
      state.method_state["teacher"]["params"][name],
    )
