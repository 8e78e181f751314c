"""Multi-process start-up: one process per TPU VM host / GPU node, JAX's multi-controller runtime.

`initialize(config.distributed)` must run before any other jax call that touches devices
(`sslax.main` calls it first). It picks, in order:
  1. explicit settings: --config.distributed.coordinator_address/num_processes/process_id,
     or the environment variables SSLAX_COORDINATOR_ADDRESS / SSLAX_NUM_PROCESSES /
     SSLAX_PROCESS_ID (what launch/*.sh set);
  2. a detected cluster (SLURM with more than one task, Open MPI with more than one rank, a TPU
     pod whose TPU_WORKER_HOSTNAMES lists several hosts) or SSLAX_DISTRIBUTED=1 /
     --config.distributed.auto_initialize (what launch/tpu_pod.sh sets, since a TPU VM's
     topology comes from its metadata server): jax.distributed.initialize() with no arguments
     reads the cluster's own settings;
  3. otherwise a single process (nothing to initialize).
"""

from __future__ import annotations

import os

import jax
from absl import logging

ENV_PREFIX = "SSLAX_"


def _setting(config, key: str, env: str, default):
  value = os.environ.get(ENV_PREFIX + env)
  if value not in (None, ""):
    return (
      value.lower() in ("1", "true", "yes") if isinstance(default, bool) else type(default)(value)
    )
  return config.get(key, default) if config is not None else default


def detected_cluster() -> str | None:
  """The kind of multi-process cluster this process runs in, if any."""
  env = os.environ
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "tpu_pod"
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1:
    return "slurm"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return "ompi"
  return None


def initialize(config=None) -> None:
  """Starts jax.distributed when this process is one of several; no-op for one process.

  config: the `distributed` block of the run config (may be None).
  """
  address = _setting(config, "coordinator_address", "COORDINATOR_ADDRESS", "")
  num_processes = _setting(config, "num_processes", "NUM_PROCESSES", 0)
  process_id = _setting(config, "process_id", "PROCESS_ID", -1)
  timeout = _setting(config, "initialization_timeout_s", "INITIALIZATION_TIMEOUT_S", 300)
  if address:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(
        f"distributed.coordinator_address={address!r} needs distributed.num_processes >= 1 "
        f"and 0 <= distributed.process_id < num_processes (got {num_processes}, {process_id}); "
        f"set them with --config.distributed.* or SSLAX_NUM_PROCESSES / SSLAX_PROCESS_ID."
      )
    if num_processes == 1:
      return
    jax.distributed.initialize(
      coordinator_address=address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=timeout,
    )
  elif detected_cluster() or _setting(config, "auto_initialize", "DISTRIBUTED", False):
    jax.distributed.initialize(initialization_timeout=timeout)
  else:
    return
  logging.info(
    "Process %d of %d, %d local / %d global devices.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
