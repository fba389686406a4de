#!/usr/bin/env bash
# The README's main job. Until the camera-to-results demo exists this runs the two-process
# facerec_msgs exchange over DDS (loopback only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=/dev/null
source scripts/env.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 1 + $$ % 100 ))}"
exec python -m facerec_server.tools.exchange_demo
