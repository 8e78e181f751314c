"""configs/simclr_tpu.py: loads, builds ResNet-50 by shapes, and runs a step at toy size."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from sslax import setup as setup_lib
from sslax import config as config_lib, sharding, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_tpu_config_builds_resnet50_by_shape():
  c = _load("simclr_tpu")
  config_lib.check_unknown_keys(c)
  assert (c.batch_size, c.model.depth, c.optimizer.name, c.dtype) == (4096, 50, "lars", "bfloat16")
  from sslax import sharding as sh

  mesh = sh.make_mesh({"data": -1})
  net = setup_lib.build_method(c, mesh).network()
  shapes = jax.eval_shape(
    lambda: net.init(jax.random.key(0), jnp.zeros((2, 224, 224, 3)), train=False)
  )
  n_backbone = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"]["backbone"]))
  assert 23.0e6 < n_backbone < 23.8e6  # ResNet-50 without fc: 23.5M parameters
  assert jax.tree.leaves(shapes["params"])[0].dtype == jnp.float32  # params stay fp32 under bf16


def test_tpu_config_runs_one_step_at_toy_size(devices):
  c = _load("simclr_tpu")
  c.dataset.name = "fake"
  c.dataset.image_size = 32
  c.dataset.num_train_examples = 32
  c.dataset.test_split = "test"
  c.model.width = 0.0625
  c.simclr.proj_hidden_dim = 32
  c.batch_size = 16
  c.total_steps = 2
  s = setup_lib.build(c)
  state = setup_lib.init_state(s)
  rng = np.random.default_rng(0)
  batch = {
    "views": tuple(rng.uniform(size=(16, 32, 32, 3)).astype(np.float32) for _ in range(2)),
    "label": np.zeros(16, np.int32),
  }
  new_state, metrics = train.make_train_step(s)(state, sharding.make_global_batch(s.mesh, batch))
  assert int(new_state.step) == 1 and np.isfinite(float(metrics["loss"]))
  assert float(metrics["lr"]) == 0.0  # LARS warmup starts at zero
