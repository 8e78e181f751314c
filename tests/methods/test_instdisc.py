"""InstDisc as a method: sources without example indices refused, noise rows independent of
the device count, the ImageNet recipe's schedule and bank, the whole train step on 8 devices
== 1 (bank whole or split by rows), and the bank surviving a SIGTERM + restart bit for bit
(the loss and bank math against NumPy: tests/losses/test_instdisc_loss.py)."""

import importlib.util
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from testkit import REPO
from testkit.configs import tiny_config
from testkit.steps import assert_trees_close, max_abs_change

from sslax import checkpoint, sharding, train
from sslax import setup as setup_lib
from sslax.data import sources
from sslax.methods.base import EpochContext
from sslax.methods.instdisc import bank_placement, sample_noise


def instdisc_config():
  c = tiny_config("instdisc")
  c.dataset.channels = 3  # declared: the method builds without reading data
  c.instdisc.feature_dim = 16
  c.instdisc.num_negatives = 8
  return c


def _method(config, devices):
  return setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


STREAMED = sources.TFDSSource(
  name="imagenet2012",
  split="train",
  data_dir=None,
  num_examples=1000,
  num_classes=10,
  class_names=tuple("abcdefghij"),
)


def test_a_streamed_source_without_indices_is_refused(devices):
  method = _method(instdisc_config(), devices[:1])
  ctx = EpochContext(train_source=STREAMED, mesh=method.mesh, state_sharding=None)
  with pytest.raises(ValueError, match="streamed from TFDS .* index is -1"):
    method.before_epoch("state", 0, ctx)
  random_access = EpochContext(train_source=None, mesh=method.mesh, state_sharding=None)
  assert method.before_epoch("state", 0, random_access) == "state"
  with pytest.raises(ValueError, match="the batch has no 'index'"):
    method.loss({}, {}, {}, {"views": (jnp.zeros((16, 16, 16, 3)),)}, jax.random.key(0))


def test_config_checks_name_the_fix(devices):
  c = instdisc_config()
  c.instdisc.loss = "infonce"
  with pytest.raises(ValueError, match="instdisc.loss='infonce'; choose one of"):
    _method(c, devices[:1])
  c = instdisc_config()
  c.instdisc.bank_momentum = 1.0
  with pytest.raises(ValueError, match="bank_momentum=1.0 must be in"):
    _method(c, devices[:1])


def test_noise_rows_do_not_depend_on_the_device_count(devices):
  draws = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    draw = jax.jit(
      lambda rng: sample_noise(rng, 16, 32, 60), out_shardings=sharding.batch_sharding(mesh)
    )
    draws.append(np.asarray(draw(jax.random.key(3))))
  np.testing.assert_array_equal(draws[1], draws[0])
  assert draws[0].min() >= 0 and draws[0].max() < 60 and len(np.unique(draws[0])) > 40


def test_tpu_recipe_is_the_reference_code(devices):
  module = _load("instdisc_tpu")
  c = module.get_config()
  assert module.TPU_TOPOLOGY == "v5e:4x4"
  assert (c.batch_size, c.total_epochs, c.model.depth, c.dataset.name) == (
    256,
    200.0,
    50,
    "image_folder",
  )
  assert dict(c.instdisc) == dict(
    loss="nce", num_negatives=4096, temperature=0.07, bank_momentum=0.5, feature_dim=128
  )
  opt = c.optimizer
  assert (opt.name, opt.base_lr, opt.momentum, opt.weight_decay) == ("sgd", 0.03, 0.9, 1e-4)
  assert not opt.exclude_bias_and_norm
  method = _method(c, devices[:1])  # data-free: the preset declares ImageNet's size
  per_epoch = method.run.steps_per_epoch
  assert per_epoch == 1281167 // 256
  # main.py's adjust_learning_rate: 0.03 for epochs 0-119, x0.1 for 120-159, x0.01 after.
  lr = [float(method.run.lr_schedule(e * per_epoch + k)) for e, k in ((0, 0), (119, per_epoch - 1))]
  lr += [float(method.run.lr_schedule(e * per_epoch)) for e in (120, 159, 160, 199)]
  np.testing.assert_allclose(lr, [0.03, 0.03, 0.003, 0.003, 0.0003, 0.0003], rtol=1e-6)
  # One 128-d row per image, padded to a multiple of 1024: split by rows under FSDP.
  assert method.bank_shape == (1252 * 1024, 128)
  fsdp_mesh = sharding.make_mesh({"data": 2, "fsdp": 4}, devices)
  assert bank_placement(fsdp_mesh, method.bank_shape, c.model.fsdp_min_size) == (
    P("fsdp", None),
    "fsdp",
  )
  assert bank_placement(method.mesh, method.bank_shape, c.model.fsdp_min_size) == (P(), None)


