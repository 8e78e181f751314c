"""Every test process sees 8 fake CPU devices, so multi-device code is tested against 1 device."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

from sslax import config as config_lib  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def devices():
  devs = jax.devices()
  assert len(devs) == 8, "tests expect 8 fake CPU devices (XLA_FLAGS set in conftest.py)"
  return devs


def tiny_config():
  """A config small enough for a unit test: fake data, ResNet-10 at 1/8 width, 16 px."""
  c = config_lib.base_config()
  c.dataset.name = "fake"
  c.dataset.image_size = 16
  c.dataset.num_train_examples = 64
  c.batch_size = 16
  c.total_steps = 4
  c.model.depth = 10
  c.model.width = 0.125
  c.simclr.proj_hidden_dim = 32
  c.simclr.proj_dim = 16
  c.optimizer.warmup_epochs = 0.0
  c.eval.at_end = False
  return c
