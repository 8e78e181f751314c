"""CLIP's logit scale: t' is clamped to [0, ln 100] after the optimizer step, as open_clip does
(`logit_scale.clamp_(0, math.log(100))` after `optimizer.step()`), through the trainer's
`Method.constrain_params` hook; the loss itself never clips exp(t').

The train step is `sslax.train.make_train_step` itself, on a stand-in network that holds only
the logit scale and a nested weight (the two towers would take minutes to compile here)."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from testkit.configs import tiny_config

from sslax import sharding, train
from sslax.methods.base import Method
from sslax.methods.clip import CLIP
from sslax.state import TrainState


class _ScaleOnlyCLIP(CLIP):
  """CLIP's pair loss and constrain_params on fixed embeddings taken from the batch."""

  def loss(self, params, batch_stats, method_state, batch, rng):
    image_emb, text_emb = batch["views"]
    loss, metrics = self.pair_loss(image_emb, text_emb, params, None)
    # The nested weight only checks that the other params pass through untouched.
    loss = loss + 0.0 * jnp.sum(params["tower"]["kernel"])
    return loss, (metrics, batch_stats, method_state)


class _Unclamped(_ScaleOnlyCLIP):
  constrain_params = Method.constrain_params


def _step(method_cls, log_scale, lr):
  mesh = sharding.make_mesh({"data": -1}, jax.devices()[:1])
  method = method_cls(tiny_config("clip"), types.SimpleNamespace(), mesh)
  tx = optax.sgd(lr)
  setup = types.SimpleNamespace(
    method=method,
    tx=tx,
    run=types.SimpleNamespace(lr_schedule=lambda step: lr),
    mesh=mesh,
    state_sharding=sharding.replicated(mesh),
  )
  params = {"log_scale": jnp.float32(log_scale), "tower": {"kernel": jnp.ones((2, 3))}}
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats={},
    opt_state=tx.init(params),
    method_state={},
    rng=jax.random.key_data(jax.random.key(0)),
  )
  # Identical image/text pairs, every two rows at cosine 0.95: the loss falls as the scale
  # grows (d L / d t' < 0 at every t'), so an SGD step raises t'.
  cos = 0.95
  emb = np.sqrt(cos) * np.eye(9)[0] + np.sqrt(1 - cos) * np.eye(9)[1:]  # [8, 9]
  image = text = emb.astype(np.float32)
  batch = {"views": (image, text)}
  new_state, metrics = train.make_train_step(setup)(state, batch)
  return jax.device_get(new_state), jax.device_get(metrics)


def test_step_that_pushes_log_scale_above_ln_100_leaves_exactly_ln_100():
  start = math.log(90.0)
  free, free_metrics = _step(_Unclamped, start, lr=1.0)
  # The gradient of exp(t') reaches t' at scale 90 and this step takes it past ln 100 ...
  assert float(free.params["log_scale"]) > math.log(100.0)
  np.testing.assert_allclose(float(free_metrics["logit_scale"]), 90.0, rtol=1e-6)
  # ... and CLIP clamps the parameter to ln 100, exactly (float32), after the update.
  clamped, metrics = _step(_ScaleOnlyCLIP, start, lr=1.0)
  assert clamped.params["log_scale"].dtype == np.float32
  assert clamped.params["log_scale"] == np.float32(math.log(100.0))
  np.testing.assert_array_equal(clamped.params["tower"]["kernel"], np.ones((2, 3)))
  np.testing.assert_allclose(float(metrics["loss"]), float(free_metrics["loss"]), rtol=1e-6)


def test_below_the_cap_the_step_is_untouched_and_negative_log_scale_goes_to_zero():
  free, _ = _step(_Unclamped, 2.0, lr=1.0)
  clamped, _ = _step(_ScaleOnlyCLIP, 2.0, lr=1.0)
  assert 2.0 < float(free.params["log_scale"]) < math.log(100.0)
  assert clamped.params["log_scale"] == free.params["log_scale"]
  low, _ = _step(_ScaleOnlyCLIP, -3.0, lr=1.0)
  assert low.params["log_scale"] == np.float32(0.0)  # open_clip's lower bound: scale >= 1
