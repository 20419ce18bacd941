#!/usr/bin/env bash
# Stop this checkout's private Docker Engine (the one .ci/start-dockerd.sh started; make docker-down).
#
#   bash .ci/stop-dockerd.sh [--purge]
#
# Only that daemon: the pid in its own root's pidfile, and only if that process is a dockerd
# whose --data-root is this root (a stale pidfile never kills an unrelated process). Its
# containerd exits with it. --purge also deletes the root (images, build cache, log).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/docker-env.sh
source .ci/docker-env.sh
ROOT=$ENGINES_DOCKER_ROOT
log() { echo "stop-dockerd: $*" >&2; }

pid=$(cat "$ROOT/dockerd.pid" 2>/dev/null || true)
if [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "dockerd .*--data-root $ROOT/data "; then
  t0=$SECONDS
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "dockerd $pid ignored SIGTERM for 30 s: killing it"; kill -KILL "$pid"; fi
  log "stopped dockerd $pid after $((SECONDS - t0)) s ($ROOT)"
else
  log "no dockerd of this checkout is running ($ROOT)"
fi
if [[ ${1:-} == --purge && -d $ROOT ]]; then
  # nothing may stay mounted under the root before it goes (overlay2 layers, container shm)
  if grep -q " $ROOT/" /proc/mounts; then
    grep " $ROOT/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  fi
  rm -rf "$ROOT" && log "removed $ROOT"
fi
