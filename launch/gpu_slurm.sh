#!/usr/bin/env bash
# Train sslax on a multi-node GPU cluster with SLURM: writes an sbatch script (one process per
# node, or per GPU) whose tasks take the coordinator from SLURM's variables, and submits it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"

usage() {
  cat <<'TXT'
Usage: launch/gpu_slurm.sh [--dry-run] [-- extra sslax.main flags]

Required settings (environment variables):
  NODES          number of nodes, e.g. 4
  GPUS_PER_NODE  e.g. 8
  CONFIG         e.g. configs/simclr_tpu.py
  WORKDIR        a directory every node can read and write (shared FS or gs://)
Optional:
  PER_GPU=1      one process per GPU (default: one process per node driving all its GPUs)
  PARTITION, ACCOUNT, TIME (default 24:00:00), JOB_NAME (default sslax), PORT (default 12355)
  REPO           checkout on the shared FS with a .venv from scripts/setup.sh
                 (SSLAX_ACCELERATOR=cuda12); default: this checkout

Process 0's host (first in SLURM_JOB_NODELIST) is the coordinator; each task sets
SSLAX_COORDINATOR_ADDRESS, SSLAX_NUM_PROCESSES=$SLURM_NTASKS, SSLAX_PROCESS_ID=$SLURM_PROCID.
SLURM sends SIGTERM 120 s before the time limit (--signal) and on preemption; sslax saves a
checkpoint at an agreed step and exits 0; the job is requeued and resumes.
--dry-run prints the sbatch script and the submit command without submitting.
TXT
}

extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
require NODES GPUS_PER_NODE CONFIG WORKDIR
REPO=${REPO:-$(cd "$here/.." && pwd)}
PORT=${PORT:-12355}
if [ "${PER_GPU:-0}" = 1 ]; then
  tasks="#SBATCH --ntasks-per-node=$GPUS_PER_NODE
#SBATCH --gpus-per-task=1"
else
  tasks="#SBATCH --ntasks-per-node=1"
fi
optional=""
[ -n "${PARTITION:-}" ] && optional+="#SBATCH --partition=$PARTITION"$'\n'
[ -n "${ACCOUNT:-}" ] && optional+="#SBATCH --account=$ACCOUNT"$'\n'
quoted_extra=""
[ ${#extra[@]} -gt 0 ] && quoted_extra=$(printf ' %q' "${extra[@]}")

script=$(cat <<SBATCH
#!/bin/bash
#SBATCH --job-name=${JOB_NAME:-sslax}
#SBATCH --nodes=$NODES
$tasks
#SBATCH --gpus-per-node=$GPUS_PER_NODE
#SBATCH --time=${TIME:-24:00:00}
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=sslax-%j.out
${optional}set -euo pipefail
coordinator=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | head -n 1)
export SSLAX_COORDINATOR_ADDRESS="\$coordinator:$PORT"
cd $REPO
srun --kill-on-bad-exit=1 bash -c 'SSLAX_NUM_PROCESSES=\$SLURM_NTASKS SSLAX_PROCESS_ID=\$SLURM_PROCID exec .venv/bin/python -m sslax.main --config=$CONFIG --workdir=$WORKDIR$quoted_extra'
SBATCH
)
echo "$script"
job_file=${TMPDIR:-/tmp}/sslax-$$.sbatch
if [ "$DRY_RUN" = 0 ]; then printf '%s\n' "$script" > "$job_file"; fi
run sbatch "$job_file"
