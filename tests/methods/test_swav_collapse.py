"""SwAV collapse check: after a short multi-crop run (train.train on fake data) the embeddings
are still spread out, and the same check fails on a constant (collapsed) embedding."""

import jax.numpy as jnp
import numpy as np
import pytest

from testkit.collapse import assert_not_collapsed, embedding_std
from sslax import setup as setup_lib
from sslax import train
from sslax.data import sources
from test_swav import swav_config


@pytest.mark.slow  # 30 train steps; learning on real data: tests/evaluation/test_end_to_end.py
def test_short_run_does_not_collapse(tmp_path):
  c = swav_config()
  c.total_steps = 6
  c.swav.freeze_prototypes_steps = 2
  c.checkpoint_every_steps = 1000
  c.async_checkpointing = False
  state = train.train(c, str(tmp_path))["state"]
  images = sources.get_source("fake", "test", image_size=16, num_examples=64).images
  net = setup_lib.build(c).method.network()
  # The unit embeddings z as the loss sees them (training-mode BN over these 64 images).
  (_, z, _), _ = net.apply(
    {"params": state.params, "batch_stats": state.batch_stats},
    jnp.asarray(images, jnp.float32) / 255.0,
    train=True,
    mutable=["batch_stats"],
  )
  std = assert_not_collapsed(z)
  print(f"swav embedding std after 6 steps: {std:.4f} (isotropic {1 / np.sqrt(z.shape[1]):.4f})")
  constant = np.tile(np.asarray(z[:1]), (64, 1))
  assert embedding_std(constant) < 1e-6  # float32 rounding of identical rows
  with pytest.raises(AssertionError, match="collapsed"):
    assert_not_collapsed(constant)
