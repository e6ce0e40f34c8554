#!/usr/bin/env bash
# N training processes on this machine, each with fake CPU devices, joined by
# jax.distributed on 127.0.0.1 (CPU collectives: gloo). The same code path as a pod.
#
#   launch/local.sh [-n NUM_PROCESSES] [-d DEVICES_PER_PROCESS] CONFIG WORKDIR [--config.x=y ...]
#   launch/local.sh -n 2 -d 2 configs/grm.py:micro /tmp/grm_2x2 --config.data.batch_size=4
#
# Process 0 prints and writes metrics; every process writes its part of the checkpoints.
# Logs: WORKDIR/logs/process_I.log. If one process fails, the others are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

NPROC=2
DEVICES=2
while getopts "n:d:h" opt; do
  case "$opt" in
    n) NPROC="$OPTARG" ;;
    d) DEVICES="$OPTARG" ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ "$#" -lt 2 ]; then sed -n '2,10p' "$0"; exit 2; fi
CONFIG="$1"; WORKDIR="$2"; shift 2

PYTHON="${PYTHON:-python}"
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$WORKDIR/logs"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$DEVICES"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

for ((i = 0; i < NPROC; i++)); do
  "$PYTHON" -m lrm_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
      --coordinator="127.0.0.1:$PORT" --num_processes="$NPROC" --process_id="$i" "$@" \
      > "$WORKDIR/logs/process_$i.log" 2>&1 &
  pids+=("$!")
done
echo "started $NPROC processes x $DEVICES CPU devices (coordinator 127.0.0.1:$PORT); logs in $WORKDIR/logs/"

status=0
for ((k = 0; k < NPROC; k++)); do
  if ! wait -n; then  # the first failure stops the rest (they would wait on it)
    echo "a process failed; see $WORKDIR/logs/process_*.log" >&2
    status=1
    cleanup
    wait || true
    break
  fi
done
trap - EXIT
[ "$status" -eq 0 ] && tail -n 3 "$WORKDIR/logs/process_0.log"
exit "$status"
