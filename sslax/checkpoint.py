"""Orbax checkpoints: periodic async saves, auto-resume, and a save on SIGTERM.

Orbax writes each step into a temporary directory and renames it only when complete (on GCS
it writes a commit marker), so a save interrupted half-way is never picked as "latest".
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


def make_manager(
  workdir: str, *, save_every_steps: int, max_to_keep: int, use_async: bool = True
) -> ocp.CheckpointManager:
  directory = os.path.join(
    os.path.abspath(workdir) if "://" not in workdir else workdir, "checkpoints"
  )
  # Saves at multiples of save_every_steps only (orbax's default also saves the first step it
  # sees, which costs a write at step 1); the trainer forces saves at the end and on SIGTERM.
  policy = ocp.checkpoint_managers.save_decision_policy.FixedIntervalPolicy(save_every_steps)
  options = ocp.CheckpointManagerOptions(
    save_decision_policy=policy,
    max_to_keep=max_to_keep,
    enable_async_checkpointing=use_async,
    create=True,
  )
  return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, step: int, state, *, force: bool = False) -> bool:
  """Saves when `step` is a save step (or `force`); returns whether a save started."""
  return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """-> (state, step) from the newest complete checkpoint, or (None, 0) if there is none.

  abstract_state: jax.ShapeDtypeStruct pytree with shardings, so arrays come back placed.
  """
  step = manager.latest_step()
  if step is None:
    return None, 0
  logging.info("Resuming from checkpoint step %d in %s", step, manager.directory)
  state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  return state, int(step)


def restore_latest_without(manager: ocp.CheckpointManager, abstract_state, field: str, sharding):
  """The newest checkpoint, for a state whose `field` is a part the caller rebuilds (the online
  probe) when the checkpoint has none (written before it existed) or one of another layout.

  -> ({name: value} of abstract_state's dataclass fields except `field`, step), or (None, 0)
  without a checkpoint. Every other field is restored strictly into abstract_state's layout
  (a mismatch raises ValueError, as restore_latest); the checkpoint's `field`, if any, is read
  in the layout it was written with (placed by `sharding`) and dropped.
  """
  step = manager.latest_step()
  if step is None:
    return None, 0
  target = {
    f.name: getattr(abstract_state, f.name)
    for f in dataclasses.fields(abstract_state)
    if f.name != field
  }
  on_disk = _tree_metadata(os.path.join(str(manager.directory), str(step), "default"))
  if field in on_disk:
    target[field] = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), on_disk[field]
    )
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  restored.pop(field, None)
  return restored, int(step)


def _tree_metadata(path: str):
  """The nested dict of array metadata (shape, dtype) of the checkpoint item at `path`."""
  metadata = ocp.StandardCheckpointer().metadata(path)
  tree = getattr(metadata, "item_metadata", metadata)
  return getattr(tree, "tree", tree)


class PreemptionWatcher:
  """Turns SIGTERM (what a preempted Cloud TPU VM or a SLURM job gets) into a flag the loop reads.

  The loop checks `should_stop(step)` at every step; on True it saves a checkpoint and exits
  cleanly. With several processes, a signal reaching any one of them must stop all of them at
  the same step: jax.distributed's preemption service (its own SIGTERM handler notifies the
  coordinator) answers `reached_preemption_sync_point(step)` identically on every process, so
  no Python handler is installed there.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    logging.warning("Received signal %d: will save a checkpoint and stop.", signum)
    self._event.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      # Every process must stop at the same step, so a local flag is not enough: jax's
      # preemption sync point (started by jax.distributed.initialize) agrees on one.
      from jax.experimental import multihost_utils

      return multihost_utils.reached_preemption_sync_point(step)
    return self._event.is_set()

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def load_numpy(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """-> (checkpointed state as nested dicts of numpy arrays, step); newest step by default.

  Needs no model code and no particular device layout (for inspection, tests and export).
  """
  manager = make_manager(workdir, save_every_steps=1, max_to_keep=1, use_async=False)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {manager.directory}.")
  path = os.path.join(str(manager.directory), str(step), "default")
  tree = _tree_metadata(path)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ocp.PyTreeCheckpointer().restore(path, restore_args=restore_args), int(step)
