#!/usr/bin/env bash
# Try multi-process sslax on one machine: N processes on 127.0.0.1, each with its own fake
# CPU devices, one global mesh. Stops every process on exit or Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"

usage() {
  cat <<'TXT'
Usage: launch/local_multiprocess.sh [--dry-run] [-- extra sslax.main flags]

Required settings (environment variables):
  CONFIG     e.g. configs/simclr_fashion_mnist.py
  WORKDIR    e.g. runs/local_mp
Optional:
  NUM_PROCESSES (default 2), DEVICES_PER_PROCESS (default 2), PORT (default 12355),
  TIMEOUT (seconds, default 3600: every process is killed after it)
Process i's output goes to $WORKDIR/process_i.log; process 0's is also shown.
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
require CONFIG WORKDIR
n=${NUM_PROCESSES:-2} devices=${DEVICES_PER_PROCESS:-2} port=${PORT:-12355}
python=$(cd "$here/.." && pwd)/.venv/bin/python
[ "$DRY_RUN" = 1 ] || mkdir -p "$WORKDIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for ((i = 0; i < n; i++)); do
  cmd=(env "XLA_FLAGS=--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu
       SSLAX_COORDINATOR_ADDRESS="127.0.0.1:$port" SSLAX_NUM_PROCESSES="$n" SSLAX_PROCESS_ID="$i"
       timeout "${TIMEOUT:-3600}" "$python" -m sslax.main --config="$CONFIG" --workdir="$WORKDIR" "${extra[@]}")
  printf '+ %s > %s\n' "${cmd[*]}" "$WORKDIR/process_$i.log"
  if [ "$DRY_RUN" = 0 ]; then "${cmd[@]}" > "$WORKDIR/process_$i.log" 2>&1 & pids+=($!); fi
done
[ "$DRY_RUN" = 1 ] && exit 0
tail -n +1 -F "$WORKDIR/process_0.log" & tailpid=$!
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
kill "$tailpid" 2>/dev/null || true
exit "$status"