def _batches():
  rng = np.random.default_rng(0)
  index = rng.permutation(64).astype(np.int32)
  out = []
  for rows in (index[:16], np.concatenate([index[8:16], index[16:24]])):  # step 2 re-reads 8 rows
    colour = rng.uniform(0.1, 0.7, size=(16, 1, 1, 3))
    views = (colour + 0.3 * rng.uniform(size=(16, 16, 16, 3))).astype(np.float32)
    out.append({"views": (views,), "label": np.zeros(16, np.int32), "index": rows})
  return out


@pytest.mark.slow
def test_train_step_eight_devices_equal_one_device(devices):
  """Two whole train steps: loss, params, BN statistics, bank and Z on 8 devices (bank whole
  on each, or split by rows over "fsdp") equal 1 device."""
  batches = _batches()
  out, init = [], None
  for devs, mesh in (
    (devices[:1], {"data": 1}),
    (devices, {"data": 8}),
    (devices, {"data": 2, "fsdp": 4}),
  ):
    c = instdisc_config()
    c.mesh = mesh
    s = setup_lib.build(c, devices=devs)
    init = jax.device_get(setup_lib.init_state(s)) if init is None else init
    state = jax.device_put(init, s.state_sharding)
    step = train.make_train_step(s)
    for b in batches:
      state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
    if mesh.get("fsdp", 1) > 1:
      assert state.method_state["bank"].sharding.spec == P("fsdp", None)
    out.append(jax.device_get((state, metrics)))
  (s1, m1) = out[0]
  for s8, m8 in out[1:]:
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    assert_trees_close(s8.params, s1.params, rtol=1e-4, atol=1e-6)
    assert_trees_close(s8.batch_stats, s1.batch_stats, rtol=1e-4, atol=1e-6)
    assert_trees_close(s8.method_state, s1.method_state, rtol=1e-5, atol=1e-6)
  assert max_abs_change(s1.params, init.params) > 1e-4
  bank, old = s1.method_state["bank"], init.method_state["bank"]
  seen = np.unique(np.concatenate([b["index"] for b in batches]))
  others = np.setdiff1d(np.arange(len(bank)), seen)
  np.testing.assert_array_equal(bank[others], old[others])
  np.testing.assert_allclose(np.linalg.norm(bank[seen], axis=1), 1.0, rtol=1e-5)
  assert np.abs(bank[seen] - old[seen]).min() > 0
  assert float(init.method_state["nce_z"]) == -1.0 and float(s1.method_state["nce_z"]) > 0


@pytest.mark.slow
def test_bank_survives_sigterm_and_restart_bit_for_bit(tmp_path, devices):
  def config():
    c = instdisc_config()
    c.total_steps = 4
    c.checkpoint_every_steps = 100  # only the SIGTERM save and the final save
    c.log_every_steps = 2
    return c

  full = train.train(config(), str(tmp_path / "full"))

  def sigterm_at_2(step):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "interrupted")
  first = train.train(config(), workdir, step_hook=sigterm_at_2)
  assert first["status"] == "preempted" and first["step"] == 2
  manager = checkpoint.make_manager(workdir, save_every_steps=1, max_to_keep=3)
  assert manager.latest_step() == 2
  saved = jax.device_get(first["state"].method_state)
  assert float(saved["nce_z"]) > 0  # Z was set on the first batch and is in the checkpoint
  second = train.train(config(), workdir)
  assert second["status"] == "done" and int(second["state"].step) == 4
  resumed, uninterrupted = (jax.device_get(r["state"].method_state) for r in (second, full))
  np.testing.assert_array_equal(resumed["bank"], uninterrupted["bank"])
  np.testing.assert_array_equal(resumed["nce_z"], uninterrupted["nce_z"])
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(second["state"].params),
    jax.device_get(full["state"].params),
  )
  assert np.abs(resumed["bank"] - saved["bank"]).max() > 0  # the last two steps wrote rows
