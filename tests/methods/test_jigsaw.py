"""Jigsaw: the greedy max-min Hamming permutation set against brute force, tile positions on
a coordinate image, seeding, per-tile normalisation, the set kept in method_state, the loss
against NumPy cross-entropy, and 8 devices == 1 device (task, loss, gradients)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from testkit.pretext import (
  check_pretext_eight_devices_equal_one,
  check_task_same_on_eight_devices,
  loss_and_grads,
  numpy_cross_entropy,
)
from sslax import setup as setup_lib
from sslax import sharding
from sslax.pretext import jigsaw


def jigsaw_config():
  c = tiny_config("jigsaw")  # 16 px views: 3 x 3 cells of 5 px
  c.jigsaw.tile_size = 4
  c.jigsaw.num_permutations = 10
  c.jigsaw.head_hidden_dim = 16
  return c


def hamming(a, b):
  return int(np.sum(np.asarray(a) != np.asarray(b)))


def test_permutation_set_is_greedy_max_min_by_brute_force():
  perms, selection = jigsaw.hamming_permutations(12, num_tiles=9, seed=3)
  assert perms.shape == (12, 9) and perms.dtype == np.int32
  assert all(sorted(p) == list(range(9)) for p in perms.tolist())
  assert len({tuple(p) for p in perms.tolist()}) == 12
  every = np.array(list(itertools.permutations(range(9))))
  for k in range(1, 12):
    # Brute force: the best achievable min distance to perms[:k] over all unchosen candidates.
    to_chosen = np.min([np.sum(every != p, axis=1) for p in perms[:k]], axis=0)
    unchosen = to_chosen > 0
    best = to_chosen[unchosen].max()
    got = min(hamming(perms[k], p) for p in perms[:k])
    assert got == best == selection[k], k
  pairwise = min(hamming(a, b) for a, b in itertools.combinations(perms, 2))
  # The guarantee of greedy max-min: the closest pair is as far as the last added member.
  assert pairwise == selection[-1] == selection.min()
  assert np.all(np.diff(selection) <= 0)


def test_permutation_set_is_seeded_and_can_be_exhaustive():
  a, _ = jigsaw.hamming_permutations(30, num_tiles=9, seed=0)
  b, _ = jigsaw.hamming_permutations(30, num_tiles=9, seed=0)
  c, _ = jigsaw.hamming_permutations(30, num_tiles=9, seed=1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  full, selection = jigsaw.hamming_permutations(24, num_tiles=4, seed=0)
  assert len({tuple(p) for p in full.tolist()}) == math.factorial(4)
  assert selection[-1] == min(hamming(x, y) for x, y in itertools.combinations(full, 2)) == 2


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(num_permutations=25, num_tiles=4), r"num_permutations=25 .* 4! = 24"),
    (dict(num_permutations=5, num_tiles=16), r"num_tiles=16"),
  ],
)
def test_bad_permutation_requests_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jigsaw.hamming_permutations(**kwargs)


def coordinate_images(batch, size):
  """Pixel (r, c) of image b holds b * size^2 + r * size + c: a tile tells where it came from."""
  return np.arange(batch * size * size, dtype=np.float32).reshape(batch, size, size, 1)


@pytest.mark.parametrize("size", [15, 17])  # 17: a 1 px border is left around the grid
def test_tiles_come_from_their_cells_in_permutation_order(size):
  grid, tile, batch = 3, 3, 6
  cell, margin = size // grid, (size - grid * (size // grid)) // 2
  perms, _ = jigsaw.hamming_permutations(5, 9, seed=0)
  images = coordinate_images(batch, size)
  tiles, labels = jigsaw.jigsaw_puzzles(
    jnp.asarray(images), jax.random.key(0), jnp.asarray(perms), grid, tile, normalize=False
  )
  tiles, labels = np.asarray(tiles), np.asarray(labels)
  assert tiles.shape == (batch, 9, tile, tile, 1) and labels.shape == (batch,)
  for b in range(batch):
    for position in range(9):
      source_cell = perms[labels[b], position]
      corner = tiles[b, position, 0, 0, 0] - b * size * size
      r0, c0 = divmod(int(corner), size)
      row, col = divmod(int(source_cell), grid)
      assert margin + row * cell <= r0 <= margin + row * cell + cell - tile
      assert margin + col * cell <= c0 <= margin + col * cell + cell - tile
      np.testing.assert_array_equal(
        tiles[b, position, ..., 0], images[b, r0 : r0 + tile, c0 : c0 + tile, 0]
      )


def test_jitter_covers_every_offset_inside_the_cell():
  offsets = np.asarray(jigsaw.tile_offsets(jax.random.key(0), 200, 15, 3, 3))  # cells of 5
  within = offsets - 5 * np.stack(np.divmod(np.arange(9), 3), axis=1)
  assert within.min() == 0 and within.max() == 2
  assert len(np.unique(within)) == 3


def test_puzzles_are_seeded():
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 15, 15, 1)), jnp.float32)
  perms = jnp.asarray(jigsaw.hamming_permutations(20, 9, seed=0)[0])
  a = jigsaw.jigsaw_puzzles(images, jax.random.key(5), perms, 3, 3)
  b = jigsaw.jigsaw_puzzles(images, jax.random.key(5), perms, 3, 3)
  c = jigsaw.jigsaw_puzzles(images, jax.random.key(6), perms, 3, 3)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert np.any(np.asarray(a[1]) != np.asarray(c[1]))
  assert np.any(np.asarray(a[0]) != np.asarray(c[0]))


def test_each_tile_is_standardised_on_its_own():
  images = np.random.default_rng(1).uniform(size=(2, 15, 15, 1)).astype(np.float32)
  images[1] = 0.5  # a flat image: flat tiles
  perms = jnp.asarray(jigsaw.hamming_permutations(4, 9, seed=0)[0])
  tiles, _ = jigsaw.jigsaw_puzzles(jnp.asarray(images), jax.random.key(0), perms, 3, 4)
  t = np.asarray(tiles, np.float64)
  np.testing.assert_allclose(t[0].mean(axis=(1, 2, 3)), 0, atol=1e-5)
  np.testing.assert_allclose(t[0].std(axis=(1, 2, 3)), 1, rtol=1e-3)
  np.testing.assert_array_equal(t[1], 0)


def test_tiles_that_do_not_fit_are_refused(devices):
  c = jigsaw_config()
  c.jigsaw.tile_size = 6
  with pytest.raises(ValueError, match=r"patch_size=6 .* 3 x 3 grid on 16 px"):
    setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))
  c.jigsaw.tile_size, c.jigsaw.grid = 2, 4
  with pytest.raises(ValueError, match=r"config.jigsaw.grid=4"):
    setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]))


def _images(batch=16, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(batch, size, size, 3)).astype(np.float32)


@pytest.mark.slow  # test budget (2026-11-30): ~55 s
def test_permutation_set_lives_in_method_state_and_drives_the_loss(devices):
  config, images = jigsaw_config(), _images()
  s, state, (loss, metrics, _, _) = loss_and_grads(config, devices[:1], images)
  expected, _ = jigsaw.hamming_permutations(10, 9, seed=config.jigsaw.permutation_seed)
  np.testing.assert_array_equal(state.method_state["permutations"], expected)
  # The loss is cross-entropy of the network on the puzzles cut with the stored set ...
  tiles, labels = jigsaw.jigsaw_puzzles(
    jnp.asarray(images), jax.random.key(0), jnp.asarray(expected), 3, 4
  )
  (_, logits), _ = s.method.network().apply(
    {"params": state.params, "batch_stats": state.batch_stats},
    tiles,
    train=True,
    mutable=["batch_stats"],
  )
  np.testing.assert_allclose(loss, numpy_cross_entropy(logits, np.asarray(labels)), rtol=1e-5)
  np.testing.assert_allclose(
    metrics["pretext_accuracy"], np.mean(np.argmax(logits, axis=1) == np.asarray(labels)), atol=1e-7
  )
  assert metrics["pretext_chance"] == pytest.approx(0.1)
  # ... and it is read from method_state, not rebuilt (a resumed run keeps its set).
  other = {"permutations": jnp.asarray(expected[::-1].copy())}
  _, _, (loss_other, _, _, _) = loss_and_grads(config, devices[:1], images, method_state=other)
  assert abs(float(loss_other) - float(loss)) > 1e-6


@pytest.mark.slow
def test_eight_devices_equal_one_device_loss_and_grads(devices):
  check_pretext_eight_devices_equal_one(jigsaw_config(), _images(), devices)


def test_puzzle_task_is_the_same_on_eight_devices(devices):
  """The task's random draws do not depend on how the batch is sharded."""
  inputs, _ = check_task_same_on_eight_devices(
    lambda mesh: setup_lib.build_method(jigsaw_config(), mesh),
    _images(),
    devices,
    method_state=lambda m: {"permutations": jnp.asarray(m.permutations())},
  )
  assert inputs.shape == (16, 9, 4, 4, 3)
