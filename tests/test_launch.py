"""launch/*.sh: --help, refusal on missing settings, and the exact commands --dry-run prints."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_ENV = dict(
  TPU_NAME="pod1",
  ZONE="us-central2-b",
  ACCELERATOR_TYPE="v4-32",
  CONFIG="configs/simclr_tpu.py",
  WORKDIR="gs://bucket/run1",
)
SLURM_ENV = dict(
  NODES="4", GPUS_PER_NODE="8", CONFIG="configs/simclr_tpu.py", WORKDIR="/shared/run1"
)


def _run(script, *args, env=None):
  full_env = {k: v for k, v in os.environ.items() if k not in TPU_ENV and k not in SLURM_ENV}
  full_env.update(env or {})
  return subprocess.run(
    ["bash", f"launch/{script}", *args],
    cwd=REPO,
    env=full_env,
    capture_output=True,
    text=True,
    timeout=60,
  )


def test_every_script_has_help_and_refuses_missing_settings():
  for script in ("tpu_pod.sh", "gpu_slurm.sh", "local_multiprocess.sh"):
    r = _run(script, "--help")
    assert r.returncode == 0 and "Usage:" in r.stdout and "--dry-run" in r.stdout
    r = _run(script, "--dry-run", *(["all"] if script == "tpu_pod.sh" else []))
    assert r.returncode == 2 and "missing required setting(s)" in r.stderr, r
    assert "gcloud" not in r.stdout and "sbatch" not in r.stdout


def test_tpu_pod_dry_run_prints_the_gcloud_sequence():
  r = _run(
    "tpu_pod.sh",
    "--dry-run",
    "all",
    "delete",
    "--",
    "--config.batch_size=1024",
    env=dict(TPU_ENV, SPOT="1"),
  )
  assert r.returncode == 0, r.stderr
  lines = [l[2:] for l in r.stdout.splitlines() if l.startswith("+ ")]
  assert lines[0] == (
    "gcloud compute tpus tpu-vm create pod1 --zone=us-central2-b "
    "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot"
  )
  ssh_all = "gcloud compute tpus tpu-vm ssh pod1 --zone=us-central2-b --worker=all --command="
  setup = [l for l in lines if l.startswith(ssh_all) and "scripts/setup.sh" in l]
  train = [l for l in lines if l.startswith(ssh_all) and "sslax.main" in l]
  assert len(setup) == 1 and "SSLAX_ACCELERATOR=tpu" in setup[0]
  # One command for every worker, with the same config/workdir and distributed start-up on.
  assert len(train) == 1
  assert (
    "SSLAX_DISTRIBUTED=1" in train[0]
    and "--config=configs/simclr_tpu.py" in train[0]
    and "--workdir=gs://bucket/run1" in train[0]
    and "--config.batch_size=1024" in train[0]
  )
  assert any(l.startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in l for l in lines)
  assert any("--worker=0" in l and "tail" in l for l in lines)
  assert lines[-1] == "gcloud compute tpus tpu-vm delete pod1 --zone=us-central2-b --quiet"


def test_tpu_queued_resource_form():
  r = _run("tpu_pod.sh", "--dry-run", "create", env=dict(TPU_ENV, QUEUED="1", SPOT="1"))
  assert r.stdout.strip() == (
    "+ gcloud compute tpus queued-resources create pod1-qr --node-id=pod1 "
    "--zone=us-central2-b --accelerator-type=v4-32 "
    "--runtime-version=tpu-ubuntu2204-base --spot"
  )


def test_slurm_dry_run_prints_sbatch_script_with_coordinator_from_slurm():
  r = _run("gpu_slurm.sh", "--dry-run", env=dict(SLURM_ENV, PARTITION="gpu"))
  assert r.returncode == 0, r.stderr
  out = r.stdout
  for directive in (
    "#SBATCH --nodes=4",
    "#SBATCH --ntasks-per-node=1",
    "#SBATCH --gpus-per-node=8",
    "#SBATCH --signal=TERM@120",
    "#SBATCH --requeue",
    "#SBATCH --partition=gpu",
  ):
    assert directive in out
  assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1' in out
  assert 'SSLAX_COORDINATOR_ADDRESS="$coordinator:12355"' in out
  assert "SSLAX_NUM_PROCESSES=$SLURM_NTASKS SSLAX_PROCESS_ID=$SLURM_PROCID" in out
  assert "srun --kill-on-bad-exit=1" in out and "--config=configs/simclr_tpu.py" in out
  assert out.strip().splitlines()[-1].startswith("+ sbatch ")
  per_gpu = _run("gpu_slurm.sh", "--dry-run", env=dict(SLURM_ENV, PER_GPU="1")).stdout
  assert "#SBATCH --ntasks-per-node=8" in per_gpu and "#SBATCH --gpus-per-task=1" in per_gpu


def test_local_multiprocess_dry_run():
  r = _run(
    "local_multiprocess.sh",
    "--dry-run",
    env=dict(CONFIG="configs/simclr_fashion_mnist.py", WORKDIR="/tmp/x", NUM_PROCESSES="3"),
  )
  lines = [l for l in r.stdout.splitlines() if l.startswith("+ ")]
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert f"SSLAX_PROCESS_ID={i}" in line and "SSLAX_NUM_PROCESSES=3" in line
    assert "SSLAX_COORDINATOR_ADDRESS=127.0.0.1:12355" in line and "timeout" in line
