"""Start-up settings: explicit config, environment overrides, cluster detection, bad values."""

import pytest

from sslax import config as config_lib, distributed


def _cfg(**kw):
  c = config_lib.base_config().distributed
  c.update(kw)
  return c


def test_incomplete_explicit_settings_name_the_fix(monkeypatch):
  for var in ("COORDINATOR_ADDRESS", "NUM_PROCESSES", "PROCESS_ID"):
    monkeypatch.delenv("SSLAX_" + var, raising=False)
  with pytest.raises(ValueError, match="num_processes >= 1 and 0 <= distributed.process_id"):
    distributed.initialize(_cfg(coordinator_address="127.0.0.1:1234", num_processes=2))
  monkeypatch.setenv("SSLAX_PROCESS_ID", "5")  # the environment overrides the config
  with pytest.raises(ValueError, match=r"\(got 2, 5\)"):
    distributed.initialize(
      _cfg(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=0)
    )


def test_single_process_is_a_no_op(monkeypatch):
  for var in (
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "SSLAX_COORDINATOR_ADDRESS",
    "SSLAX_DISTRIBUTED",
  ):
    monkeypatch.delenv(var, raising=False)
  assert distributed.detected_cluster() is None
  distributed.initialize(_cfg())  # nothing to start
  distributed.initialize(_cfg(coordinator_address="h:1", num_processes=1, process_id=0))


@pytest.mark.parametrize(
  "env,kind",
  [
    ({"SLURM_NTASKS": "4"}, "slurm"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "ompi"),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "tpu_pod"),
    ({"SLURM_NTASKS": "1"}, None),
  ],
)
def test_cluster_detection(monkeypatch, env, kind):
  for var in ("SLURM_NTASKS", "SLURM_NPROCS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(var, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert distributed.detected_cluster() == kind
