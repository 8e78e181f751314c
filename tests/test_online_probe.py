"""The online linear probe: the method's path is bit-for-bit the same with it on or off, its
loss is the masked cross-entropy over the global batch (8 devices == 1 == NumPy), and it is
off, or a clear error, where it cannot run."""

import json
import logging
import os
import signal
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from testkit.configs import tiny_config
from testkit.steps import TINY_HEADS

from sslax import config as config_lib
from sslax import online_probe, sharding, train
from sslax import setup as setup_lib
from sslax.methods import METHODS
from sslax.methods.base import PROBE_FEATURES

NUM_STEPS = 3


def _batches(num, batch=16, size=16, num_classes=10, seed=0):
  """Two-view batches with labels in [0, num_classes), a few of them -1 (no label)."""
  rng = np.random.default_rng(seed)

  def view():
    colour = rng.uniform(0.1, 0.7, size=(batch, 1, 1, 3))
    return (colour + 0.3 * rng.uniform(size=(batch, size, size, 3))).astype(np.float32)

  out = []
  for _ in range(num):
    labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
    labels[::5] = -1
    out.append({"views": (view(), view()), "label": labels})
  return out


def _config(method, mode):
  c = tiny_config(method)
  for key, value in TINY_HEADS.get(method, {}).items():
    c[method][key] = value
  c.online_probe.mode = mode
  return c


def _run(config, devices, batches):
  s = setup_lib.build(config, devices=devices)
  state = jax.device_put(s.init_fn(jax.random.key(config.seed)), s.state_sharding)
  step = train.make_train_step(s)
  metrics = []
  for b in batches:
    state, m = step(state, sharding.make_global_batch(s.mesh, b))
    metrics.append(m)
  return s, jax.device_get(state), jax.device_get(metrics)


# One device: the "on" step is the one other tests compile (the fake source has labels, so the
# probe is on by default), a hit in the suite's compilation cache. BYOL (EMA target) is slow.
@pytest.mark.parametrize("method", ["simclr", pytest.param("byol", marks=pytest.mark.slow)])
def test_method_path_is_bit_identical_with_the_probe_on_or_off(method, devices):
  batches = _batches(NUM_STEPS)
  s_on, on, metrics_on = _run(_config(method, "on"), devices[:1], batches)
  s_off, off, metrics_off = _run(_config(method, "off"), devices[:1], batches)
  assert s_on.probe is not None and s_off.probe is None
  assert s_on.probe.num_classes == 10  # the fake source's classes, not a constant
  # Params, BN statistics, optimizer state, method state (BYOL's EMA target), the step's RNG:
  # every bit the same.
  for field in ("step", "params", "batch_stats", "opt_state", "method_state", "rng"):
    a, b = getattr(on, field), getattr(off, field)
    assert jax.tree.structure(a) == jax.tree.structure(b), field
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y, err_msg=field)
  assert off.probe == {}
  for m_on, m_off in zip(metrics_on, metrics_off):
    assert set(m_on) - set(m_off) == {online_probe.LOSS_KEY, online_probe.TOP1_KEY}
    for key in m_off:
      np.testing.assert_array_equal(m_on[key], m_off[key], err_msg=key)
    assert np.isfinite(m_on[online_probe.LOSS_KEY])
    assert 0.0 <= m_on[online_probe.TOP1_KEY] <= 1.0
  # The first step's probe sees zero weights: uniform logits, loss ln(10).
  np.testing.assert_allclose(metrics_on[0][online_probe.LOSS_KEY], np.log(10.0), rtol=1e-6)
  assert np.abs(on.probe["params"]["kernel"]).max() > 0  # and it trained


def _numpy_probe_step(kernel, bias, features, labels, lr, num_classes):
  """Masked mean cross-entropy, top-1 and one plain SGD step, in float64."""
  x = features.astype(np.float64)
  logits = x @ kernel + bias
  valid = (labels >= 0) & (labels < num_classes)
  n = valid.sum()
  logits_v, labels_v = logits[valid], labels[valid]
  shifted = logits_v - logits_v.max(axis=1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  loss = -log_p[np.arange(n), labels_v].mean()
  top1 = (logits_v.argmax(axis=1) == labels_v).mean()
  d_logits = np.exp(log_p)
  d_logits[np.arange(n), labels_v] -= 1.0
  d_logits /= n
  grad_kernel = x[valid].T @ d_logits
  grad_bias = d_logits.sum(axis=0)
  return loss, top1, kernel - lr * grad_kernel, bias - lr * grad_bias


def test_probe_step_on_eight_devices_equals_one_device_and_numpy(devices):
  num_classes, dim, lr = 5, 12, 0.5
  rng = np.random.default_rng(0)
  features = rng.normal(size=(32, dim)).astype(np.float32)
  labels = rng.integers(0, num_classes, size=32).astype(np.int32)
  labels[[0, 7, 8, 30]] = -1  # examples without a label are left out of the mean
  probe = online_probe.OnlineProbe(num_classes, dim, optax.sgd(lr))
  params = {
    "kernel": rng.normal(size=(dim, num_classes)).astype(np.float32),
    "bias": rng.normal(size=(num_classes,)).astype(np.float32),
  }
  state = {"params": params, "opt_state": probe.tx.init(params)}

  def step_on(devs):
    mesh = sharding.make_mesh({"data": -1}, devs)
    put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
    new, metrics = jax.jit(probe.update)(state, put(features), put(labels))
    return jax.device_get((new["params"], metrics))

  p1, m1 = step_on(devices[:1])
  p8, m8 = step_on(devices)
  for key in (online_probe.LOSS_KEY, online_probe.TOP1_KEY):
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p8, p1)
  loss, top1, kernel, bias = _numpy_probe_step(
    params["kernel"], params["bias"], features, labels, lr, num_classes
  )
  np.testing.assert_allclose(m8[online_probe.LOSS_KEY], loss, rtol=1e-5)
  np.testing.assert_allclose(m8[online_probe.TOP1_KEY], top1, rtol=1e-6)
  np.testing.assert_allclose(p8["kernel"], kernel, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p8["bias"], bias, rtol=1e-5, atol=1e-6)


