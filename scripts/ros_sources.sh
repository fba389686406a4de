#!/usr/bin/env bash
# ROS 2 packages that no reachable registry ships, installed from unmodified source trees
# when no sourced ROS 2 distribution provides them (called by setup.sh; idempotent).
#
#   tools: launch, launch_ros, launch_testing(_ros), ros2cli (ros2 launch/param/topic/service/
#          node/pkg/run), rosidl_runtime_py (pure Python: pip into .venv) and
#          composition_interfaces (rosidl: colcon build into .venv/ros_src/install).
#          Source: $FACEREC_ROS_TOOLS_SRC, else <repo>/../shared/ros-tools-src.
#   msgs:  vision_msgs, hri_msgs, foxglove_msgs (rosidl: colcon build into .venv/ros_src/install;
#          foxglove_msgs needs ros_environment at build time only, built into
#          .venv/ros_src/buildtime, which is never sourced: it would set ROS_DISTRO=rolling).
#          Source: $FACEREC_ROS_MSGS_SRC, else <repo>/../shared/ros-msgs-src.
#
# Without a source folder its part is not installed: `ros2 launch` and `ros2 param` are then
# missing and the launch_testing tests skip; the server runs without the outputs that need
# the missing message packages and their tests skip; each names what is missing.
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

MSGS_SRC="${FACEREC_ROS_MSGS_SRC:-$ROOT/../shared/ros-msgs-src}"
MSGS=(vision_msgs/vision_msgs hri_msgs foxglove_msgs/ros_foxglove_msgs)
MSGS_BUILDTIME=(ros_environment)

msgs_importable() {
    "$PY" -c "import vision_msgs.msg, hri_msgs.msg, foxglove_msgs.msg" >/dev/null 2>&1
}

# colcon_build <install base> <paths...>: one merged colcon workspace under .venv/ros_src.
colcon_build() {
    local base="$1"; shift
    "$PY" -m colcon --log-base "$WS/log" build --merge-install --paths "$@" \
        --build-base "$WS/build" --install-base "$base" \
        --event-handlers console_cohesion- summary+ status- \
        --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -Wno-dev \
        >"$WS.log" 2>&1 || { cat "$WS.log" >&2; log "colcon build of $* FAILED"; exit 1; }
}

# source_hash <folder> <lists...>: what a part was installed from (re-install on change).
source_hash() {
    local folder="$1"; shift
    { cat "$folder/SOURCES.txt" 2>/dev/null; cat "$ROOT/requirements/ros-tools.txt";
      printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1
}

# --- tools ---------------------------------------------------------------------------------
install_tools() {
    local stamp="$VENV/facerec-ros-tools.sha256" want copy p
    if [ ! -d "$TOOLS_SRC" ]; then
        if tools_importable; then
            log "ROS 2 launch/CLI tools: from the ROS 2 distribution"
        else
            log "NOTE: no ROS 2 launch/CLI tools: $TOOLS_SRC does not exist (set"
            log "      FACEREC_ROS_TOOLS_SRC); 'ros2 launch' / 'ros2 param' are unavailable and"
            log "      the launch_testing tests skip"
        fi
        return
    fi
    TOOLS_SRC="$(cd "$TOOLS_SRC" && pwd)"
    want="$(source_hash "$TOOLS_SRC" "${TOOLS_PY[@]}" "${TOOLS_MSGS[@]}")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && tools_importable; then
        log "ROS 2 launch/CLI tools up to date (from $TOOLS_SRC)"
        return
    fi
    if [ "$(cat "$VENV/facerec-mode")" = system ] && tools_importable; then
        log "ROS 2 launch/CLI tools: from the ROS 2 distribution"
        return
    fi
    log "installing the ROS 2 launch/CLI tools from $TOOLS_SRC"
    pip_quiet -r "$ROOT/requirements/ros-tools.txt"
    # pip builds setuptools packages in their folder: work on a copy, never in the source tree.
    copy="$(mktemp -d)"
    cp -r "$TOOLS_SRC/." "$copy/"
    local args=()
    for p in "${TOOLS_PY[@]}"; do args+=("$copy/$p"); done
    pip_quiet --no-deps --no-build-isolation "${args[@]}"
    rm -rf "$copy"
    local paths=()
    for p in "${TOOLS_MSGS[@]}"; do paths+=("$TOOLS_SRC/$p"); done
    colcon_build "$WS/install" "${paths[@]}"
    echo "$want" > "$stamp"
    log "ROS 2 launch/CLI tools installed: ros2 launch, ros2 param, ros2 topic, ros2 service, launch_test"
}

# --- message packages ----------------------------------------------------------------------
install_msgs() {
    local stamp="$VENV/facerec-ros-msgs.sha256" want p
    if [ ! -d "$MSGS_SRC" ]; then
        if msgs_importable; then
            log "vision_msgs, hri_msgs, foxglove_msgs: from the ROS 2 distribution"
        else
            log "NOTE: $MSGS_SRC does not exist (set FACEREC_ROS_MSGS_SRC): no vision_msgs,"
            log "      hri_msgs, foxglove_msgs; the outputs that need them are off and their tests skip"
        fi
        return
    fi
    MSGS_SRC="$(cd "$MSGS_SRC" && pwd)"
    want="$(source_hash "$MSGS_SRC" "${MSGS[@]}" "${MSGS_BUILDTIME[@]}")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && msgs_importable; then
        log "vision_msgs, hri_msgs, foxglove_msgs up to date (from $MSGS_SRC)"
        return
    fi
    if [ "$(cat "$VENV/facerec-mode")" = system ] && msgs_importable; then
        log "vision_msgs, hri_msgs, foxglove_msgs: from the ROS 2 distribution"
        return
    fi
    log "building vision_msgs, hri_msgs, foxglove_msgs from $MSGS_SRC (a few minutes)"
    local buildtime=() paths=()
    for p in "${MSGS_BUILDTIME[@]}"; do buildtime+=("$MSGS_SRC/$p"); done
    for p in "${MSGS[@]}"; do paths+=("$MSGS_SRC/$p"); done
    colcon_build "$WS/buildtime" "${buildtime[@]}"
    (   # ros_environment's hook sets ROS_VERSION (foxglove_msgs' CMakeLists reads it) and
        # ROS_DISTRO: only in this subshell.
        set +u
        # shellcheck source=/dev/null
        source "$WS/buildtime/local_setup.bash"
        set -u
        colcon_build "$WS/install" "${paths[@]}"
    )
    echo "$want" > "$stamp"
    log "vision_msgs, hri_msgs, foxglove_msgs installed"
}

install_tools
install_msgs
