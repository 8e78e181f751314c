#!/usr/bin/env bash
# Train sslax on a Cloud TPU VM pod slice: create it (on-demand, spot, or a queued resource),
# copy the code to every worker, install with the README's setup script, start the same
# command on all workers, stream worker 0's log, and tear down.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"

usage() {
  cat <<'TXT'
Usage: launch/tpu_pod.sh [--dry-run] STEP... [-- extra sslax.main flags]

Steps (run in the order given; "all" = create copy setup train logs):
  create    create the TPU VM slice (or a queued resource when QUEUED=1)
  copy      copy this checkout to ~/sslax on every worker (--worker=all)
  setup     run scripts/setup.sh + jax[tpu] on every worker
  train     start `python -m sslax.main --config $CONFIG --workdir $WORKDIR` on every worker
  logs      stream worker 0's training log
  delete    delete the slice (and the queued resource)

Required settings (environment variables):
  TPU_NAME          name of the slice, e.g. sslax-v4-32
  ZONE              e.g. us-central2-b
  ACCELERATOR_TYPE  e.g. v4-32 (several hosts -> one process per host)
  CONFIG            e.g. configs/simclr_tpu.py
  WORKDIR           e.g. gs://my-bucket/simclr_r50 (shared by all hosts; checkpoints + logs)
Optional:
  PROJECT           gcloud project (default: gcloud's configured one)
  RUNTIME_VERSION   TPU VM image (default tpu-ubuntu2204-base)
  SPOT=1            spot (preemptible) capacity; rerun `train` after a preemption to resume
  QUEUED=1          create through a queued resource (waits for capacity)

Every process runs the same command; jax.distributed.initialize() finds the pod's topology
(SSLAX_DISTRIBUTED=1). After a spot preemption recreate the slice and run `copy setup train`
again: the run resumes from the newest checkpoint in $WORKDIR.
TXT
}

steps=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; extra=("$@"); break ;;
    create|copy|setup|train|logs|delete) steps+=("$1") ;;
    all) steps+=(create copy setup train logs) ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[ ${#steps[@]} -gt 0 ] || { usage >&2; die "name at least one step"; }
require TPU_NAME ZONE ACCELERATOR_TYPE CONFIG WORKDIR
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
project=(); [ -n "${PROJECT:-}" ] && project=(--project="$PROJECT")
spot=(); [ "${SPOT:-0}" = 1 ] && spot=(--spot)
ssh_all=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${project[@]}" --worker=all)
quoted_extra=$(printf ' %q' "${extra[@]}")
[ ${#extra[@]} -gt 0 ] || quoted_extra=""

for step in "${steps[@]}"; do
  case "$step" in
    create)
      if [ "${QUEUED:-0}" = 1 ]; then
        run gcloud compute tpus queued-resources create "$TPU_NAME-qr" --node-id="$TPU_NAME" \
          --zone="$ZONE" "${project[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
          --runtime-version="$RUNTIME_VERSION" "${spot[@]}"
      else
        run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" "${project[@]}" \
          --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${spot[@]}"
      fi ;;
    copy)
      run git -C "$here/.." archive --format=tar.gz -o /tmp/sslax-src.tar.gz HEAD
      run gcloud compute tpus tpu-vm scp /tmp/sslax-src.tar.gz "$TPU_NAME":~/ --zone="$ZONE" "${project[@]}" --worker=all
      run "${ssh_all[@]}" --command="rm -rf ~/sslax && mkdir -p ~/sslax && tar -xzf ~/sslax-src.tar.gz -C ~/sslax" ;;
    setup)
      run "${ssh_all[@]}" --command="cd ~/sslax && SSLAX_ACCELERATOR=tpu bash scripts/setup.sh" ;;
    train)
      run "${ssh_all[@]}" --command="cd ~/sslax && SSLAX_DISTRIBUTED=1 nohup .venv/bin/python -m sslax.main --config=$CONFIG --workdir=$WORKDIR$quoted_extra > ~/sslax_train.log 2>&1 &" ;;
    logs)
      run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${project[@]}" --worker=0 --command="tail -n +1 -F ~/sslax_train.log" ;;
    delete)
      if [ "${QUEUED:-0}" = 1 ]; then
        run gcloud compute tpus queued-resources delete "$TPU_NAME-qr" --zone="$ZONE" "${project[@]}" --force --quiet
      else
        run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" "${project[@]}" --quiet
      fi ;;
  esac
done
