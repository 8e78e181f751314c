"""Optimizers against hand computations; schedules hit their end points."""

import importlib.util
import os

import jax
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


def _sgd_config(**kw):
  base = {"name": "sgd", "weight_decay": 0.0, "momentum": 0.0, "grad_clip_norm": 0.0}
  return ml_collections.ConfigDict({**base, **kw})


def _tree(rng, shapes):
  return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}


def test_bias_and_norm_are_biases_1d_params_and_scanned_vectors():
  """Any leaf named "bias" (the attention's [heads, head_dim] ones too), 1-D params and scalars;
  a scanned stack's layer axis is not a parameter axis."""
  params = {
    "attn": {"query": {"kernel": jnp.zeros((8, 2, 4)), "bias": jnp.zeros((2, 4))}},
    "norm": {"scale": jnp.zeros(8), "bias": jnp.zeros(8)},
    "cls_token": jnp.zeros((1, 1, 8)),
    "log_scale": jnp.zeros(()),
    "encoder": {
      "blocks": {"norm1": {"scale": jnp.zeros((3, 8))}, "fc": {"kernel": jnp.zeros((3, 8, 8))}}
    },
  }
  assert optim.is_bias_or_norm(params) == {
    "attn": {"query": {"kernel": False, "bias": True}},
    "norm": {"scale": True, "bias": True},
    "cls_token": False,
    "log_scale": True,
    "encoder": {"blocks": {"norm1": {"scale": True}, "fc": {"kernel": False}}},
  }
  assert optim.decay_mask(params)["attn"]["query"] == {"kernel": True, "bias": False}


def test_bias_lr_ratio_gives_biases_and_norms_their_own_lr():
  """Barlow Twins' two param groups under a plain schedule: weights step 0.2 g, biases and BN
  params 0.0048 g (main.py: --learning-rate-weights 0.2, --learning-rate-biases 0.0048)."""
  rng = np.random.default_rng(0)
  params = {
    "dense": _tree(rng, {"kernel": (3, 4), "bias": (4,)}),
    "bn": _tree(rng, {"scale": (4,)}),
    "attn": _tree(rng, {"bias": (2, 2)}),
  }
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  tx = optim.make_optimizer(_sgd_config(bias_lr_ratio=0.0048 / 0.2), 0.2)
  updates, _ = tx.update(grads, tx.init(params), params)
  lrs = {
    "dense": {"kernel": 0.2, "bias": 0.0048},
    "bn": {"scale": 0.0048},
    "attn": {"bias": 0.0048},
  }
  jax.tree.map(
    lambda u, g, lr: np.testing.assert_allclose(u, -lr * np.asarray(g), rtol=1e-6),
    updates,
    grads,
    lrs,
  )


def _config_file(name):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_barlow_twins_lars_matches_the_reference_loop():
  """configs/barlow_twins_tpu.py's optimizer against main.py's LARS written out in NumPy: two
  param groups (lr 0.2 and 0.0048 times the schedule), weight decay and the trust ratio on
  weights only (exclude_bias_and_norm), momentum 0.9; 3 steps at a constant schedule factor."""
  opt = _config_file("barlow_twins_tpu.py").optimizer
  factor = 2048 / 256  # main.py: lr = batch / 256 x schedule, then x 0.2 or x 0.0048 per group
  rng = np.random.default_rng(1)
  params = {
    "conv": _tree(rng, {"kernel": (2, 2, 3, 4)}),
    "bn": _tree(rng, {"scale": (4,), "bias": (4,)}),
  }
  tx = optim.make_optimizer(opt, factor * 0.2)  # the schedule gives the weights' lr
  state = tx.init(params)
  ref = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
  mu = jax.tree.map(np.zeros_like, ref)
  for _ in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for mod, name in (("conv", "kernel"), ("bn", "scale"), ("bn", "bias")):
      p, dp = ref[mod][name], np.asarray(grads[mod][name], np.float64)
      if p.ndim > 1:  # exclude_bias_and_norm: p.ndim == 1 skips both
        dp = dp + 1.5e-6 * p
        dp = dp * 0.001 * np.linalg.norm(p) / np.linalg.norm(dp)
      mu[mod][name] = 0.9 * mu[mod][name] + dp
      lr = factor * (0.2 if p.ndim > 1 else 0.0048)
      ref[mod][name] = p - lr * mu[mod][name]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), params, ref)


