"""The optimizer settings of each recipe that quotes a paper's number are its reference code's.

Each assertion names the reference line it follows (issue 14's optimizer rows); the settings'
arithmetic is tested in tests/test_optim.py.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from testkit.steps import tiny_method_config

from sslax import optim, sharding
from sslax import setup as setup_lib
from sslax.models.dino_head import DINOHead

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_file(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# name -> the optimizer keys its reference sets (where sslax's default differs).
REFERENCE = {
  # main.py: LARS over [weights, biases] groups, lr 0.2 / 0.0048; exclude_bias_and_norm filters.
  "barlow_twins_tpu": {"name": "lars", "exclude_bias_and_norm": True, "bias_lr_ratio": 0.024},
  # main_moco.py: torch.optim.SGD(model.parameters(), lr, momentum, weight_decay).
  "mocov2_tpu": {"name": "sgd", "exclude_bias_and_norm": False},
  # main_simsiam.py: SGD(optim_params, weight_decay=...) over every param.
  "simsiam_tpu": {"name": "sgd", "exclude_bias_and_norm": False},
  # main_swav.py: LARC(SGD(model.parameters(), weight_decay=wd)); --start_warmup 0.3.
  "swav_tpu": {"name": "lars", "exclude_bias_and_norm": False, "warmup_start_lr": 0.3},
  # moco-v3 main_moco.py: torch.optim.AdamW(model.parameters(), lr, weight_decay=wd).
  "mocov3_vits_tpu": {"name": "adamw", "exclude_bias_and_norm": False},
  # main_dino.py: get_params_groups (no decay on biases / norms), utils.clip_gradients(3.0).
  "dino_vits16_tpu": {
    "name": "adamw",
    "exclude_bias_and_norm": True,
    "grad_clip_norm": 3.0,
    "grad_clip_mode": "per_param",
  },
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_tpu_recipe_optimizer_follows_its_reference(name):
  opt = _config_file(name).optimizer
  for key, value in REFERENCE[name].items():
    assert opt[key] == pytest.approx(value) if isinstance(value, float) else opt[key] == value, (
      name,
      key,
      opt[key],
    )


def test_method_flags_of_the_reference_recipes():
  assert _config_file("simsiam_tpu").simsiam.fix_pred_lr  # README's command: --fix-pred-lr
  # main_dino.py --norm_last_layer: "False with vit_small" (the README's ViT-S/16 recipe).
  assert not _config_file("dino_vits16_tpu").dino.norm_last_layer
  assert _config_file("dino_vit_fashion_mnist").optimizer.grad_clip_mode == "per_param"


def test_simsiam_predictor_lr_is_constant_while_the_encoder_decays(devices):
  """--fix-pred-lr: the predictor's group keeps lr = base_lr x B / 256 at every step while the
  encoder (backbone + projector) follows the cosine schedule."""
  c = tiny_method_config("simsiam")
  c.optimizer.name = "sgd"
  c.optimizer.base_lr = 0.05
  c.optimizer.momentum = 0.0
  c.optimizer.weight_decay = 0.0
  assert c.simsiam.fix_pred_lr  # the method default is the reference's recipe
  method = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))
  run = method.run
  tx = method.wrap_optimizer(optim.make_optimizer(c.optimizer, run.lr_schedule))
  shapes = jax.eval_shape(
    lambda: method.network().init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)), train=False)
  )
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["params"])
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  peak = 0.05 * c.batch_size / 256
  lrs = {"predictor": [], "projector": [], "backbone": []}
  for _ in range(run.total_steps):
    updates, state = tx.update(grads, state, params)
    for k, seen in lrs.items():
      seen.append(-float(jax.tree.leaves(updates[k])[0].reshape(-1)[0]))
  schedule = [float(run.lr_schedule(i)) for i in range(run.total_steps)]
  np.testing.assert_allclose(lrs["predictor"], [peak] * run.total_steps, rtol=1e-6)
  np.testing.assert_allclose(lrs["projector"], schedule, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(lrs["backbone"], schedule, rtol=1e-6, atol=1e-9)
  assert schedule[0] == pytest.approx(peak) and schedule[-1] < peak / 2  # it does decay


def test_dino_head_trains_the_weight_norm_gain_without_norm_last_layer():
  """norm_last_layer=False: the last layer is g V / ||V|| with a trained gain g [1, K] starting
  at 1 (the reference's weight_g, [K, 1]: 2-D, so get_params_groups decays it)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
  fixed = DINOHead(out_dim=7, hidden_dim=12, bottleneck_dim=5, num_layers=2)
  trained = DINOHead(
    out_dim=7, hidden_dim=12, bottleneck_dim=5, num_layers=2, norm_last_layer=False
  )
  v_fixed, v_trained = fixed.init(jax.random.key(0), x), trained.init(jax.random.key(0), x)
  assert "gain" not in v_fixed["params"]["last_layer"]
  gain = v_trained["params"]["last_layer"]["gain"]
  assert gain.shape == (1, 7) and np.all(np.asarray(gain) == 1.0)
  # At g = 1 both heads agree; the output scales with g, column by column.
  np.testing.assert_allclose(trained.apply(v_trained, x), fixed.apply(v_fixed, x), rtol=1e-6)
  g = jnp.arange(1.0, 8.0)[None]
  scaled = jax.tree.map(lambda a: a, v_trained)
  scaled["params"]["last_layer"]["gain"] = g
  np.testing.assert_allclose(
    trained.apply(scaled, x), fixed.apply(v_fixed, x) * np.asarray(g), rtol=1e-5, atol=1e-6
  )
  assert optim.decay_mask(v_trained["params"])["last_layer"]["gain"]
  # The gain gets a gradient.
  grad = jax.grad(lambda p: jnp.sum(trained.apply({"params": p}, x) ** 2))(v_trained["params"])
  assert float(optax.global_norm(grad["last_layer"]["gain"])) > 0
