"""A whole SimCLR train step on 8 devices == on 1 device (params, BN statistics, loss)."""

import jax
import numpy as np

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import sharding, train


def _step_on(devices, batch_np):
  s = setup_lib.build(tiny_config(), devices=devices)
  state = setup_lib.init_state(s)
  step = train.make_train_step(s)
  for b in batch_np:
    state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
  return jax.device_get((state.params, state.batch_stats, metrics))


def test_eight_devices_equal_one_device(devices):
  rng = np.random.default_rng(0)
  batches = [
    {
      "views": tuple(rng.uniform(size=(16, 16, 16, 3)).astype(np.float32) for _ in range(2)),
      "label": np.zeros(16, np.int32),
    }
    for _ in range(2)
  ]
  p1, bs1, m1 = _step_on(devices[:1], batches)
  p8, bs8, m8 = _step_on(devices, batches)
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  # BN batch statistics are global: running stats match the single-device ones.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), bs8, bs1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p8, p1)
  # And the step changed something (the comparison is not between two untouched inits).
  s = setup_lib.build(tiny_config(), devices=devices[:1])
  p0 = jax.device_get(setup_lib.init_state(s).params)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, p0))
  assert max(moved) > 1e-4
