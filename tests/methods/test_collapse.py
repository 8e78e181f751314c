"""Collapse check for BYOL, SimSiam, Barlow Twins, VICReg: short runs keep embeddings spread.

The check (sslax.methods.siamese.is_collapsed): the mean per-dimension std of L2-normalised
embeddings [N, D] must be at least 0.1 / sqrt(D). Unit vectors spread over the sphere have
std ~1 / sqrt(D) per dimension (SimSiam fig. 2); a constant embedding has 0; embeddings
confined isotropically to k axis-aligned dimensions have sqrt(k / D) / sqrt(D), so 0.1 flags
collapse onto fewer than 1% of the dimensions. The runs below end 4-8x above the threshold.
"""

import math

import jax
import numpy as np
import pytest

from testkit.steps import tiny_method_config
from sslax import setup as setup_lib
from sslax import train
from sslax.data import pipeline, sources
from sslax.methods.siamese import COLLAPSE_STD_FRACTION, embedding_std, is_collapsed


def test_check_flags_collapsed_embeddings_and_passes_spread_ones():
  rng = np.random.default_rng(0)
  n, d = 512, 256
  spread = rng.normal(size=(n, d))
  assert not is_collapsed(spread)
  np.testing.assert_allclose(float(embedding_std(spread)) * math.sqrt(d), 1.0, atol=0.05)
  # Complete collapse: every image gets the same embedding (any scale, any direction).
  constant = np.tile(rng.normal(size=(1, d)), (n, 1)) * 5.0
  assert float(embedding_std(constant)) == pytest.approx(0.0, abs=1e-6)
  assert is_collapsed(constant)
  # Almost complete: a shared direction plus small noise.
  assert is_collapsed(constant + 0.01 * rng.normal(size=(n, d)))
  # Dimensional collapse: one varying axis (plus a shared offset) of 256 -> std x sqrt(D) = 0.044.
  one_axis = np.zeros((n, d))
  one_axis[:, 0] = rng.choice([-1.0, 1.0], size=n)
  one_axis[:, 1] = 1.0
  assert is_collapsed(one_axis)
  # ... but 16 of 256 dimensions in use is not flagged (fraction sqrt(16/256) = 0.25 > 0.1).
  sixteen = np.zeros((n, d))
  sixteen[:, :16] = rng.normal(size=(n, 16))
  assert not is_collapsed(sixteen)


def _short_run_config(method: str):
  c = tiny_method_config(method)
  c.dataset.name = "fashion_mnist"
  c.dataset.image_size = 16
  c.dataset.num_train_examples = 2048
  c.batch_size = 64
  c.total_steps = 30
  c.augment.crop_scale = (0.2, 1.0)
  c.optimizer.name = "adamw"
  c.optimizer.base_lr = 2e-3
  c.optimizer.lr_scaling = "none"
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_epochs = 0.0
  c.log_every_steps = 10
  c.checkpoint_every_steps = 1000
  return c


def _embed(config, s, state, num: int = 512):
  """Backbone features [num, F] and projector outputs z [num, D] of test images (eval mode)."""
  source = train.load_source(config, config.dataset.test_split, num)
  net = s.method.network()
  apply = jax.jit(
    lambda params, batch_stats, x: net.apply(
      {"params": params, "batch_stats": batch_stats}, x, train=False
    )[:2]
  )
  outs = [
    apply(state.params, state.batch_stats, b["image"])
    for b in pipeline.eval_batches(source, image_size=config.dataset.image_size, global_batch=128)
  ]
  return tuple(np.concatenate([np.asarray(o[i]) for o in outs]) for i in range(2))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["byol", "simsiam", "barlow_twins", "vicreg"])
def test_short_run_does_not_collapse(method, tmp_path, devices):
  try:
    sources.get_source("fashion_mnist", "test")
  except sources.DatasetNotFoundError as e:
    pytest.fail(
      f"Fashion-MNIST is needed for the collapse test (scripts/setup.sh installs it): {e}"
    )
  config = _short_run_config(method)
  out = train.train(config, str(tmp_path))  # 30 steps of batch 64, ~30-50 s on 2 CPU cores
  assert out["status"] == "done" and int(out["state"].step) == 30
  s = setup_lib.build(config)
  features, z = _embed(config, s, out["state"])
  for name, x in (("features", features), ("z", z)):
    fraction = float(embedding_std(x)) * math.sqrt(x.shape[1])
    assert np.all(np.isfinite(x)), name
    assert not is_collapsed(x), f"{method} {name}: std x sqrt(D) = {fraction:.3f}"
    # Margin: healthy short runs end at 0.4-0.8; demand 2x the collapse threshold.
    assert fraction > 2 * COLLAPSE_STD_FRACTION, f"{method} {name}: {fraction:.3f}"
