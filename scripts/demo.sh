#!/usr/bin/env bash
# The README's main job: the end-to-end demo (`make demo` runs `make setup` first).
#   bash scripts/demo.sh                      made video of two real faces, ends by itself
#   SOURCE=/dev/video0 bash scripts/demo.sh   a camera (or SOURCE=file.mp4) until Ctrl-C
# Output (video, fresh gallery, annotated snapshot, node logs) goes to demo-output/.
# Extra arguments go to `python -m facerec_server.tools.demo` (see its --help).
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=/dev/null
source scripts/env.sh  # (colcon's local_setup.bash is not `set -u` safe)
set -u
# DDS stays on this machine, in a domain of its own unless the user chose one.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
if [ "${ROS_DISTRO:-}" = humble ] || [ "${ROS_DISTRO:-}" = iron ]; then
    export ROS_LOCALHOST_ONLY=1
fi
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 1 + $$ % 100 ))}"
exec python -m facerec_server.tools.demo "$@"
