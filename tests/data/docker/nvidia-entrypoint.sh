#!/bin/sh
# Stand-in for NGC's /opt/nvidia/nvidia_entrypoint.sh: like the public one, a banner on
# stdout, then `exec "$@"`.
echo
echo "== TensorRT (stand-in for the NGC banner) =="
echo "NVIDIA Release 25.08 (stand-in)"
echo
exec "$@"
