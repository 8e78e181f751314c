"""MoCo v2 as a method: whole train step 8 devices == 1, EMA key encoder, no key gradient,
shuffling BN, symmetric loss, config checks (collapse check: test_mocov2_collapse.py)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import config as config_lib, losses, optim, sharding, train

from testkit import REPO


def moco_config():
  c = tiny_config("mocov2")
  c.mocov2.queue_size = 64
  c.mocov2.proj_hidden_dim = 32
  c.mocov2.proj_dim = 16
  c.mocov2.shuffle_bn_groups = 2
  return c


def _batches(n, rng=np.random.default_rng(0)):
  return [
    {
      "views": tuple(rng.uniform(size=(16, 16, 16, 3)).astype(np.float32) for _ in range(2)),
      "label": np.zeros(16, np.int32),
    }
    for _ in range(n)
  ]


def _method(config, devices):
  return setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices))


@pytest.fixture(scope="module")
def variables(devices):
  net = _method(moco_config(), devices[:1]).network()
  return jax.jit(lambda rng: net.init(rng, jnp.zeros((2, 16, 16, 3)), train=False))(
    jax.random.key(0)
  )


@pytest.mark.slow  # test budget (2026-11-30): ~30 s idle; the queue loss 8 == 1 stays in tests/losses/test_moco_loss.py
def test_train_step_eight_devices_equal_one_device(devices):
  batches = _batches(2)
  out, init = [], None
  for devs in (devices[:1], devices):
    s = setup_lib.build(moco_config(), devices=devs)
    # One init (deterministic anyway), placed on each mesh: saves a compile.
    init = jax.device_get(setup_lib.init_state(s)) if init is None else init
    state = jax.device_put(init, s.state_sharding)
    init_queue = np.asarray(init.method_state["queue"])
    step = train.make_train_step(s)
    for b in batches:
      state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
    out.append(jax.device_get((state.params, state.batch_stats, state.method_state, metrics)))
  (p1, bs1, ms1, m1), (p8, bs8, ms8, m8) = out
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  close(m8["loss"], m1["loss"])
  jax.tree.map(close, p8, p1)
  jax.tree.map(close, bs8, bs1)
  jax.tree.map(close, ms8, ms1)  # key params, key BN statistics, queue, pointer
  # Two batches of 16 went into the 64-row queue: rows 0..31 are new, 32..63 untouched.
  assert int(ms8["queue_ptr"]) == 32
  np.testing.assert_array_equal(ms8["queue"][32:], init_queue[32:])
  assert np.abs(ms8["queue"][:32] - init_queue[:32]).min() > 0
  np.testing.assert_allclose(np.linalg.norm(ms8["queue"], axis=1), 1.0, rtol=1e-5)


def test_after_update_is_ema_with_configured_momentum(devices, variables):
  c = moco_config()
  c.mocov2.momentum = 0.99
  method = _method(c, devices[:1])
  state = method.init_state(jax.random.key(1), variables)
  params = jax.tree.map(lambda p: p + 1.0, variables["params"])  # the query moved on
  new = method.after_update(state, params, jnp.asarray(1))
  jax.tree.map(
    lambda n, e: np.testing.assert_allclose(n, e, rtol=1e-6),
    new["teacher"]["params"],
    optim.ema_update(state["teacher"]["params"], params, 0.99),
  )
  jax.tree.map(
    lambda n, t, o: np.testing.assert_allclose(
      n, 0.99 * np.asarray(t) + 0.01 * np.asarray(o), rtol=1e-5, atol=1e-7
    ),
    new["teacher"]["params"],
    state["teacher"]["params"],
    params,
  )
  for key in ("queue", "queue_ptr"):
    jax.tree.map(np.testing.assert_array_equal, new[key], state[key])
  jax.tree.map(
    np.testing.assert_array_equal, new["teacher"]["batch_stats"], state["teacher"]["batch_stats"]
  )


def test_shuffle_bn_uses_statistics_of_groups(devices, variables):
  """Queries: BN over contiguous groups of B/G; keys: over groups of a random permutation."""
  method = _method(moco_config(), devices[:1])  # shuffle_bn_groups = 2
  net = method.network()
  x = jnp.asarray(_batches(1)[0]["views"][0])
  apply = lambda rows: losses.l2_normalize(
    net.apply(variables, x[rows], train=True, mutable=["batch_stats"])[0][1]
  )
  z, _ = method.encode(variables["params"], variables["batch_stats"], x)
  np.testing.assert_allclose(
    z, jnp.concatenate([apply(np.arange(8)), apply(np.arange(8, 16))]), rtol=1e-5, atol=1e-6
  )
  rng = jax.random.key(3)
  perm = np.asarray(jax.random.permutation(rng, 16))
  expected = np.zeros((16, 16), np.float32)
  for g in range(2):
    expected[perm[8 * g : 8 * (g + 1)]] = apply(perm[8 * g : 8 * (g + 1)])
  z_keys, _ = method.encode(variables["params"], variables["batch_stats"], x, rng=rng)
  np.testing.assert_allclose(z_keys, expected, rtol=1e-5, atol=1e-6)
  # One global group is a different computation (the groups really change the statistics).
  c = moco_config()
  c.mocov2.shuffle_bn_groups = 1
  z_global, _ = _method(c, devices[:1]).encode(variables["params"], variables["batch_stats"], x)
  assert np.abs(np.asarray(z_global) - np.asarray(z)).max() > 1e-3


def test_symmetric_loss_and_no_gradient_to_the_key_encoder(devices, variables):
  """loss = (L(q1, k2) + L(q2, k1)) / 2; the key encoder's params get an exactly zero gradient."""
  c = moco_config()
  c.mocov2.symmetric = True
  method = _method(c, devices[:1])
  state = method.init_state(jax.random.key(1), variables)
  v1, v2 = (jnp.asarray(v) for v in _batches(1)[0]["views"])
  rng = jax.random.key(2)
  p, bs = variables["params"], variables["batch_stats"]

  def loss(params, key_params):
    teacher = dict(state["teacher"], params=key_params)
    loss, (_, _, new_state) = method.loss(
      params, bs, dict(state, teacher=teacher), {"views": (v1, v2)}, rng
    )
    return loss, new_state["queue"]

  (value, queue), (g_query, g_key) = jax.jit(
    jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  )(p, state["teacher"]["params"])
  assert all(not np.any(g) for g in jax.tree.leaves(g_key))
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_query)) > 1e-4

  @jax.jit
  def expected():
    rng1, rng2 = jax.random.split(rng)
    q1, bs_q = method.encode(p, bs, v1)
    q2, _ = method.encode(p, bs_q, v2)
    k2, bs_k = method.encode(
      state["teacher"]["params"], state["teacher"]["batch_stats"], v2, rng=rng2
    )
    k1, _ = method.encode(state["teacher"]["params"], bs_k, v1, rng=rng1)
    return 0.5 * (
      losses.info_nce_queue_loss(q1, k2, state["queue"], 0.2)[0]
      + losses.info_nce_queue_loss(q2, k1, state["queue"], 0.2)[0]
    ), k2

  expected_loss, k2 = expected()
  np.testing.assert_allclose(float(value), float(expected_loss), rtol=1e-5)
  np.testing.assert_allclose(queue[:16], k2, rtol=1e-5, atol=1e-6)  # view-2 keys enqueued


def test_config_checks_name_the_fix(devices):
  c = moco_config()
  c.mocov2.queue_size = 40
  with pytest.raises(ValueError, match="queue_size=40 must be a positive multiple"):
    _method(c, devices[:1])
  c = moco_config()
  c.mocov2.shuffle_bn_groups = 3
  with pytest.raises(ValueError, match="shuffle_bn_groups=3"):
    _method(c, devices[:1])


@pytest.mark.parametrize("name", ["mocov2_fashion_mnist", "mocov2_tpu"])
def test_configs_load_and_validate(name, devices):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  config_lib.check_unknown_keys(c)
  assert c.method == "mocov2" and c.mocov2.queue_size % c.batch_size == 0
  method = _method(c, devices[:1])
  assert [v.size for v in method.views()] == [c.dataset.image_size] * 2
