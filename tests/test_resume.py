"""Checkpoints: a SIGTERM-interrupted, resumed run equals an uninterrupted one; partial saves ignored."""

import os
import signal

import jax
import numpy as np

from sslax import checkpoint, train
from testkit.configs import tiny_config


def _config():
  c = tiny_config()
  c.total_steps = 6
  c.checkpoint_every_steps = 100  # only the SIGTERM save and the final save
  c.log_every_steps = 2
  return c


def _params(out):
  return jax.device_get(out["state"].params)


def test_sigterm_then_resume_equals_uninterrupted(tmp_path, devices):
  full = train.train(_config(), str(tmp_path / "full"))
  assert full["status"] == "done"
  assert full["train_step_compiles"] == 1  # log steps and saves cause no recompiles

  def sigterm_at_3(step):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "interrupted")
  first = train.train(_config(), workdir, step_hook=sigterm_at_3)
  assert first["status"] == "preempted" and first["step"] == 3
  manager = checkpoint.make_manager(workdir, save_every_steps=1, max_to_keep=3)
  assert manager.latest_step() == 3
  second = train.train(_config(), workdir)
  assert second["status"] == "done" and int(second["state"].step) == 6
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    _params(second),
    _params(full),
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    jax.device_get(second["state"].batch_stats),
    jax.device_get(full["state"].batch_stats),
  )
  # The SIGTERM handler was removed again.
  assert signal.getsignal(signal.SIGTERM) is not None


def test_half_written_checkpoint_is_ignored(tmp_path, devices):
  c = _config()
  c.total_steps = 3
  workdir = str(tmp_path / "w")
  train.train(c, workdir)
  # A save killed mid-write leaves orbax's temporary directory behind.
  partial = os.path.join(workdir, "checkpoints", "5.orbax-checkpoint-tmp-1234567")
  os.makedirs(os.path.join(partial, "default"))
  with open(os.path.join(partial, "default", "garbage"), "wb") as f:
    f.write(b"\x00" * 10)
  manager = checkpoint.make_manager(workdir, save_every_steps=1, max_to_keep=3)
  assert manager.latest_step() == 3
  c.total_steps = 4
  out = train.train(c, workdir)
  assert int(out["state"].step) == 4
