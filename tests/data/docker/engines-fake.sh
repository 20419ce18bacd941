#!/bin/sh
# Stand-in for the `engines` CLI inside the tiny test image (tests/test_docker.py):
#   engines sh 'SCRIPT'   run a shell script: log, exit-code and mount tests
#   engines sleep N       print "sleeping", then become a process with no signal handler
#                         (as a busy builder is to SIGTERM): the SIGINT-without-TTY test
#   engines json          one JSON document on stdout, a progress line on stderr (--json tests)
#   engines run [ARGS]    what the compose test checks: default command, args, env,
#                         user, the models bind mount and the timing-cache volume; it
#                         "exports" through the python3 stand-in (Ultralytics' settings.json)
case "$1" in
  sh) exec /bin/sh -c "$2" ;;
  sleep) echo sleeping; exec sleep "$2" ;;
  json) echo "progress on stderr" >&2; echo "{\"ok\": true, \"uid\": $(id -u)}" ;;
  run)
    echo "engines $*"
    echo "config=$ENGINES_CONFIG model=${ENGINES_RUN_MODEL:-}"
    mkdir -p /workspace/models/engines || exit 3
    python3 -c "import ultralytics  # export"   # what every real run's export does to its settings
    echo "$(id -u):$(id -g) $*" > /workspace/models/engines/fake-run.txt || exit 3
    touch "$ENGINES_TIMING_CACHE/probe-$(id -u)" || exit 4
    ls "$ENGINES_TIMING_CACHE"
    echo "fake run done"
    ;;
  *) echo "fake engines: unknown command '$1'" >&2; exit 2 ;;
esac
