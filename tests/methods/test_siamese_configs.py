"""The BYOL / SimSiam / Barlow Twins / VICReg configs: load, build by shape, step at toy size."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import setup as setup_lib
from sslax import config as config_lib, sharding, train

from testkit import REPO

METHODS = ["byol", "simsiam", "barlow_twins", "vicreg"]


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("method", METHODS)
def test_fashion_mnist_config_is_the_cpu_demo(method):
  c = _load(f"{method}_fashion_mnist")
  config_lib.check_unknown_keys(c)
  assert (c.method, c.dataset.name, c.model.depth, c.batch_size) == (
    method,
    "fashion_mnist",
    10,
    256,
  )


@pytest.mark.parametrize(
  "method,batch,projector_out",
  [
    ("byol", 4096, 256),
    ("simsiam", 512, 2048),
    ("barlow_twins", 2048, 8192),
    ("vicreg", 2048, 8192),
  ],
)
def test_tpu_config_builds_resnet50_by_shape(method, batch, projector_out):
  c = _load(f"{method}_tpu")
  config_lib.check_unknown_keys(c)
  assert (c.method, c.batch_size, c.model.depth, c.dtype) == (method, batch, 50, "bfloat16")
  net = setup_lib.build_method(c, sharding.make_mesh({"data": -1})).network()
  x = jnp.zeros((2, 224, 224, 3))
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=False))
  n_backbone = sum(np.prod(s.shape) for s in jax.tree.leaves(shapes["params"]["backbone"]))
  assert 23.0e6 < n_backbone < 23.8e6  # ResNet-50 without fc
  assert shapes["params"]["projector"]["out"]["kernel"].shape[1] == projector_out


@pytest.mark.slow  # 4 ResNet-50 step compiles; tests/test_tpu_config.py runs SimCLR's in the default suite
@pytest.mark.parametrize("method", METHODS)
def test_tpu_config_runs_one_step_at_toy_size(method, devices):
  """bfloat16 compute, ResNet-50 at 1/16 width, 32 px: one finite step on 8 devices."""
  c = _load(f"{method}_tpu")
  c.dataset.name = "fake"
  c.dataset.image_size = 32
  c.dataset.num_train_examples = 32
  c.dataset.test_split = "test"
  c.model.width = 0.0625
  for key in ("proj_hidden_dim", "proj_dim", "pred_hidden_dim"):
    if key in c[method]:
      c[method][key] = 16
  c.batch_size = 16
  c.total_steps = 2
  s = setup_lib.build(c)
  state = setup_lib.init_state(s)
  rng = np.random.default_rng(0)
  views = tuple(
    (rng.uniform(0.1, 0.7, size=(16, 1, 1, 3)) + 0.3 * rng.uniform(size=(16, 32, 32, 3))).astype(
      np.float32
    )
    for _ in range(2)
  )
  batch = {"views": views, "label": np.zeros(16, np.int32)}
  new_state, metrics = train.make_train_step(s)(state, sharding.make_global_batch(s.mesh, batch))
  assert int(new_state.step) == 1
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
