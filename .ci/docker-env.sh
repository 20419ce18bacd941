# Sourced by the .ci/*dockerd*.sh scripts: where this checkout's private Docker Engine lives.
#
# One root per checkout (ENGINES_DOCKER_ROOT overrides it): /tmp/engines-docker-<10 hex of the
# sha256 of the checkout's real path>, so two checkouts on one machine never share (or stop)
# each other's daemon, images or containers. Socket: $ROOT/docker.sock.
_engines_checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
ENGINES_DOCKER_ROOT=${ENGINES_DOCKER_ROOT:-/tmp/engines-docker-$(printf %s "$_engines_checkout" | sha256sum | cut -c1-10)}
ENGINES_DOCKER_SOCK="$ENGINES_DOCKER_ROOT/docker.sock"
ENGINES_DOCKER_HOST="unix://$ENGINES_DOCKER_SOCK"
