#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (single- or multi-host): the same command on every worker.
#
#   launch/tpu_pod.sh setup TPU_NAME ZONE [REPO_URL]       # once: clone + install on all workers
#   launch/tpu_pod.sh train TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   launch/tpu_pod.sh stop  TPU_NAME ZONE                  # kill a running job on all workers
#
#   launch/tpu_pod.sh train my-v5e-256 us-west4-a configs/grm.py:variant=paper \
#       /mnt/shared/grm_paper --config.total_steps=100000
#
# Every worker runs `python -m lrm_jax.main`; jax.distributed.initialize() finds the other
# workers from the TPU metadata (lrm_jax/parallel.py), each worker reads its own rows of
# every batch, worker 0 writes metrics, all workers write their checkpoint shards.
# WORKDIR must be a filesystem every worker mounts (Filestore/NFS, or a bucket through
# gcsfuse): the trainer writes it with plain file I/O. Logs: ~/lrm_jax/train.log per worker.
# Environment: LRM_REPO_DIR (default ~/lrm_jax), JAX_VERSION (default 0.10.2), PROJECT
# (gcloud --project), TPU_SSH_FLAGS (extra flags for `gcloud ... ssh`).
set -euo pipefail

usage() { sed -n '2,17p' "$0"; exit 2; }
[ "$#" -ge 3 ] || usage
ACTION="$1"; TPU="$2"; ZONE="$3"; shift 3
REPO_DIR="${LRM_REPO_DIR:-\$HOME/lrm_jax}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
PROJECT_FLAG=()
[ -n "${PROJECT:-}" ] && PROJECT_FLAG=(--project="$PROJECT")

on_all_workers() {
  # shellcheck disable=SC2086
  gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all \
      ${TPU_SSH_FLAGS:-} --command="$1"
}

case "$ACTION" in
  setup)
    REPO_URL="${1:?setup needs REPO_URL}"
    on_all_workers "set -e; [ -d $REPO_DIR ] || git clone $REPO_URL $REPO_DIR; cd $REPO_DIR && \
      git pull --ff-only && pip install -q -r requirements.txt && \
      pip install -q -U 'jax[tpu]==$JAX_VERSION'"
    ;;
  train)
    [ "$#" -ge 2 ] || usage
    CONFIG="$1"; WORKDIR="$2"; shift 2
    EXTRA="$(printf ' %q' "$@")"
    # nohup: the job survives the ssh session; one log per worker.
    on_all_workers "cd $REPO_DIR && nohup python -m lrm_jax.main --config='$CONFIG' \
      --workdir='$WORKDIR'$EXTRA > $REPO_DIR/train.log 2>&1 & echo started on \$(hostname)"
    echo "follow worker 0: gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=0 --command='tail -f $REPO_DIR/train.log'"
    ;;
  stop)
    # SIGTERM: every worker saves a checkpoint and exits (lrm_jax/train/checkpoint.py).
    on_all_workers "pkill -TERM -f 'python -m lrm_jax.main' || true"
    ;;
  *) usage ;;
esac
