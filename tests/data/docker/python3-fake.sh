#!/bin/sh
# Stand-in for python3 in the test image (tests/test_docker.py), for code that imports
# Ultralytics: it does to the file system what importing Ultralytics 8.4 does
# (ultralytics/utils/__init__.py, get_user_config_dir and SettingsManager):
# - settings in ${YOLO_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}}/Ultralytics/settings.json;
#   a folder it cannot create: a WARNING and a private /tmp/Ultralytics-<uid> instead;
# - a missing settings.json is written; code that exports writes it once more (the real exporter
#   sets openvino_msg to false), and a write it cannot make is Ultralytics' red
#   "ERROR ❌ Error writing to .../settings.json: [Errno 13] Permission denied", run not failed.
# The image build's import check (the block spliced in from Dockerfile.build) runs this as root.
[ "${1:-}" = -c ] || { echo "python3 stand-in: only -c CODE" >&2; exit 2; }
code=$2
case "$code" in *ultralytics*) ;; *) exit 0 ;; esac
dir="${YOLO_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}}/Ultralytics"
if ! mkdir -p "$dir" 2>/dev/null; then
  alt="/tmp/Ultralytics-$(id -u)"
  mkdir -p "$alt"
  echo "WARNING ⚠️ user config directory '$dir' is not writable, using '$alt'. Set YOLO_CONFIG_DIR to override." >&2
  dir=$alt
fi
save() {
  { echo "$1" > "$dir/settings.json"; } 2>/dev/null \
    || echo "ERROR ❌ Error writing to $dir/settings.json: [Errno 13] Permission denied: '$dir/settings.json'" >&2
}
[ -f "$dir/settings.json" ] || save '{"openvino_msg": true}'
case "$code" in
  *export*) grep -q '"openvino_msg": true' "$dir/settings.json" 2>/dev/null && save '{"openvino_msg": false}' ;;
esac
case "$code" in *tensorrt.__version__*) echo "tensorrt 10.99.0.1-test (stand-in)" ;; esac
exit 0
