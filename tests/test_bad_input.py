"""Bad input fails early with a message that names the fix, and loses nothing."""

import os
import subprocess
import sys

import jax
import pytest

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import checkpoint, config as config_lib, train
from sslax.data import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, env=None, timeout=120):
  return subprocess.run(
    [sys.executable, "-m", "sslax.main", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_cli_unknown_override_key_lists_valid_keys(tmp_path):
  r = _cli(
    "--config",
    "configs/simclr_fashion_mnist.py",
    "--workdir",
    str(tmp_path),
    "--config.optimizer.base_lrr=0.1",
  )
  assert r.returncode == 2
  assert "Unknown config key --config.optimizer.base_lrr" in r.stderr
  assert "Did you mean optimizer.base_lr" in r.stderr
  assert "simclr.temperature" in r.stderr  # the full list of valid keys
  assert not os.listdir(tmp_path)  # nothing was started


def test_unknown_key_in_config_file_fails():
  c = tiny_config()
  with c.unlocked():
    c.optimizer.base_lrr = 0.1
  with pytest.raises(ValueError, match="optimizer.base_lrr.*not known"):
    config_lib.validate(c)


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("method", "simclrr", "Unknown config.method 'simclrr'; choose one of"),
    ("model.name", "vgg", "Unknown config.model.name 'vgg'"),
    ("model.depth", 19, "not a ResNet depth"),
    ("optimizer.name", "adam", "Unknown config.optimizer.name 'adam'"),
    ("dataset.name", "no_such_dataset_xyz", "Unknown config.dataset.name"),
    ("dtype", "float8", "Unknown compute dtype"),
  ],
)
def test_bad_names_fail_in_validation(key, value, message):
  c = tiny_config()
  section, _, leaf = key.rpartition(".")
  setattr(c[section] if section else c, leaf, value)
  with pytest.raises(ValueError, match=message):
    setup_lib.build(c)


def test_batch_not_divisible_by_devices_names_the_fix(devices):
  c = tiny_config()
  c.batch_size = 12  # 8 devices
  with pytest.raises(
    ValueError,
    match=r"batch_size=12 must be a positive multiple of the 8 devices.*--config.batch_size=16",
  ):
    setup_lib.build(c)


def test_missing_dataset_lists_where_it_looked(tmp_path, monkeypatch):
  monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path / "empty"))
  monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", (str(tmp_path / "nothing_here"),))
  monkeypatch.setattr(sources, "USER_CACHE_DIR", str(tmp_path / "no_cache"))
  c = tiny_config()
  c.dataset.name = "fashion_mnist"
  with pytest.raises(sources.DatasetNotFoundError) as err:
    setup_lib.build(c)
  msg = str(err.value)
  assert str(tmp_path / "empty") in msg and "apt-get" in msg


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
  c = tiny_config()
  c.total_steps = 8
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.optimizer.name = "sgd"
  c.optimizer.lr_scaling = "none"
  c.optimizer.base_lr = 1e30  # diverges within a few steps
  with pytest.raises(FloatingPointError, match="lower optimizer.base_lr"):
    train.train(c, str(tmp_path))
  manager = checkpoint.make_manager(str(tmp_path), save_every_steps=1, max_to_keep=3)
  step = manager.latest_step()
  if step is not None:  # whatever was saved holds finite params only
    s = setup_lib.build(c)
    state, _ = checkpoint.restore_latest(manager, s.abstract_state)
    leaves = jax.tree.leaves(jax.device_get(state.params))
    assert all(bool((abs(x) < float("inf")).all()) for x in leaves)
