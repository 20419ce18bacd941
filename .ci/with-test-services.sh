#!/usr/bin/env bash
# Run a command (the test suite: `make test`) with the services the tests need, then stop
# what this script started, and only that:
#
#   bash .ci/with-test-services.sh VENV CMD [ARGS...]
#
# - this checkout's private Docker Engine (.ci/start-dockerd.sh): reused when it already
#   answers (`make docker-up`, or a run still going), started otherwise and then stopped at
#   the end, also on Ctrl-C. ENGINES_TEST_DOCKER_HOST=unix:///path uses that daemon instead.
# - Debian's docker-registry (distribution 2.8): installed with apt when missing;
#   tests/registry/ starts and stops its own instances on 127.0.0.1.
# When either cannot be had (not root, no apt, no network), the command still runs and the
# tests that need it skip, naming the reason (ENGINES_TEST_DOCKER_UNAVAILABLE).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=$1; shift
log() { echo "test-services: $*" >&2; }
started=0

if [[ -n ${ENGINES_TEST_DOCKER_HOST:-} ]]; then
  export DOCKER_HOST=$ENGINES_TEST_DOCKER_HOST
  log "Docker: using ENGINES_TEST_DOCKER_HOST=$DOCKER_HOST"
else
  t0=$SECONDS
  errlog=$(mktemp)
  if out=$(bash .ci/start-dockerd.sh "$VENV" 2> >(tee "$errlog" >&2)); then
    eval "$out"
    started=${ENGINES_DOCKERD_STARTED:-0}
    unset ENGINES_DOCKERD_STARTED
    ((started)) && log "Docker: started this checkout's dockerd in $((SECONDS - t0)) s; stopped when the tests end"
  else
    reason=$(grep 'start-dockerd:' "$errlog" | tail -n 1 | sed 's/^start-dockerd: //')
    export ENGINES_TEST_DOCKER_UNAVAILABLE="bash .ci/start-dockerd.sh failed: ${reason:-see its output}"
    unset DOCKER_HOST
    log "Docker: no daemon (${reason:-see above}); the Docker tests will skip with the reason"
  fi
  rm -f "$errlog"
fi
stop() { ((started)) && bash .ci/stop-dockerd.sh; started=0; }
trap 'stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v docker-registry >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's docker-registry for tests/registry/"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq docker-registry >&2 || { apt-get update -qq >&2 && apt-get install -y -qq docker-registry >&2; } \
      || log "docker-registry could not be installed; the registry tests will skip with the reason"
  else
    log "docker-registry missing and not root (or no apt): the registry tests will skip"
  fi
fi

"$@"
