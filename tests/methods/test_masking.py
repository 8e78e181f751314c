"""Block masking (BEiT / DINOv2 `MaskingGenerator`): equal to a NumPy port of the reference
given the same draws, the reference's statistics under Python's `random`, DINOv2's batch rule,
argument errors, and 8 devices == 1 device."""

import functools
import math
import random

import jax
import numpy as np
import pytest

from sslax import sharding
from sslax.methods import masking


def reference_block_mask(
  draws,
  grid_h,
  grid_w,
  num_masked,
  *,
  min_num_patches,
  max_num_patches,
  min_aspect,
  max_attempts=10,
):
  """One `MaskingGenerator(...)(num_masked)` call of the reference, line for line in NumPy.

  draws(round, attempt) -> (uniform, randint), the reference's `random.uniform` and
  `random.randint` for that attempt: Python's own `random`, or a table of uniforms.
  """
  cap = num_masked if max_num_patches is None else max_num_patches
  log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
  mask = np.zeros((grid_h, grid_w), bool)
  count, round_index = 0, 0
  while count < num_masked:
    limit = min(num_masked - count, cap)
    delta = 0
    for attempt in range(max_attempts):
      uniform, randint = draws(round_index, attempt)
      area = uniform(min_num_patches, limit)
      aspect = math.exp(uniform(*log_aspect))
      h = round(math.sqrt(area * aspect))
      w = round(math.sqrt(area / aspect))
      if w < grid_w and h < grid_h:
        top = randint(0, grid_h - h)
        left = randint(0, grid_w - w)
        added = h * w - mask[top : top + h, left : left + w].sum()
        if 0 < added <= limit:
          mask[top : top + h, left : left + w] = True
          delta = added
          break
    round_index += 1
    if delta == 0:
      break
    count += delta
  return mask


def table_draws(table):
  """draws() reading table[round, attempt] = (area, aspect, top, left) uniforms, mapped as
  Python's random does: uniform(a, b) = a + (b - a) u, randint(a, b) = a + floor(u (b - a + 1))."""

  def draws(round_index, attempt):
    area_u, aspect_u, top_u, left_u = (float(x) for x in table[round_index, attempt])
    uniforms, ints = iter((area_u, aspect_u)), iter((top_u, left_u))
    uniform = lambda a, b: a + (b - a) * next(uniforms)
    randint = lambda a, b: a + int(next(ints) * (b - a + 1))
    return uniform, randint

  return draws


def python_random_draws(seed):
  py = random.Random(seed)
  return lambda round_index, attempt: (py.uniform, py.randint)


# (grid_h, grid_w, min_num_patches, max_num_patches, min_aspect): DINOv2 (16x16 = ViT/14 at
# 224, max = half the grid), BEiT (14x14, min 16, no cap), a tiny DINOv2 grid, the smallest grid
# (only 1x1 blocks fit), a non-square grid with a wider aspect range.
DINOV2_16 = (16, 16, 4, 128, 0.3)
BEIT_14 = (14, 14, 16, None, 0.3)
CONFIGS = [DINOV2_16, BEIT_14, (7, 7, 4, 21, 0.3), (2, 2, 4, 2, 0.3), (5, 9, 2, None, 0.2)]
SAMPLES = 16  # rows of every jitted batch below, so that compiled programs are shared


def block_kwargs(config):
  _, _, min_num, max_num, min_aspect = config
  return {"min_num_patches": min_num, "max_num_patches": max_num, "min_aspect": min_aspect}


# One compile per configuration and function, shared by the tests (vmap over samples).
@functools.cache
def from_uniforms_fn(config):
  """(tables [S, R, A, 4], counts [S]) -> block_mask_from_uniforms [S, H, W]."""
  h, w = config[:2]
  kwargs = block_kwargs(config)
  return jax.jit(jax.vmap(lambda t, c: masking.block_mask_from_uniforms(t, h, w, c, **kwargs)))


def port(tables, counts, config, attempts=10):
  """The NumPy port on each sample's table: [S, H, W]."""
  h, w = config[:2]
  return np.stack(
    [
      reference_block_mask(
        table_draws(t), h, w, int(c), **block_kwargs(config), max_attempts=attempts
      )
      for t, c in zip(tables, counts)
    ]
  )


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}")
def test_block_mask_from_uniforms_equals_the_reference_port(config):
  """Random tables (with draws at 0 and just below 1, the ends of each randint range) and every
  target from 0 to the whole grid, including ones the reference cannot reach."""
  h, w = config[:2]
  n = h * w
  rng = np.random.default_rng(n)
  tables = rng.random((3 * SAMPLES, n, 10, 4), dtype=np.float32)
  tables[rng.random(tables.shape) < 0.1] = 0.0
  tables[rng.random(tables.shape) < 0.1] = np.float32(1 - 2**-24)
  counts = rng.integers(0, n + 1, 3 * SAMPLES)
  got = np.concatenate(
    [
      jax.device_get(from_uniforms_fn(config)(tables[i : i + SAMPLES], counts[i : i + SAMPLES]))
      for i in range(0, 3 * SAMPLES, SAMPLES)
    ]
  )
  assert got.shape == (3 * SAMPLES, h, w) and got.dtype == np.bool_
  np.testing.assert_array_equal(got, port(tables, counts, config))
  assert (got.sum(axis=(1, 2)) <= counts).all()  # the reference never overshoots its target
  assert got.any()  # not a vacuous comparison of empty masks


