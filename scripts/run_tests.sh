#!/usr/bin/env bash
# Run lint and the test suite in the project's environment, on loopback DDS with a
# per-run ROS domain (no test traffic leaves this machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=/dev/null
source scripts/env.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 1 + $$ % 100 ))}"
echo "[test] ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery on localhost only"
python -m flake8 --config setup.cfg facerec_server facerec_camera test bench launch scripts setup.py
echo "[test] flake8: clean"
exec python -m pytest "$@"