def test_exclude_bias_and_norm_false_decays_every_param():
  """PyTorch's plain SGD weight_decay (MoCo v2, SimSiam): biases and BN decay too."""
  params = {"k": jnp.ones((2, 2)), "b": jnp.full((2,), 2.0), "s": jnp.full((2,), 3.0)}
  grads = jax.tree.map(jnp.zeros_like, params)
  for exclude, decayed in ((True, {"k"}), (False, {"k", "b", "s"})):
    tx = optim.make_optimizer(_sgd_config(weight_decay=0.1, exclude_bias_and_norm=exclude), 1.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    for k, p in params.items():
      np.testing.assert_allclose(updates[k], -0.1 * p if k in decayed else 0 * p, rtol=1e-6)


def test_per_param_clip_matches_dinos_clip_gradients():
  """Each parameter's gradient scaled by 3 / (norm + 1e-6) where that is below 1 (DINO's
  utils.clip_gradients), written out in NumPy; a scanned stack clips each layer's slice."""
  rng = np.random.default_rng(2)
  grads = {
    "big": jnp.asarray(rng.normal(size=(5, 6)) * 4, jnp.float32),  # norm ~ 22: clipped
    "small": jnp.asarray(rng.normal(size=(3,)) * 0.1, jnp.float32),  # untouched
    "encoder": {"blocks": {"kernel": jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32)}},
  }
  grads["encoder"]["blocks"]["kernel"] = grads["encoder"]["blocks"]["kernel"].at[0].multiply(10)

  def reference(g):
    g = np.asarray(g, np.float64)
    coef = 3.0 / (np.linalg.norm(g) + 1e-6)
    return g * coef if coef < 1 else g

  stacked = np.asarray(grads["encoder"]["blocks"]["kernel"])
  expected = {
    "big": reference(grads["big"]),
    "small": reference(grads["small"]),
    "encoder": {"blocks": {"kernel": np.stack([reference(s) for s in stacked])}},
  }
  assert np.linalg.norm(expected["big"]) == pytest.approx(3.0, rel=1e-5)
  params = jax.tree.map(jnp.zeros_like, grads)
  tx = optim.make_optimizer(_sgd_config(grad_clip_norm=3.0, grad_clip_mode="per_param"), 1.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  jax.tree.map(
    lambda u, e: np.testing.assert_allclose(-np.asarray(u), e, rtol=1e-5, atol=1e-8),
    updates,
    expected,
  )
  # "global" (the default) is optax's clip_by_global_norm over the whole tree.
  tx = optim.make_optimizer(_sgd_config(grad_clip_norm=3.0), 1.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(optax.global_norm(updates)) == pytest.approx(3.0, rel=1e-5)
  with pytest.raises(ValueError, match="grad_clip_mode"):
    optim.make_optimizer(_sgd_config(grad_clip_norm=3.0, grad_clip_mode="layer"), 1.0)


def test_warmup_starts_at_warmup_start_lr():
  """SwAV: np.linspace(start_warmup=0.3, base_lr=4.8) over the warmup, then cosine to 0.0048."""
  opt = _config_file("swav_tpu.py").optimizer
  sched = optim.lr_schedule(opt, batch_size=4096, total_steps=1000, steps_per_epoch=10)
  assert float(sched(0)) == pytest.approx(0.3)
  assert float(sched(50)) == pytest.approx(0.3 + (4.8 - 0.3) / 2)
  assert float(sched(100)) == pytest.approx(4.8)
  assert float(sched(1000)) == pytest.approx(0.0048)
  # Every other recipe warms up from 0.
  assert (
    float(
      optim.lr_schedule(
        _lars_config(base_lr=0.3, lr_scaling="linear", warmup_epochs=1.0, end_lr=0.0), 256, 100, 10
      )(0)
    )
    == 0.0
  )


def test_constant_lr_group_keeps_its_lr_while_the_rest_decays():
  """optim.with_constant_lr: the selected params step at the constant lr, the rest follow the
  schedule; each group keeps its own momentum."""
  sched = optim.warmup_cosine(0.5, total_steps=4, warmup_steps=0)
  cfg = _sgd_config(momentum=0.9)
  params = {"encoder": jnp.zeros(3), "predictor": jnp.zeros(3)}
  tx = optim.with_constant_lr(
    optim.make_optimizer(cfg, sched), cfg, 0.5, lambda p: {k: k == "predictor" for k in p}
  )
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  buf = 0.0
  for step in range(4):
    updates, state = tx.update(grads, state, params)
    buf = 0.9 * buf + 1.0
    np.testing.assert_allclose(updates["predictor"], -0.5 * buf * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(
      updates["encoder"], -float(sched(step)) * buf * np.ones(3), rtol=1e-6
    )


def test_step_decay_schedule_drops_at_the_listed_epochs():
  """optimizer.lr_decay_epochs (InstDisc's and CMC's adjust_learning_rate): the peak until the
  first listed epoch, x factor at the first step of each; after a linear warmup if set."""
  opt = _lars_config(
    base_lr=0.03,
    lr_scaling="none",
    warmup_epochs=0.0,
    end_lr=0.0,
    lr_decay_epochs=(3, 5),
    lr_decay_factor=0.1,
  )
  sched = optim.lr_schedule(opt, batch_size=256, total_steps=70, steps_per_epoch=10)
  lrs = [float(sched(s)) for s in (0, 29, 30, 49, 50, 69)]
  np.testing.assert_allclose(lrs, [0.03, 0.03, 0.003, 0.003, 3e-4, 3e-4], rtol=1e-6)
  opt.warmup_epochs = 1.0
  sched = optim.lr_schedule(opt, batch_size=256, total_steps=70, steps_per_epoch=10)
  np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 30)], [0, 0.015, 0.03, 0.003])


def test_per_module_clip_clips_each_top_level_module_on_its_own():
  """DINOv2's clip_grad_norm_ per student submodule: each top-level key's global norm <= max."""
  grads = {
    "backbone": {"a": jnp.full((4,), 3.0), "b": jnp.full((2, 2), 4.0)},  # norm 10
    "head": {"c": jnp.full((3,), 0.1)},  # norm ~0.17: untouched
  }
  tx = optim.clip_per_module(2.0)
  out, _ = tx.update(grads, tx.init(grads))
  backbone_norm = np.sqrt(sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(out["backbone"])))
  np.testing.assert_allclose(backbone_norm, 2.0, rtol=1e-5)
  np.testing.assert_allclose(out["head"]["c"], grads["head"]["c"])
  np.testing.assert_allclose(
    out["backbone"]["a"] / out["backbone"]["b"][0, 0], 3.0 / 4.0, rtol=1e-6
  )


def test_scale_by_multipliers_scales_each_update():
  updates = {"x": jnp.ones((2,)), "y": jnp.ones((3,))}
  tx = optim.scale_by_multipliers(lambda u: {"x": 0.5, "y": np.float32(2.0)})
  out, _ = tx.update(updates, tx.init(updates))
  np.testing.assert_allclose(out["x"], 0.5)
  np.testing.assert_allclose(out["y"], 2.0)