def test_a_round_gives_up_after_max_attempts():
  """Only the attempts a table holds are tried (3 here), as the port's loop over attempts."""
  config = CONFIGS[2]
  rng = np.random.default_rng(0)
  tables = rng.random((SAMPLES, 49, 3, 4), dtype=np.float32)
  counts = np.full(SAMPLES, 40)  # beyond the cap of 21 per block: several rounds each
  got = jax.device_get(from_uniforms_fn(config)(tables, counts))
  np.testing.assert_array_equal(got, port(tables, counts, config, attempts=3))


# DINOv2's generator for ViT-B/16 at 224 (dinov2/train/train.py): a 14x14 grid, at most
# `0.5 * img_size // patch_size * img_size // patch_size` patches per block.
DINOV2_14 = (14, 14, 4, 0.5 * 224 // 16 * 224 // 16, 0.3)


def masks_and_draws(rng):
  """rng -> (dinov2_masks, beit_masks), each [SAMPLES, 196] (14x14 grids, reference defaults),
  then what they draw by the documented key use: DINOv2's targets [SAMPLES] and each row's
  uniform table [SAMPLES, 196, 10, 4], and BEiT's tables (one program: compiles are slow)."""
  count_rng, mask_rng = jax.random.split(rng)
  tables = jax.vmap(lambda k: masking.block_mask_uniforms(k, 196))
  return (
    masking.dinov2_masks(rng, SAMPLES, 14, 14),
    masking.beit_masks(rng, SAMPLES, 14, 14, 75),
    masking.dinov2_mask_counts(count_rng, SAMPLES, 196),
    tables(jax.random.split(mask_rng, SAMPLES)),
    tables(jax.random.split(rng, SAMPLES)),
  )


masks_and_draws_fn = jax.jit(masks_and_draws)


def test_dinov2_targets_one_ratio_bin_per_masked_sample_in_shuffled_order():
  """int(B p) samples get floor(N r), r inside its own bin of linspace(0.1, 0.5, n + 1); the
  others 0; which samples are masked changes with the key."""
  n, seeds = 196, 64
  cases = [(SAMPLES, 0.5, 8), (5, 0.5, 2), (6, 1.0, 6), (6, 0.0, 0)]  # (B, p, int(B p))
  all_counts = jax.device_get(
    jax.jit(
      jax.vmap(
        lambda k: [
          masking.dinov2_mask_counts(k, batch, n, mask_probability=p) for batch, p, _ in cases
        ]
      )
    )(jax.random.split(jax.random.key(2), seeds))
  )
  for (batch, _, masked), counts in zip(cases, all_counts):
    assert counts.shape == (seeds, batch) and counts.dtype == np.int32
    edges = np.linspace(0.1, 0.5, masked + 1)
    for row in counts:
      targets = np.sort(row[row > 0])
      assert len(targets) == masked
      assert (np.floor(n * edges[:-1]) <= targets).all() and (targets <= n * edges[1:]).all()
    if 0 < masked < batch:
      how_often = (counts > 0).mean(axis=0)  # each position is masked in some rows, not in all
      assert how_often.min() > 0 and how_often.max() < 1


def test_dinov2_and_beit_masks_are_the_reference_batches_given_the_same_draws():
  """dinov2_masks: the reference's collate with the targets of dinov2_mask_counts; beit_masks:
  75 of 196 per row; each row the NumPy port on the key's table."""
  rng = jax.random.key(3)
  dinov2, beit, counts, dinov2_tables, beit_tables = jax.device_get(masks_and_draws_fn(rng))
  for masks in (dinov2, beit):
    assert masks.shape == (SAMPLES, 196) and masks.dtype == np.bool_

  expected = port(dinov2_tables, counts, DINOV2_14).reshape(SAMPLES, 196)
  np.testing.assert_array_equal(dinov2, expected)
  assert (counts > 0).sum() == SAMPLES // 2 and not dinov2[counts == 0].any()
  assert (dinov2.sum(axis=1) <= counts).all() and dinov2.any()

  expected = port(beit_tables, np.full(SAMPLES, 75), BEIT_14).reshape(SAMPLES, 196)
  np.testing.assert_array_equal(beit, expected)
  assert beit.sum(axis=1).max() <= 75 and beit.sum(axis=1).mean() > 60


def test_counts_and_positions_match_the_reference_under_python_random():
  """beit_masks (JAX's draws) vs the port drawing with the reference's own `random.uniform` /
  `random.randint` calls, 640 masks each: the mean masked count (the reference undershoots 75
  now and then) and how often each row and column is masked agree within 5 standard errors."""
  h, w = BEIT_14[:2]
  keys = jax.random.split(jax.random.key(1), 40)
  ours = np.concatenate([jax.device_get(masks_and_draws_fn(k)[1]) for k in keys])
  ours = ours.reshape(-1, h, w).astype(np.float64)
  theirs = np.stack(
    [
      reference_block_mask(python_random_draws(seed), h, w, 75, **block_kwargs(BEIT_14))
      for seed in range(len(ours))
    ]
  ).astype(np.float64)

  def close(a, b):  # per-sample statistics [S, K]: means agree within 5 standard errors
    se = np.sqrt(a.var(axis=0) / len(a) + b.var(axis=0) / len(b)) + 1e-9
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / se
    assert z.max() < 5, (a.mean(axis=0), b.mean(axis=0))

  close(ours.sum(axis=(1, 2))[:, None], theirs.sum(axis=(1, 2))[:, None])
  close(ours.mean(axis=2), theirs.mean(axis=2))  # row profile: top ~ U{0..H-h}
  close(ours.mean(axis=1), theirs.mean(axis=1))  # column profile: left ~ U{0..W-w}


def test_masks_on_8_devices_equal_1_device(devices):
  """Made inside jit for the global batch, sharded over 8 devices: the same masks as 1 device."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  batch = sharding.batch_sharding(mesh)
  rng = jax.random.key(4)
  sharded = jax.jit(lambda k: masks_and_draws(k)[:2], out_shardings=(batch, batch))(rng)
  single = masks_and_draws_fn(rng)[:2]
  for got, expected in zip(sharded, single):
    assert got.sharding.is_equivalent_to(batch, 2) and len(got.addressable_shards) == 8
    np.testing.assert_array_equal(jax.device_get(got), jax.device_get(expected))


KEY = jax.random.key(0)
BLOCK = {"min_num_patches": 16, "max_num_patches": None, "min_aspect": 0.3}


@pytest.mark.parametrize(
  "call,message",
  [
    (lambda: masking.block_mask(KEY, 1, 14, 10, **BLOCK), "grid_h=1"),
    (lambda: masking.block_mask(KEY, 14, 14.0, 10, **BLOCK), "grid_w=14.0"),
    (lambda: masking.block_mask(KEY, 14, 14, 197, **BLOCK), r"num_masked=197 .* \[0, 196\]"),
    (lambda: masking.block_mask(KEY, 14, 14, -1, **BLOCK), "num_masked=-1"),
    (lambda: masking.block_mask(KEY, 14, 14, 75, **{**BLOCK, "min_num_patches": 300}), "300"),
    (lambda: masking.block_mask(KEY, 14, 14, 75, **{**BLOCK, "min_num_patches": 0}), r"\(0, 196\]"),
    (lambda: masking.block_mask(KEY, 14, 14, 75, **{**BLOCK, "max_num_patches": 0.5}), ">= 1"),
    (lambda: masking.block_mask(KEY, 14, 14, 75, **{**BLOCK, "min_aspect": 0}), "min_aspect=0"),
    (
      lambda: masking.block_mask(KEY, 14, 14, 75, **BLOCK, max_aspect=0.2),
      "max_aspect=0.2 .* >= min_aspect=0.3",
    ),
    (lambda: masking.block_mask(KEY, 14, 14, 75, **BLOCK, max_attempts=0), "max_attempts=0"),
    (
      lambda: masking.block_mask_from_uniforms(np.zeros((10, 4)), 14, 14, 75, **BLOCK),
      r"shape \(10, 4\)",
    ),
    (lambda: masking.dinov2_masks(KEY, 8, 14, 14, mask_probability=1.5), "mask_probability=1.5"),
    (lambda: masking.dinov2_masks(KEY, 8, 14, 14, ratio_min_max=(0.5, 0.1)), "min must not"),
    (lambda: masking.dinov2_masks(KEY, 8, 14, 14, ratio_min_max=(0.1, 1.2)), r"\[1\]=1.2"),
    (lambda: masking.dinov2_masks(KEY, 8, 14, 14, ratio_min_max=(0.1,)), "a pair"),
    (lambda: masking.dinov2_masks(KEY, 0, 14, 14), "batch=0"),
    (lambda: masking.beit_masks(KEY, 8, 14, 14, 200), "num_masked=200"),
  ],
)
def test_bad_arguments_name_the_value_and_the_fix(call, message):
  with pytest.raises(ValueError, match=message):
    call()
