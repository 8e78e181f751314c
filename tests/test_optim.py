"""Optimizers against hand computations; schedules hit their end points."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from sslax import optim


def _lars_config(**kw):
  return ml_collections.ConfigDict(
    dict(
      name="lars", weight_decay=0.1, momentum=0.9, trust_coefficient=1e-3, grad_clip_norm=0.0, **kw
    )
  )


def test_lars_matches_hand_computation_including_excluded_params():
  lr = 0.5
  params = {
    "conv": {"kernel": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "bias": jnp.array([0.5, -0.5])},
    "bn": {"scale": jnp.array([1.0, 2.0])},
  }
  grads = [
    {
      "conv": {"kernel": jnp.array([[0.1, -0.2], [0.3, 0.4]]), "bias": jnp.array([1.0, 2.0])},
      "bn": {"scale": jnp.array([-1.0, 0.5])},
    },
    {
      "conv": {"kernel": jnp.array([[0.2, 0.0], [-0.1, 0.1]]), "bias": jnp.array([0.5, 0.5])},
      "bn": {"scale": jnp.array([0.3, 0.3])},
    },
  ]
  tx = optim.make_optimizer(_lars_config(), lr)
  opt_state = tx.init(params)

  # SimCLR's LARS by hand (numpy): 2-D weights get decay + trust ratio; 1-D params neither.
  np_params = {
    k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in params.items()
  }
  velocity = {k: {kk: np.zeros_like(vv) for kk, vv in v.items()} for k, v in np_params.items()}
  for g in grads:
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    for mod in np_params:
      for name, w in np_params[mod].items():
        gw = np.asarray(g[mod][name], np.float64)
        if w.ndim > 1:
          gw = gw + 0.1 * w
          trust = 1e-3 * np.linalg.norm(w) / np.linalg.norm(gw)
        else:
          trust = 1.0
        velocity[mod][name] = 0.9 * velocity[mod][name] + lr * trust * gw
        np_params[mod][name] = w - velocity[mod][name]
    for mod in np_params:
      for name in np_params[mod]:
        np.testing.assert_allclose(np.asarray(params[mod][name]), np_params[mod][name], rtol=1e-6)
  # The bias moved by plain momentum SGD: lr * (g1 * 0.9 + g2) + lr * g1.
  np.testing.assert_allclose(
    np.asarray(params["conv"]["bias"]),
    np.array([0.5, -0.5]) - 0.5 * (np.array([1.0, 2.0]) * 1.9 + np.array([0.5, 0.5])),
    rtol=1e-6,
  )


def test_decay_mask_excludes_vectors():
  mask = optim.decay_mask({"k": jnp.zeros((3, 3, 1, 4)), "b": jnp.zeros(4), "s": jnp.zeros(4)})
  assert mask == {"k": True, "b": False, "s": False}


def test_lr_scaling_rules():
  assert optim.scaled_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.1, 4096, "none") == 0.1
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.scaled_learning_rate(0.1, 256, "cubic")


def test_warmup_cosine_shape():
  sched = optim.warmup_cosine(1.0, total_steps=100, warmup_steps=10)
  assert float(sched(0)) == 0.0
  assert float(sched(5)) == pytest.approx(0.5)
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(55)) == pytest.approx(0.5, abs=1e-6)
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-7)


def test_ema_momentum_schedule_ends_at_one():
  sched = optim.cosine_increase(0.996, 1.0, total_steps=50)
  assert float(sched(0)) == pytest.approx(0.996)
  assert float(sched(50)) == pytest.approx(1.0)
  assert 0.996 < float(sched(25)) < 1.0


def test_unknown_optimizer_names_choices():
  cfg = _lars_config()
  cfg.name = "adam2"
  with pytest.raises(ValueError, match="sgd.*lars.*adamw"):
    optim.make_optimizer(cfg, 0.1)
