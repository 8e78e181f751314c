"""Every registered method builds from a config and a RunInfo alone (no dataset on disk) and
evaluates its loss on a fake batch: the method contract holds for all of them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import config as config_lib
from sslax import setup as setup_lib
from sslax.methods import METHODS

# Small heads, crops and towers so each method's loss compiles in seconds.
SMALL = {
  "simclr": dict(proj_hidden_dim=32, proj_dim=16),
  "mocov2": dict(proj_hidden_dim=32, proj_dim=16, queue_size=32, shuffle_bn_groups=2),
  "mocov3": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32),
  "byol": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32),
  "simsiam": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=8),
  "barlow_twins": dict(proj_hidden_dim=32, proj_dim=16),
  "vicreg": dict(proj_hidden_dim=32, proj_dim=16),
  "swav": dict(
    num_prototypes=10, proj_hidden_dim=32, proj_dim=16, num_local_crops=2, local_crop_size=8
  ),
  "dino": dict(out_dim=32, hidden_dim=32, bottleneck_dim=16, num_local_crops=2, local_crop_size=8),
  "dinov2": dict(
    out_dim=32,
    hidden_dim=32,
    bottleneck_dim=16,
    num_local_crops=2,
    local_crop_size=8,
    mask_group_size=8,
  ),
  "mae": dict(decoder_width=16, decoder_depth=1, decoder_heads=2),
  # No teacher / tokenizer run here: their documented random stand-ins (compile checks use the
  # same), so the whole loss runs; loading a real run is tested in test_vqkd.py / test_beit.py.
  "vqkd": dict(
    random_teacher=True,
    num_codes=16,
    code_dim=4,
    decoder_width=16,
    decoder_depth=1,
    decoder_heads=2,
  ),
  "beit": dict(
    random_tokenizer=True,
    codebook_size=16,
    codebook_dim=4,
    num_mask_patches=6,
    min_mask_patches_per_block=2,
  ),
  "clip": dict(embed_dim=8),
  "siglip": dict(embed_dim=8),
  "rotnet": dict(head_hidden_dim=16),
  "jigsaw": dict(tile_size=4, num_permutations=10, head_hidden_dim=16),
  "relative_patch": dict(patch_size=4, head_hidden_dim=16),
  "colorization": dict(decoder_width=16, grid=20.0),
  "inpainting": dict(decoder_width=16),
  "deepcluster": dict(num_clusters=4, pca_dims=4),
  "instdisc": dict(feature_dim=16, num_negatives=8),
  "cmc": dict(feature_dim=16),
  "exemplar": dict(num_classes=64),  # all 64 declared examples are seed images
  "cpc": dict(
    patch_size=8,
    patch_stride=4,
    prediction_offsets=(1, 2),
    context_blocks=1,
    context_width=16,
    target_dim=8,
  ),
}
VIT_METHODS = ("mae", "dinov2", "vqkd", "beit")
IMAGE_TEXT_METHODS = ("clip", "siglip")


def test_every_registered_method_has_a_small_setting_here():
  # align_uniform: examples/, own test; linear_eval needs a pretrained run: tests/methods/
  # test_linear_eval.py
  assert set(SMALL) >= set(METHODS) - {"align_uniform", "linear_eval"}


def _config(name, tmp_path):
  c = config_lib.base_config(name)
  c.dataset.name = "fashion_mnist"
  c.dataset.data_dir = str(tmp_path)  # empty: any read would fail with DatasetNotFoundError
  c.dataset.image_size = 16
  c.dataset.num_train_examples = 64  # declared: RunInfo needs no data
  c.dataset.channels = 3
  c.batch_size = 16
  c.total_epochs = 2.0
  c.model.depth, c.model.width = 10, 0.125
  if name in VIT_METHODS:
    c.model.name, c.model.variant = "vit", "custom"
    c.model.hidden_size, c.model.num_layers, c.model.num_heads = 32, 1, 2
    c.model.patch_size, c.model.posemb = 4, "sincos2d"
    c.model.mask_token = name in ("dinov2", "beit")
  if name == "dinov2":
    c.optimizer.name = "adamw"  # its weight-decay schedule is AdamW's
  if name in IMAGE_TEXT_METHODS:
    c.text.width, c.text.depth, c.text.heads, c.text.context_length = 16, 1, 2, 12
  for key, value in SMALL[name].items():
    c[name][key] = value
  return c


def _fake_batch(method, config, rng):
  views = tuple(
    jnp.asarray(rng.uniform(size=(config.batch_size, v.size, v.size, 3)), jnp.float32)
    for v in method.views()
  )
  batch = {
    "views": views,
    "label": jnp.zeros((config.batch_size,), jnp.int32),
    "index": jnp.arange(config.batch_size, dtype=jnp.int32),
  }
  if config.method in IMAGE_TEXT_METHODS:
    tokens = rng.integers(1, 200, size=(config.batch_size, config.text.context_length))
    batch["tokens"] = jnp.asarray(tokens, jnp.int32)
  return batch


@pytest.mark.parametrize("name", sorted(SMALL))
def test_method_builds_from_config_and_run_info_alone(name, tmp_path, devices):
  config = _config(name, tmp_path)
  s = setup_lib.build(config, devices=devices[:1], data_free=True)
  assert s.train_source is None
  assert s.method.run is s.run
  assert (s.run.num_train_examples, s.run.steps_per_epoch, s.run.total_steps) == (64, 4, 8)
  state = s.init_fn(jax.random.key(config.seed))  # not jitted: one compile fewer per method
  batch = _fake_batch(s.method, config, np.random.default_rng(0))
  loss, (metrics, _, _) = jax.jit(s.method.loss)(
    state.params, state.batch_stats, state.method_state, batch, jax.random.key(0)
  )
  assert np.isfinite(float(loss)), (name, float(loss))
  assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(metrics))


def test_a_data_free_run_needs_the_declared_size(tmp_path, devices):
  config = _config("simclr", tmp_path)
  config.dataset.num_train_examples = 0
  with pytest.raises(ValueError, match="dataset.train_size=N"):
    setup_lib.build(config, devices=devices[:1], data_free=True)
