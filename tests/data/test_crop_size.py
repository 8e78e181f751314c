"""augment.crop_size: the two-view methods train on smaller crops, evaluation stays at full size."""

import jax
import numpy as np
import pytest

from testkit.configs import tiny_config
from sslax import config as config_lib
from sslax import setup as setup_lib
from sslax import sharding, train
from sslax.data import augment, pipeline


@pytest.mark.parametrize("method", augment.CROP_SIZE_METHODS)
def test_two_view_methods_crop_at_crop_size_and_default_to_the_image_size(method):
  c = tiny_config(method)
  if method == "mocov2":
    c.mocov2.queue_size = 64
  config_lib.validate(c)
  s = setup_lib.build(c)
  assert [v.size for v in s.method.views()] == [16, 16]
  c.augment.crop_size = 12
  config_lib.validate(c)
  s = setup_lib.build(c)
  assert [v.size for v in s.method.views()] == [12, 12]
  assert s.run.image_size == 16  # what the network is built and evaluated at


@pytest.mark.parametrize(
  "change, message",
  [
    (dict(crop_size=-1), "must be 0"),
    (dict(method="dino", crop_size=12), "trains at its own crop sizes"),
    (dict(model="vit", crop_size=12), "position embeddings"),
  ],
)
def test_crop_size_that_cannot_apply_is_refused_with_the_fix(change, message):
  c = tiny_config(change.get("method", "simclr"))
  c.augment.crop_size = change["crop_size"]
  if change.get("model") == "vit":
    c.model.update(
      name="vit", variant="custom", patch_size=4, hidden_size=32, num_layers=1, num_heads=2
    )
  with pytest.raises(ValueError, match=message):
    config_lib.validate(c)
  c.augment.crop_size = c.dataset.image_size  # the image size itself is always fine
  config_lib.validate(c)


def test_simclr_trains_on_small_crops_and_embeds_full_size_images():
  c = tiny_config("simclr")
  c.dataset.name = "fashion_mnist"
  c.dataset.num_train_examples = 64
  c.augment.crop_size = 12
  s = setup_lib.build(c)
  state = setup_lib.init_state(s)
  ds = pipeline.train_dataset(s.train_source, s.method.views(), global_batch=c.batch_size, seed=0)
  host_batch = next(ds.as_numpy_iterator())
  assert [v.shape for v in host_batch["views"]] == [(16, 12, 12, 1)] * 2
  before = jax.device_get(state.params)
  step = train.make_train_step(s)
  state, metrics = step(state, sharding.make_global_batch(s.mesh, host_batch))
  assert np.isfinite(float(metrics["loss"]))
  moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))), before, state.params)
  assert any(jax.tree.leaves(moved))
  # The backbone is one function of any input size (global average pool): trained on 12 px
  # crops, it embeds the 16 px evaluation view into the same feature space.
  backbone = s.method.network().backbone
  variables = {"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]}
  small, full = (
    backbone.apply(variables, np.zeros((2, side, side, 1), np.float32), train=False)
    for side in (12, 16)
  )
  assert small.shape == full.shape == (2, 64)  # ResNet-10 at 1/8 width: 512 / 8
