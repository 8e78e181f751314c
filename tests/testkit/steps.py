"""Helpers shared by the BYOL, SimSiam, Barlow Twins and VICReg tests."""

import jax
import numpy as np

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import sharding, train

# Small heads so a whole train step compiles in seconds on CPU.
TINY_HEADS = {
  "byol": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32),
  "simsiam": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=8),
  "barlow_twins": dict(proj_hidden_dim=32, proj_dim=16),
  "vicreg": dict(proj_hidden_dim=32, proj_dim=16),
}


def tiny_method_config(method: str):
  c = tiny_config(method)
  for key, value in TINY_HEADS[method].items():
    c[method][key] = value
  return c


def random_batches(num: int, batch: int = 16, size: int = 16, seed: int = 0):
  """Batches of two [batch, size, size, 3] views in [0, 1].

  Each image has its own colour plus a little noise: pure i.i.d. noise images all pool to
  nearly the same backbone features, which BatchNorm then divides by ~sqrt(eps).
  """
  rng = np.random.default_rng(seed)

  def view():
    colour = rng.uniform(0.1, 0.7, size=(batch, 1, 1, 3))
    return (colour + 0.3 * rng.uniform(size=(batch, size, size, 3))).astype(np.float32)

  return [{"views": (view(), view()), "label": np.zeros(batch, np.int32)} for _ in range(num)]


def run_steps(config, devices, batches):
  """Inits and takes one train step per batch on a mesh over `devices`.

  -> (initial state, final state, metrics of the last step), all on the host.
  """
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  initial = jax.device_get(state)
  step = train.make_train_step(s)
  for b in batches:
    state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
  return initial, jax.device_get(state), jax.device_get(metrics)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def max_abs_change(a, b) -> float:
  return max(
    float(np.abs(np.asarray(x) - np.asarray(y)).max())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def check_train_step_eight_equal_one(method: str, devices, num_steps: int = 2):
  """A whole train step on 8 devices == on 1 (loss, params, BN stats, method state)."""
  config = tiny_method_config(method)
  batches = random_batches(num_steps)
  init1, s1, m1 = run_steps(config, devices[:1], batches)
  _, s8, m8 = run_steps(config, devices, batches)
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
  assert_trees_close(s8.batch_stats, s1.batch_stats)
  assert_trees_close(s8.params, s1.params)
  assert_trees_close(s8.method_state, s1.method_state)
  assert max_abs_change(s1.params, init1.params) > 1e-4  # the steps did something
  return init1, s1, m1


def sharded_value_and_grad(loss_fn, num_args: int, devices, arrays):
  """value_and_grad of loss_fn(*local, axis_name) under shard_map on a mesh over `devices`."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  fn = sharding.shard_over_batch(
    lambda *a, axis_name: loss_fn(*a, axis_name=axis_name), mesh, num_args
  )
  put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
  loss, grads = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(num_args))))(
    *[put(x) for x in arrays]
  )
  return np.asarray(loss), [np.asarray(g) for g in grads]


def check_loss_eight_devices_equal_one(loss_fn, arrays, devices, rtol=1e-5, atol=1e-7):
  """Loss and grads of loss_fn(*arrays, axis_name=...) on 8 devices == 1 device == unsharded.

  loss_fn returns a scalar. Returns (loss, grads) of the single-device run.
  """
  l1, g1 = sharded_value_and_grad(loss_fn, len(arrays), devices[:1], arrays)
  l8, g8 = sharded_value_and_grad(loss_fn, len(arrays), devices, arrays)
  np.testing.assert_allclose(l8, l1, rtol=rtol)
  for a, b in zip(g8, g1):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
  # And both are the plain single-device math (no 1/num_devices scaling of gradients).
  plain_loss, plain_grads = jax.value_and_grad(
    lambda *a: loss_fn(*a, axis_name=None), argnums=tuple(range(len(arrays)))
  )(*arrays)
  np.testing.assert_allclose(l8, np.asarray(plain_loss), rtol=rtol)
  for a, b in zip(g8, plain_grads):
    np.testing.assert_allclose(a, np.asarray(b), rtol=rtol, atol=atol)
  return l1, g1


def jaxpr_shapes_and_primitives(fn, *args):
  """All output shapes and primitive names in fn's jaxpr, nested jaxprs (shard_map) included."""
  shapes, prims = set(), set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      prims.add(eqn.primitive.name)
      shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
      for sub in eqn.params.values():
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          walk(inner)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return shapes, prims