def test_no_gradient_reaches_the_features():
  probe = online_probe.OnlineProbe(3, 4, optax.sgd(0.1))
  state = probe.init()
  labels = jnp.array([0, 1, 2, -1])

  def probe_loss(features):
    return probe.update(state, features, labels)[1][online_probe.LOSS_KEY]

  grad = jax.grad(probe_loss)(jnp.ones((4, 4)))
  np.testing.assert_array_equal(grad, np.zeros((4, 4)))


def _make(mode, method="simclr", num_classes=10, source=True):
  c = config_lib.base_config(method)
  c.online_probe.mode = mode
  src = types.SimpleNamespace(num_classes=num_classes, name="data") if source else None
  run = types.SimpleNamespace(global_batch=256, total_steps=10, epochs_to_steps=lambda e: 0)
  method_obj = types.SimpleNamespace(
    name=method, provides_probe_features=METHODS[method].provides_probe_features
  )
  return online_probe.make(c, method_obj, run, src, lambda: 8)


def test_probe_is_on_where_it_can_run_and_off_or_an_error_elsewhere():
  probe = _make("auto")
  assert probe is not None and (probe.num_classes, probe.feature_dim) == (10, 8)
  assert _make("off") is None
  # No labels (a source with at most one class), a data-free build, or a method that does not
  # hand over its features: off under "auto", a clear error under "on".
  for kwargs, words in (
    (dict(num_classes=0), "no class labels"),
    (dict(num_classes=1), "no class labels"),
    (dict(source=False), "without data"),
    (dict(method="jigsaw"), "'jigsaw' does not give its backbone features"),
  ):
    assert _make("auto", **kwargs) is None
    with pytest.raises(ValueError, match=words):
      _make("on", **kwargs)
  with pytest.raises(ValueError, match="choose one of"):
    _make("yes")


def _every_method_module():
  """tests/methods/test_every_method.py: its small setting of every method."""
  import importlib.util
  import os

  path = os.path.join(os.path.dirname(__file__), "methods", "test_every_method.py")
  spec = importlib.util.spec_from_file_location("every_method_settings", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


PROBED = sorted(name for name, cls in METHODS.items() if cls.provides_probe_features)


def test_the_methods_that_give_features_include_the_usual_ones():
  assert set(PROBED) >= {
    "simclr", "mocov2", "mocov3", "byol", "simsiam", "barlow_twins", "vicreg", "swav", "dino",
    "mae",
  }  # fmt: skip


@pytest.mark.parametrize("name", PROBED)
def test_every_method_that_gives_features_gives_the_first_views_backbone_features(
  name, tmp_path, devices
):
  """Traced, not compiled: the train step's check (`online_probe.check_features`: [B, F], F
  the backbone's output width) accepts what the method's loss returns."""
  every = _every_method_module()
  c = every._config(name, tmp_path)
  c.dataset.name, c.dataset.channels = "fake", 0  # a source with labels
  c.online_probe.mode = "on"
  s = setup_lib.build(c, devices=devices[:1])
  state = jax.eval_shape(s.init_fn, jax.random.key(0))
  batch = every._fake_batch(s.method, c, np.random.default_rng(0))
  _, metrics = train.make_train_step(s).trace(state, batch).out_info
  assert {online_probe.LOSS_KEY, online_probe.TOP1_KEY} <= set(metrics)
  assert PROBE_FEATURES not in metrics  # never logged


def _train_config(mode):
  c = tiny_config()
  c.total_steps = 4
  c.checkpoint_every_steps = 100  # only the SIGTERM save and the final save
  c.log_every_steps = 2
  c.online_probe.mode = mode
  return c


def _sigterm_at(step):
  def hook(s):
    if s == step:
      os.kill(os.getpid(), signal.SIGTERM)

  return hook


@pytest.mark.slow  # five short runs (~90 s of CPU)
def test_resume_restores_the_probe_and_restarts_it_for_a_checkpoint_without_one(
  tmp_path, devices, caplog
):
  full = train.train(_train_config("auto"), str(tmp_path / "full"))
  assert full["setup"].probe is not None
  assert 0.0 <= full["metrics"][online_probe.TOP1_KEY] <= 1.0  # logged with the others
  logged = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
  assert all(online_probe.TOP1_KEY in row for row in logged)

  # Preempted and resumed: the probe continues exactly.
  resumed = str(tmp_path / "resumed")
  assert train.train(_train_config("auto"), resumed, step_hook=_sigterm_at(2))["step"] == 2
  second = train.train(_train_config("auto"), resumed)
  for part in ("params", "probe"):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      jax.device_get(getattr(second["state"], part)),
      jax.device_get(getattr(full["state"], part)),
    )

  # A checkpoint without probe state (the probe off, or an sslax before it) resumes with the
  # probe started afresh and a warning; the method's own state is restored exactly.
  old = str(tmp_path / "old")
  assert train.train(_train_config("off"), old, step_hook=_sigterm_at(2))["step"] == 2
  with caplog.at_level(logging.WARNING):
    third = train.train(_train_config("auto"), old)
  assert "probe starts afresh" in caplog.text
  assert third["status"] == "done" and online_probe.TOP1_KEY in third["metrics"]
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    jax.device_get(third["state"].params),
    jax.device_get(full["state"].params),
  )
