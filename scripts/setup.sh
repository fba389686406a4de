#!/usr/bin/env bash
# Set up facerec: Python environment, ROS 2 (system or PyPI wheels), then colcon build.
#
# Idempotent: re-running only installs what is missing and rebuilds what changed.
#   * A sourced ROS 2 distribution (Humble, Jazzy, Kilted) whose rclpy imports is used as is;
#     .venv/ then sees its packages (--system-site-packages) and only adds our pip deps.
#   * Otherwise .venv/ gets ROS 2 Kilted from PyPI (requirements/ros-wheels.txt).
#   * ROS 2 packages no registry ships (launch, ros2cli, launch_testing...) are installed
#     from source trees when the ROS 2 in use lacks them (scripts/ros_sources.sh).
#   * Root only: Debian packages the tests use: opencv-doc (messi5.jpg, a real face),
#     postgresql (the PostgreSQL gallery tests start their own server), nftables and iproute2
#     (the two-host test's simulated link), chromium and chromium-driver (the real browser of
#     the web page's tests).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- 1. Which ROS? -----------------------------------------------------------------------
MODE=wheels
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON_BIN" -c "import rclpy" >/dev/null 2>&1; then
    MODE=system
    log "using the sourced ROS 2 $ROS_DISTRO"
else
    log "no ROS 2 sourced: using ROS 2 Kilted wheels from PyPI in .venv/"
fi

# --- 2. Virtual environment ------------------------------------------------------------
if [ -f "$VENV/facerec-mode" ] && [ "$(cat "$VENV/facerec-mode")" != "$MODE" ]; then
    log "existing .venv/ was made for '$(cat "$VENV/facerec-mode")' ROS; recreating it for '$MODE'"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    if [ "$MODE" = system ]; then
        "$PYTHON_BIN" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON_BIN" -m venv "$VENV"
    fi
fi
echo "$MODE" > "$VENV/facerec-mode"
if [ "$MODE" = system ]; then echo "${ROS_DISTRO}" > "$VENV/facerec-ros-distro"; fi
PY="$VENV/bin/python"

# pip runs only when a requirements file changed since the last successful install.
REQS=(requirements/python.txt requirements/test.txt requirements/build.txt)
[ "$MODE" = wheels ] && REQS+=(requirements/ros-wheels.txt)
# Installed without dependencies (it declares opencv-python, which would clash with the
# headless OpenCV): see the file's comment.
NODEPS=requirements/original-client.txt
STAMP="$VENV/facerec-requirements.sha256"
WANT="$(cat "${REQS[@]}" "$NODEPS" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    log "installing Python packages (pinned): ${REQS[*]}"
    _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 \
        | { grep -v "^WARNING: Location .* is ignored" || true; }
    ARGS=()
    for r in "${REQS[@]}"; do ARGS+=(-r "$r"); done
    _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -m pip install -q --disable-pip-version-check "${ARGS[@]}" 2>&1 \
        | { grep -v "^WARNING: Location .* is ignored" || true; }
    _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -m pip install -q --disable-pip-version-check --no-deps -r "$NODEPS" 2>&1 \
        | { grep -v "^WARNING: Location .* is ignored" || true; }
    echo "$WANT" > "$STAMP"
else
    log "Python packages up to date"
fi

# --- 3. Wheel pitfall: CMake exports that name the wheel builder's include folders ------
if [ "$MODE" = wheels ]; then
    _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" "$ROOT/scripts/fix_wheel_cmake.py" "$VENV"
fi

# --- 4. ROS 2 launch system and command-line tools (not on PyPI) ---------------------------
# shellcheck source=/dev/null
FACEREC_ENV_NO_INSTALL=1 source "$ROOT/scripts/env.sh"
bash "$ROOT/scripts/ros_sources.sh" "$ROOT" "$VENV"

# --- 5. Debian packages the tests use (root only) ------------------------------------------
# opencv-doc: messi5.jpg, a real face; postgresql: initdb/postgres for the PostgreSQL gallery
# tests (they start their own server in a temporary folder; no system service is needed);
# nftables, iproute2: two simulated hosts (test/test_two_hosts.py, bench/bench_link.py);
# chromium, chromium-driver: the real browser the web page's tests drive (test/webutil.py).
MESSI=/usr/share/doc/opencv-doc/examples/data/messi5.jpg
APT=()
[ -f "$MESSI" ] || APT+=(opencv-doc)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null \
    || APT+=(postgresql)
{ command -v nft && command -v tc && command -v ip; } >/dev/null || APT+=(nftables iproute2)
[ -x /usr/bin/chromium ] || APT+=(chromium)
[ -x /usr/bin/chromedriver ] || APT+=(chromium-driver)
if [ "${#APT[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing Debian packages the tests use: ${APT[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT[@]}" >/dev/null
    else
        log "NOTE: the tests need Debian's ${APT[*]}: run 'sudo apt-get install ${APT[*]}'"
    fi
fi

# --- 6. Build both packages with colcon ---------------------------------------------------
log "colcon build (facerec, facerec_msgs)"
# colcon stops crawling at the root package.xml, so the nested facerec_msgs is named too.
"$PY" -m colcon --log-base "$ROOT/log" build \
    --base-paths "$ROOT" "$ROOT/facerec_msgs" \
    --build-base "$ROOT/build" --install-base "$ROOT/install" \
    --event-handlers console_cohesion- summary+ status- \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -Wno-dev \
    >"$ROOT/build-colcon.log" 2>&1 || { cat "$ROOT/build-colcon.log" >&2; log "colcon build FAILED"; exit 1; }
tail -n 3 "$ROOT/build-colcon.log" >&2
# --- 6. Compile the HOG detector's kernels (numba) into ~/.cache/facerec/numba -------------
# for the source tree and the installed copy (nodes import the latter), so that no node or
# test waits for the compiler on its first frame
log "compiling facerec_server.dlibhog's kernels (cached)"
(cd "$ROOT" && "$PY" -m facerec_server.dlibhog) >&2 || log "NOTE: compiling the kernels failed"
INSTALLED_SITE="$(echo "$ROOT"/install/facerec/lib/python3*/site-packages)"
(cd / && PYTHONPATH="$INSTALLED_SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m facerec_server.dlibhog) >&2 \
    || log "NOTE: compiling the installed kernels failed"
touch "$ROOT/install/.facerec-setup-done"
log "done: 'source scripts/env.sh' gives a shell with rclpy, facerec_msgs and the entry points"
