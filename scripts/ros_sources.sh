#!/usr/bin/env bash
# ROS 2 packages that no reachable registry ships, installed from unmodified source trees
# when no sourced ROS 2 distribution provides them (called by setup.sh; idempotent).
#
#   tools: launch, launch_ros, launch_testing(_ros), ros2cli (ros2 launch/param/topic/service/
#          node/pkg/run), rosidl_runtime_py (pure Python: pip into .venv) and
#          composition_interfaces (rosidl: colcon build into .venv/ros_src/install).
#          Source: $FACEREC_ROS_TOOLS_SRC, else <repo>/../shared/ros-tools-src.
#
# Without the source folder nothing is installed: `ros2 launch` and `ros2 param` are then
# missing and the launch_testing tests skip, naming what is missing.
#
# Usage: ros_sources.sh <repo root> <venv>     (setup.sh has sourced env.sh, FACEREC_ENV_NO_INSTALL)
set -euo pipefail

ROOT="$1"
VENV="$2"
PY="$VENV/bin/python"
WS="$VENV/ros_src"  # colcon workspace of the rosidl packages built from source
log() { printf '[setup] %s\n' "$*" >&2; }
pip_quiet() {
    _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location .* is ignored" || true; }
}

TOOLS_SRC="${FACEREC_ROS_TOOLS_SRC:-$ROOT/../shared/ros-tools-src}"
# The pure-Python packages, in dependency order (pip --no-deps: their PyPI dependencies are
# in requirements/ros-tools.txt, the ROS ones come from the Kilted wheels or this list).
TOOLS_PY=(launch/launch launch/launch_xml launch/launch_yaml launch/launch_testing
          rosidl_runtime_py launch_ros/launch_ros launch_ros/launch_testing_ros
          ros2cli/ros2cli ros2cli/ros2node ros2cli/ros2service ros2cli/ros2param ros2cli/ros2topic
          ros2cli/ros2pkg ros2cli/ros2run launch_ros/ros2launch)
TOOLS_MSGS=(rcl_interfaces/composition_interfaces)

tools_importable() {
    "$PY" - <<'EOF' >/dev/null 2>&1
import composition_interfaces.srv, launch, launch_ros, launch_testing, launch_testing_ros  # noqa
import ros2cli, ros2launch, ros2param, ros2topic, ros2service, rosidl_runtime_py  # noqa
EOF
}

STAMP="$VENV/facerec-ros-tools.sha256"
if [ ! -d "$TOOLS_SRC" ]; then
    if tools_importable; then
        log "ROS 2 launch/CLI tools: from the ROS 2 distribution"
    else
        log "NOTE: no ROS 2 launch/CLI tools: $TOOLS_SRC does not exist (set FACEREC_ROS_TOOLS_SRC);"
        log "      'ros2 launch' / 'ros2 param' are unavailable and the launch_testing tests skip"
    fi
    exit 0
fi
TOOLS_SRC="$(cd "$TOOLS_SRC" && pwd)"
WANT="$( { cat "$TOOLS_SRC/SOURCES.txt" 2>/dev/null; cat "$ROOT/requirements/ros-tools.txt";
           printf '%s\n' "${TOOLS_PY[@]}" "${TOOLS_MSGS[@]}"; } | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && tools_importable; then
    log "ROS 2 launch/CLI tools up to date (from $TOOLS_SRC)"
    exit 0
fi
if [ "$(cat "$VENV/facerec-mode")" = system ] && tools_importable; then
    log "ROS 2 launch/CLI tools: from the ROS 2 distribution"
    exit 0
fi

log "installing the ROS 2 launch/CLI tools from $TOOLS_SRC"
pip_quiet -r "$ROOT/requirements/ros-tools.txt"
# pip builds setuptools packages in their folder: work on a copy, never in the source tree.
COPY="$(mktemp -d)"
trap 'rm -rf "$COPY"' EXIT
cp -r "$TOOLS_SRC/." "$COPY/"
ARGS=()
for p in "${TOOLS_PY[@]}"; do ARGS+=("$COPY/$p"); done
pip_quiet --no-deps --no-build-isolation "${ARGS[@]}"

PATHS=()
for p in "${TOOLS_MSGS[@]}"; do PATHS+=("$TOOLS_SRC/$p"); done
"$PY" -m colcon --log-base "$WS/log" build --merge-install --paths "${PATHS[@]}" \
    --build-base "$WS/build" --install-base "$WS/install" \
    --event-handlers console_cohesion- summary+ status- \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -Wno-dev \
    >"$WS.log" 2>&1 || { cat "$WS.log" >&2; log "building ${TOOLS_MSGS[*]} FAILED"; exit 1; }
echo "$WANT" > "$STAMP"
log "ROS 2 launch/CLI tools installed: ros2 launch, ros2 param, ros2 topic, ros2 service, launch_test"
