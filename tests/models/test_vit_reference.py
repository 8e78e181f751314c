"""ViT-S/16 and ViT-B/16 at 224 px have the published models' parameter counts and layout.

timm's vit_small_patch16_224 has 22,050,664 params and vit_base_patch16_224 86,567,656; without
their 1000-class head (D x 1000 + 1000) the backbones have 21,665,664 and 85,798,656. DINO,
MAE and MoCo v3 build these same timm blocks (qkv_bias=True, LayerNorm eps 1e-6, MLP ratio 4);
DINO learns a (1 + 196)-row pos_embed, the class token's row included. Shapes only
(jax.eval_shape): nothing is initialised.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from sslax import models, presets

# (preset backbone, width, heads, backbone params without the classifier)
PUBLISHED = {
  "vit_s16": (384, 6, 22_050_664 - (384 * 1000 + 1000)),
  "vit_b16": (768, 12, 86_567_656 - (768 * 1000 + 1000)),
}


def _shapes(model_config):
  vit = models.make_backbone(model_config)
  images = jnp.zeros((1, 224, 224, 3))
  return jax.eval_shape(lambda: vit.init(jax.random.key(0), images, train=False))["params"]


def _model(backbone, **overrides):
  model = presets.imagenet_tpu("dino", backbone=backbone).model
  model = ml_collections.ConfigDict(model.to_dict())
  for key, value in overrides.items():
    model[key] = value
  return model


def _count(params):
  return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


@pytest.mark.parametrize("backbone", sorted(PUBLISHED))
def test_parameter_count_is_the_published_backbones(backbone):
  width, _, published = PUBLISHED[backbone]
  assert published == {"vit_s16": 21_665_664, "vit_b16": 85_798_656}[backbone]
  params = _shapes(_model(backbone))
  assert _count(params) == published
  # The position table: 196 patch rows + the class token's row (DINO's / timm's 197).
  assert params["pos_embedding"].shape == (1, 14, 14, width)
  assert params["cls_pos_embedding"].shape == (1, 1, width)
  # MoCo v3 / MAE: fixed sin-cos positions, no position params at all (MoCo v3's ViT-S has 12
  # heads: the same count, heads split the width).
  sincos = _shapes(_model(backbone, posemb="sincos2d", num_heads=12))
  assert _count(sincos) == published - 197 * width


@pytest.mark.parametrize("backbone", sorted(PUBLISHED))
def test_layer_layout_is_the_published_models(backbone):
  width, heads, _ = PUBLISHED[backbone]
  params = _shapes(_model(backbone))
  assert params["patch_embed"]["kernel"].shape == (16, 16, 3, width)
  assert params["patch_embed"]["bias"].shape == (width,)
  assert params["cls_token"].shape == (1, 1, width)
  blocks = params["encoder"]
  assert sorted(blocks) == sorted(f"block{i}" for i in range(12))
  for block in blocks.values():
    attn = block["attn"]
    for name in ("query", "key", "value"):  # timm qkv_bias=True: the key has a bias too
      assert attn[name]["kernel"].shape == (width, heads, width // heads)
      assert attn[name]["bias"].shape == (heads, width // heads)
    assert attn["out"]["kernel"].shape == (heads, width // heads, width)
    assert attn["out"]["bias"].shape == (width,)
    assert block["mlp"]["fc1"]["kernel"].shape == (width, 4 * width)  # MLP ratio 4
    assert block["mlp"]["fc2"]["kernel"].shape == (4 * width, width)
    assert {k: v["scale"].shape for k, v in block.items() if k.startswith("norm")} == {
      "norm1": (width,),
      "norm2": (width,),
    }
  assert params["encoder_norm"]["scale"].shape == (width,)
