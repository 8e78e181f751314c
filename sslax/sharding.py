"""Device mesh, sharding rules, and host -> global array assembly.

One mesh over all devices of all processes. The batch is split over every mesh axis
(`BATCH_AXES`), so data parallelism and FSDP share it; params are replicated unless the FSDP
rule (`state_sharding`) shards them over the "fsdp" axis. The mesh uses `AxisType.Auto`, so `jax.jit` propagates shardings and
only losses that need explicit collectives use `jax.shard_map`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = MESH_AXES  # the batch dimension is sharded over all of them


def make_mesh(mesh_shape: Mapping[str, int], devices=None) -> Mesh:
  """Builds a mesh like {"data": -1, "fsdp": 1}; -1 takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(mesh_shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}.")
  sizes = [int(mesh_shape.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"Only one mesh axis may be -1, got {dict(mesh_shape)}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
        f"mesh {dict(mesh_shape)}: {len(devices)} devices are not divisible by {known}."
      )
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
      f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
      f"but {len(devices)} are available; set config.mesh to match (use -1 for one axis)."
    )
  return jax.make_mesh(
    tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
  """Where an array of `shape` lives under FSDP: P() (replicated), or "fsdp" on one dimension.

  Arrays with at least `min_size` elements are split over the "fsdp" axis along their largest
  dimension divisible by `fsdp_size` (the first such on ties); smaller ones, and ones with no
  divisible dimension, stay replicated (sharding them would cost more in collectives than it
  saves in memory).
  """
  if fsdp_size <= 1 or math.prod(shape) < min_size:
    return P()
  divisible = [d for d, n in enumerate(shape) if n % fsdp_size == 0]
  if not divisible:
    return P()
  dim = max(divisible, key=lambda d: (shape[d], -d))
  return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])


def state_sharding(shapes: Any, mesh: Mesh, min_size: int) -> Any:
  """Shardings for a pytree of arrays (or ShapeDtypeStructs): FSDP rules by shape.

  Applied to the whole train state, so a param and its optimizer moments (same shape) get the
  same sharding, and so do EMA teachers. With mesh "fsdp" = 1 everything is replicated. Under
  `jax.jit` XLA all-gathers sharded params where the computation needs them and reduce-scatters
  their gradients; the batch stays split over every mesh axis (BATCH_AXES).
  """
  fsdp_size = mesh.shape.get("fsdp", 1)
  return jax.tree.map(
    lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp_size, min_size)), shapes
  )


def num_batch_shards(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  """Fails early, naming the fix, when a global batch cannot be split evenly."""
  shards, processes = num_batch_shards(mesh), jax.process_count()
  if batch_size <= 0 or batch_size % shards or batch_size % processes:
    raise ValueError(
      f"config.{name}={batch_size} must be a positive multiple of the {shards} devices "
      f"(and of the {processes} processes) it is split over; try "
      f"--config.{name}={max(shards, round(batch_size / shards) * shards)}."
    )


def make_global_batch(mesh: Mesh, local_batch: Any) -> Any:
  """Host-local numpy batch (this process's rows) -> global jax.Arrays sharded over the batch."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )


def shard_over_batch(
  fn: Callable, mesh: Mesh, num_args: int, *, num_replicated: int = 0
) -> Callable:
  """Runs fn(*local_shards, *replicated, axis_name=BATCH_AXES) per device.

  The first `num_args` arguments are split over the batch axis (each device gets its rows); the
  next `num_replicated` arguments (queues, centers, temperatures, logit scales ...) reach every
  device whole. fn returns replicated values (reduce over `axis_name` inside).
  """
  return jax.shard_map(
    lambda *args: fn(*args, axis_name=BATCH_AXES),
    mesh=mesh,
    in_specs=(P(BATCH_AXES),) * num_args + (P(),) * num_replicated,
    out_specs=P(),
  )
