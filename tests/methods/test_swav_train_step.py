"""A whole SwAV train step on 8 devices == on 1 device: multi-crop (2 x 16 px + 2 x 8 px), the
feature queue (filled at step 1, used at step 2), prototypes frozen for step 1."""

import jax
import numpy as np
import pytest

from sslax import setup as setup_lib
from sslax import sharding, train
from test_swav import _batches, _method, swav_config


@pytest.mark.slow  # test budget (2026-11-30): ~40 s idle; SwAV's loss 8 == 1 stays in tests/losses/test_swav_loss.py
def test_train_step_eight_devices_equal_one_device(devices):
  c = swav_config()
  c.swav.queue_length = 16  # full after step 1, so step 2's codes use it
  views = _method(c, devices[:1]).views()
  batches = _batches(views, 2)
  out, init = [], None
  for devs in (devices[:1], devices):
    s = setup_lib.build(c, devices=devs)
    init = jax.device_get(setup_lib.init_state(s)) if init is None else init
    state = jax.device_put(init, s.state_sharding)
    step = train.make_train_step(s)
    metrics, after_first = [], None
    for b in batches:
      state, m = step(state, sharding.make_global_batch(s.mesh, b))
      metrics.append(m)
      after_first = jax.device_get(state.params) if after_first is None else after_first
    # freeze_prototypes_steps=1 through the trainer: step 1 moved the backbone, not the prototypes.
    np.testing.assert_array_equal(
      after_first["prototypes"]["kernel"], init.params["prototypes"]["kernel"]
    )
    assert (
      np.abs(after_first["head"]["out"]["kernel"] - init.params["head"]["out"]["kernel"]).max()
      > 1e-6
    )
    out.append(jax.device_get((state.params, state.batch_stats, state.method_state, metrics)))
  (p1, bs1, ms1, m1), (p8, bs8, ms8, m8) = out
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for a, b in zip(m8, m1):
    close(a["loss"], b["loss"])
  assert [m["queue_in_use"] for m in m8] == [0.0, 1.0]
  jax.tree.map(close, p8, p1)
  jax.tree.map(close, bs8, bs1)  # backbone BN per size group, head BN over all crops
  jax.tree.map(close, ms8, ms1)  # the queue holds the global batch in device order
  np.testing.assert_allclose(np.linalg.norm(ms8["queue"], axis=-1), 1.0, rtol=1e-5)
  # Step 2 (unfrozen) moved the prototypes.
  assert np.abs(p1["prototypes"]["kernel"] - init.params["prototypes"]["kernel"]).max() > 1e-6
