# Source me: a shell where `python3 -c "import rclpy, facerec_msgs.msg"` works and the
# facerec entry points are on PATH, whether ROS 2 comes from the system or from .venv/.
#   source scripts/env.sh
# (Made by `make setup`.)
_facerec_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_facerec_venv="$_facerec_root/.venv"
if [ ! -x "$_facerec_venv/bin/python" ]; then
    echo "facerec: $_facerec_venv missing; run 'make setup' first" >&2
    return 1 2>/dev/null || exit 1
fi
_facerec_mode="$(cat "$_facerec_venv/facerec-mode" 2>/dev/null || echo wheels)"
if [ "$_facerec_mode" = system ]; then
    _facerec_distro="$(cat "$_facerec_venv/facerec-ros-distro")"
    if [ -z "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/$_facerec_distro/setup.bash" ]; then
        # shellcheck source=/dev/null
        source "/opt/ros/$_facerec_distro/setup.bash"
    fi
fi
export VIRTUAL_ENV="$_facerec_venv"
export PATH="$_facerec_venv/bin:$PATH"
if [ "$_facerec_mode" = wheels ]; then
    _facerec_site="$("$_facerec_venv/bin/python" -c 'import sys; print(f"{sys.prefix}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")' 2>/dev/null)"
    _facerec_ld="$_facerec_venv/lib"
    for _d in "$_facerec_site"/ros_*.libs; do [ -d "$_d" ] && _facerec_ld="$_facerec_ld:$_d"; done
    export LD_LIBRARY_PATH="$_facerec_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # The venv's ros_wheels_bootstrapper would otherwise re-exec every interpreter once.
    export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
    export AMENT_PREFIX_PATH="$_facerec_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export CMAKE_PREFIX_PATH="$_facerec_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    unset _d _facerec_site _facerec_ld
fi
# colcon's scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _facerec_u=1; set +u ;; *) _facerec_u= ;; esac
if [ -f "$_facerec_venv/ros_src/install/local_setup.bash" ]; then
    # ROS 2 packages built from source by scripts/ros_sources.sh (composition_interfaces ...)
    # shellcheck source=/dev/null
    source "$_facerec_venv/ros_src/install/local_setup.bash"
fi
if [ -z "${FACEREC_ENV_NO_INSTALL:-}" ]; then
    if [ -f "$_facerec_root/install/local_setup.bash" ]; then
        # shellcheck source=/dev/null
        source "$_facerec_root/install/local_setup.bash"
        # ament_python puts console scripts in lib/<pkg> (for `ros2 run`); put them on PATH too.
        export PATH="$_facerec_root/install/facerec/lib/facerec:$PATH"
    else
        echo "facerec: install/ missing; run 'make setup' to build the packages" >&2
    fi
fi
if [ -n "$_facerec_u" ]; then set -u; fi
unset _facerec_u
unset _facerec_root _facerec_venv _facerec_mode _facerec_distro
