"""CLIP loss: the paper's formula in NumPy (no clip in the forward pass), the parameter clamp,
full-gather == ring-chunked == 1 device (loss, grads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sslax import sharding
from sslax.losses.clip import clamp_log_scale, clip_loss


def clip_numpy(img, txt, log_scale):
  """Radford et al. 2021, fig. 3 pseudo-code, in float64 with explicit loops; the scale is
  exp(t') as open_clip's loss takes it (the cap at 100 is a clamp of t' after each step)."""
  x = img / np.linalg.norm(img, axis=1, keepdims=True)
  y = txt / np.linalg.norm(txt, axis=1, keepdims=True)
  s = np.exp(log_scale)
  n = len(x)
  total = 0.0
  for i in range(n):
    row = [s * x[i] @ y[j] for j in range(n)]  # image i against every text
    col = [s * y[i] @ x[j] for j in range(n)]  # text i against every image
    for logits in (row, col):  # -log softmax_i, shifted by the max (scale up to 1000 here)
      m = max(logits)
      total += -(logits[i] - m - np.log(np.sum(np.exp(np.subtract(logits, m)))))
  return total / (2 * n)


def _data(n=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)), rng.normal(size=(n, d))


@pytest.mark.parametrize("chunked", [False, True])
# The 2nd is above ln 100: the loss does not clip it (the parameter clamp happens after a step).
@pytest.mark.parametrize("log_scale", [np.log(1 / 0.07), np.log(1000.0)])
def test_matches_paper_formula(chunked, log_scale):
  img, txt = _data(6, 4)
  loss, metrics = clip_loss(
    jnp.asarray(img, jnp.float32),
    jnp.asarray(txt, jnp.float32),
    jnp.float32(log_scale),
    chunked=chunked,
  )
  np.testing.assert_allclose(float(loss), clip_numpy(img, txt, log_scale), rtol=1e-5)
  x = img / np.linalg.norm(img, axis=1, keepdims=True)
  y = txt / np.linalg.norm(txt, axis=1, keepdims=True)
  sim = x @ y.T
  np.testing.assert_allclose(
    float(metrics["image_to_text_acc"]), np.mean(sim.argmax(1) == np.arange(6))
  )
  np.testing.assert_allclose(
    float(metrics["text_to_image_acc"]), np.mean(sim.argmax(0) == np.arange(6))
  )
  np.testing.assert_allclose(float(metrics["logit_scale"]), np.exp(log_scale), rtol=1e-6)


@pytest.mark.parametrize("chunked", [False, True])
def test_no_clip_in_the_forward_pass_above_scale_100(chunked):
  """t' > ln 100 still gets the gradient of exp(t') (a forward clip at 100 had none): d L / d t'
  equals the central difference of the NumPy loss."""
  img, txt = _data(6, 4, seed=2)
  t = np.log(150.0)
  grad = jax.grad(lambda s: clip_loss(jnp.asarray(img), jnp.asarray(txt), s, chunked=chunked)[0])(
    jnp.float32(t)
  )
  h = 1e-4
  numeric = (clip_numpy(img, txt, t + h) - clip_numpy(img, txt, t - h)) / (2 * h)
  assert abs(numeric) > 1e-3
  np.testing.assert_allclose(float(grad), numeric, rtol=1e-3)


def test_clamp_log_scale_matches_open_clip_clamp():
  """clamp_(0, ln 100): exactly ln 100 (in float32) above, 0 below, untouched between."""
  got = clamp_log_scale(jnp.asarray([5.3, -0.2, 2.0], jnp.float32))
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(got), np.float32([np.log(100.0), 0.0, 2.0]))


def test_hand_checkable_pairs():
  """Two orthogonal pairs at scale 1: each row is log(1 + e^-1) + ... by hand."""
  img = np.array([[1.0, 0.0], [0.0, 1.0]])
  loss, _ = clip_loss(jnp.asarray(img), jnp.asarray(img), jnp.float32(0.0))
  np.testing.assert_allclose(float(loss), np.log(np.e + 1) - 1, rtol=1e-6)


def _sharded(mesh, chunked):
  def fn(img, txt, log_scale):
    return jax.shard_map(
      lambda a, b, s: clip_loss(a, b, s, axis_name=sharding.BATCH_AXES, chunked=chunked)[0],
      mesh=mesh,
      in_specs=(P(sharding.BATCH_AXES), P(sharding.BATCH_AXES), P()),
      out_specs=P(),
    )(img, txt, log_scale)

  return fn


def test_eight_devices_full_and_chunked_equal_one_device(devices):
  img, txt = (jnp.asarray(a, jnp.float32) for a in _data(32, 16, seed=1))
  log_scale = jnp.float32(np.log(1 / 0.07))
  ref_loss, ref_grads = jax.value_and_grad(
    lambda a, b, s: clip_loss(a, b, s)[0], argnums=(0, 1, 2)
  )(img, txt, log_scale)
  np.testing.assert_allclose(
    float(ref_loss), clip_numpy(np.asarray(img), np.asarray(txt), float(log_scale)), rtol=1e-5
  )
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    put = lambda x, mesh=mesh: jax.device_put(x, sharding.batch_sharding(mesh))
    for chunked in (False, True):
      loss, grads = jax.jit(jax.value_and_grad(_sharded(mesh, chunked), argnums=(0, 1, 2)))(
        put(img), put(txt), log_scale
      )
      np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
      for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_chunked_per_device_logits_are_local_by_local(devices):
  """The ring builds [b, b] blocks only: no [b, B] (full gather) or [B, B] array appears."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  z = jnp.zeros((64, 8))
  shapes = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
      for sub in eqn.params.values():
        for inner in sub if isinstance(sub, (tuple, list)) else (sub,):
          inner = getattr(inner, "jaxpr", inner)
          if hasattr(inner, "eqns"):
            walk(inner)

  grad = jax.grad(_sharded(mesh, True), argnums=(0, 1, 2))
  walk(jax.make_jaxpr(grad)(z, z, jnp.float32(1.0)).jaxpr)
  assert (8, 8) in shapes
  assert not {(8, 64), (64, 64)} & shapes
  shapes.clear()
  walk(
    jax.make_jaxpr(jax.grad(_sharded(mesh, False), argnums=(0, 1, 2)))(z, z, jnp.float32(1.0)).jaxpr
  )
  assert (8, 64) in shapes  # the full-gather version does build [b, B]
