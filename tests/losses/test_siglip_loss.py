"""SigLIP loss: the paper's formula in NumPy, full-gather == ring-chunked == 1 device (loss, grads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sslax import sharding
from sslax.losses.siglip import INIT_BIAS, INIT_LOG_SCALE, siglip_loss


def siglip_numpy(img, txt, log_scale, bias):
  """Zhai et al. 2023, eq. (1): -1/|B| sum_i sum_j log 1 / (1 + exp(z_ij (-t x_i.y_j - b)))."""
  x = img / np.linalg.norm(img, axis=1, keepdims=True)
  y = txt / np.linalg.norm(txt, axis=1, keepdims=True)
  t = np.exp(log_scale)
  n = len(x)
  total = 0.0
  for i in range(n):
    for j in range(n):
      z = 1.0 if i == j else -1.0
      total += np.log(1.0 / (1.0 + np.exp(z * (-t * x[i] @ y[j] - bias))))
  return -total / n


def _data(n, d, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)), rng.normal(size=(n, d))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("log_scale,bias", [(INIT_LOG_SCALE, INIT_BIAS), (1.0, 0.5)])
def test_matches_paper_formula(chunked, log_scale, bias):
  img, txt = _data(5, 4)
  loss, metrics = siglip_loss(
    jnp.asarray(img, jnp.float32),
    jnp.asarray(txt, jnp.float32),
    jnp.float32(log_scale),
    jnp.float32(bias),
    chunked=chunked,
  )
  np.testing.assert_allclose(float(loss), siglip_numpy(img, txt, log_scale, bias), rtol=1e-5)
  x = img / np.linalg.norm(img, axis=1, keepdims=True)
  y = txt / np.linalg.norm(txt, axis=1, keepdims=True)
  np.testing.assert_allclose(
    float(metrics["image_to_text_acc"]), np.mean((x @ y.T).argmax(1) == np.arange(5))
  )


def test_hand_checkable_pair():
  """One pair, t = 1, b = 0, identical unit vectors: loss = log(1 + e^-1)."""
  v = jnp.asarray([[3.0, 4.0]])
  loss, _ = siglip_loss(v, v, jnp.float32(0.0), jnp.float32(0.0))
  np.testing.assert_allclose(float(loss), np.log1p(np.exp(-1.0)), rtol=1e-6)


def _sharded(mesh, chunked):
  def fn(img, txt, log_scale, bias):
    return jax.shard_map(
      lambda a, b, s, c: siglip_loss(a, b, s, c, axis_name=sharding.BATCH_AXES, chunked=chunked)[0],
      mesh=mesh,
      in_specs=(P(sharding.BATCH_AXES), P(sharding.BATCH_AXES), P(), P()),
      out_specs=P(),
    )(img, txt, log_scale, bias)

  return fn


def test_eight_devices_full_and_chunked_equal_one_device(devices):
  img, txt = (jnp.asarray(a, jnp.float32) for a in _data(32, 16, seed=1))
  params = (jnp.float32(1.5), jnp.float32(-2.0))  # not the init: both terms matter
  ref_loss, ref_grads = jax.value_and_grad(
    lambda a, b, s, c: siglip_loss(a, b, s, c)[0], argnums=(0, 1, 2, 3)
  )(img, txt, *params)
  np.testing.assert_allclose(
    float(ref_loss), siglip_numpy(np.asarray(img), np.asarray(txt), 1.5, -2.0), rtol=1e-5
  )
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
    for chunked in (False, True):
      loss, grads = jax.jit(jax.value_and_grad(_sharded(mesh, chunked), argnums=(0, 1, 2, 3)))(
        put(img), put(txt), *params
      )
      np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
      for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
