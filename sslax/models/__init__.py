"""Model registry: backbones are chosen by name from `config.model`."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from sslax.models.heads import BackboneWithHead, ProjectionHead
from sslax.models.resnet import DEPTHS, STEMS, ResNet
from sslax.models.vit import ViT, vit_dims

BACKBONES = ("resnet", "vit")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def get_dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f"Unknown compute dtype {name!r}; choose one of {sorted(DTYPES)}.")
  return DTYPES[name]


def make_backbone(model: ml_collections.ConfigDict, dtype: str = "float32"):
  """Builds the backbone named by `model.name` (e.g. model.name='resnet', model.depth=50)."""
  if model.name == "resnet":
    return ResNet(depth=model.depth, width=model.width, stem=model.stem, dtype=get_dtype(dtype))
  if model.name == "vit":
    width, depth, heads = vit_dims(
      model.variant, model.hidden_size, model.num_layers, model.num_heads
    )
    return ViT(
      width=width,
      depth=depth,
      num_heads=heads,
      mlp_dim=model.mlp_dim,
      patch_size=model.patch_size,
      posemb=model.posemb,
      pool=model.pool,
      class_token=model.class_token,
      drop_path_rate=model.drop_path_rate,
      remat_policy=model.remat_policy,
      scan=model.scan,
      # DINOv2's options; .get: configs and exported encoders written before they existed
      layerscale_init=model.get("layerscale_init", 0.0),
      num_registers=model.get("num_registers", 0),
      ffn=model.get("ffn", "mlp"),
      mask_token=model.get("mask_token", False),
      drop_path_uniform=model.get("drop_path_uniform", False),
      rel_pos_bias=model.get("rel_pos_bias", "none"),  # BEiT's shared relative position bias
      attention=model.get("attention", "xla"),
      dtype=get_dtype(dtype),
    )
  raise ValueError(f"Unknown model.name {model.name!r}; choose one of {BACKBONES}.")


__all__ = [
  "ResNet",
  "ViT",
  "vit_dims",
  "ProjectionHead",
  "BackboneWithHead",
  "make_backbone",
  "get_dtype",
  "BACKBONES",
  "DEPTHS",
  "STEMS",
]
