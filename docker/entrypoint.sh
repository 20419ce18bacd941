#!/bin/sh
# Entry point of the builder image (Dockerfile.build), in front of NVIDIA's:
#
#   engines-entrypoint ARGS...  ->  /opt/nvidia/nvidia_entrypoint.sh engines ARGS...
#
# 1. Who runs: started as root (docker-compose.build.yml's default `user: 0:0`, or a plain
#    `docker run` as root) it becomes the owner (uid:gid) of the mounted models folder, so the
#    engines written there belong to whoever owns ./models on the host. Started as any other
#    user (`--user`, UID/GID in compose's environment or .env), it keeps that user. A models
#    folder owned by root keeps root.
# 2. stdout: NVIDIA's entrypoint prints its banner on stdout; here it goes to stderr and the
#    command gets the container's real stdout back, so `engines --json ...` is one JSON
#    document on stdout.
# 3. Ultralytics' settings: see below.
# ARGS go to `engines`; an absolute path as the first one runs that program instead
# (engines-check in docker-compose.prod.full.yml: /bin/sh -ec '...').
set -eu
models=${ENGINES_MODELS_MOUNT:-/workspace/models}

if [ "${1:-}" = --stdout-restored ]; then   # second stage, run by NVIDIA's entrypoint
  shift
  exec 1>&3 3>&-
  # 3. Ultralytics keeps its settings.json in $YOLO_CONFIG_DIR/Ultralytics/ and writes it on every
  #    export; where this user cannot (a read-only root file system, files of another uid), a
  #    folder of this uid in /tmp instead, so no run prints Ultralytics' red "ERROR ... Permission denied".
  ucfg="${YOLO_CONFIG_DIR:-${XDG_CONFIG_HOME:-${HOME:-/tmp}/.config}}/Ultralytics"
  if ! { mkdir -p "$ucfg" && [ -w "$ucfg" ] && { [ ! -e "$ucfg/settings.json" ] || [ -w "$ucfg/settings.json" ]; }; } 2>/dev/null
  then
    export YOLO_CONFIG_DIR="${TMPDIR:-/tmp}/engines-$(id -u)"
  fi
  case "${1:-}" in
    /*) exec "$@" ;;
    *) exec engines "$@" ;;
  esac
fi

if [ "$(id -u)" = 0 ] && [ -d "$models" ]; then
  uid=$(stat -c %u "$models")
  gid=$(stat -c %g "$models")
  if [ "$uid" != 0 ]; then
    exec /usr/bin/setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$0" "$@"
  fi
fi

exec 3>&1 1>&2
# the NGC set-up and Python's start take a while before `engines` prints its first line: say so
echo "engines-entrypoint: starting as uid $(id -u) (NVIDIA's CUDA set-up, then Python: a few seconds)"
exec "${NVIDIA_ENTRYPOINT:-/opt/nvidia/nvidia_entrypoint.sh}" "$0" --stdout-restored "$@"
