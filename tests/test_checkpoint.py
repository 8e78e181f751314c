"""Checkpoint manager policy: which steps get written."""

import jax.numpy as jnp

from sslax import checkpoint


def test_saves_only_at_multiples_of_the_interval_and_when_forced(tmp_path):
  manager = checkpoint.make_manager(
    str(tmp_path), save_every_steps=3, max_to_keep=5, use_async=False
  )
  for step in range(1, 8):
    checkpoint.save(manager, step, {"x": jnp.full((2,), float(step))}, force=step == 7)
  manager.wait_until_finished()
  # No write at step 1 (orbax's default initial save), every 3rd step, and the forced last one.
  assert list(manager.all_steps()) == [3, 6, 7]
  restored, step = checkpoint.restore_latest(manager, {"x": jnp.zeros((2,))})
  assert step == 7 and float(restored["x"][0]) == 7.0
