"""Multi-crop (SwAV, DINO): 2 global crops + N smaller local crops of each image.

`crop_views` builds the view recipes from `config.augment`; `group_by_size` stacks consecutive
views of equal size so that `encode_crops` runs the backbone once per size group (the
references' MultiCropWrapper): backbone BatchNorm statistics are per size group, global over
devices within a group.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslax.data.augment import ViewSpec

NUM_GLOBAL_CROPS = 2


def crop_views(
  augment,
  *,
  global_size: int,
  global_scale: Sequence[float],
  num_local: int,
  local_size: int,
  local_scale: Sequence[float],
  global_overrides: Sequence[Mapping] = ({}, {}),
  local_overrides: Mapping = {},
) -> tuple[ViewSpec, ...]:
  """NUM_GLOBAL_CROPS global views then `num_local` local views, from `config.augment`.

  global_overrides[i] / local_overrides replace single ViewSpec fields of global crop i / of
  every local crop (DINO's per-crop blur and solarize probabilities).
  """
  global_crops = tuple(
    ViewSpec.from_config(augment, global_size, crop_scale=global_scale, **global_overrides[i])
    for i in range(NUM_GLOBAL_CROPS)
  )
  local = ViewSpec.from_config(augment, local_size, crop_scale=local_scale, **local_overrides)
  return global_crops + (local,) * num_local


def group_by_size(views: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
  """Tuple of [B, S_i, S_i, C] views -> tuple of [B, n_g, S, S, C], consecutive equal sizes."""
  groups, start = [], 0
  for i in range(1, len(views) + 1):
    if i == len(views) or views[i].shape[1:] != views[start].shape[1:]:
      groups.append(jnp.stack(views[start:i], axis=1))  # axis 1: each device keeps its rows
      start = i
  return tuple(groups)


def encode_crops(backbone: nn.Module, groups: Sequence[jax.Array], train: bool) -> jax.Array:
  """Crop groups [B, n_g, S_g, S_g, C] -> backbone features [B, V, F], crops in input order.

  Call it from a module's __call__ with the module's own backbone submodule, so parameter
  names are the backbone's own.
  """
  b = groups[0].shape[0]
  return jnp.concatenate(
    [backbone(g.reshape(-1, *g.shape[2:]), train=train).reshape(b, g.shape[1], -1) for g in groups],
    axis=1,
  )
