#!/usr/bin/env bash
# Create an SROS2 keystore and the facerec enclaves, with the permissions of
# config/security/policy.xml, then print the environment to export.
#
#   scripts/make_security.sh [KEYSTORE] [NAMESPACE]
#     KEYSTORE   default ~/.ros/facerec_keystore (created if missing; reused if present)
#     NAMESPACE  e.g. robot1 when the launch files get namespace:=robot1 (default: none)
#
# Needs a sourced ROS 2 with sros2 (`ros2 security`) and an rmw with DDS security
# (rmw_fastrtps_cpp or rmw_cyclonedds_cpp built with security). Two machines: run this once,
# then copy KEYSTORE/public and KEYSTORE/enclaves/facerec/camera to the robot and
# KEYSTORE/public plus KEYSTORE/enclaves/facerec/{server,bridge,operator,viewer} to the
# workstation; never copy KEYSTORE/private (the CA keys) off the machine that made it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEYSTORE="${1:-$HOME/.ros/facerec_keystore}"
NAMESPACE="${2:-}"
POLICY="$ROOT/config/security/policy.xml"
if [ ! -f "$POLICY" ] && command -v ros2 >/dev/null; then  # installed package, no source tree
    POLICY="$(ros2 pkg prefix facerec)/share/facerec/config/security/policy.xml"
fi
ENCLAVES=(/facerec/camera /facerec/server /facerec/bridge /facerec/operator /facerec/viewer)

if ! command -v ros2 >/dev/null || ! ros2 security --help >/dev/null 2>&1; then
    echo "make_security: 'ros2 security' not found: source a ROS 2 install with sros2" >&2
    exit 1
fi
[ -f "$POLICY" ] || { echo "make_security: $POLICY not found" >&2; exit 1; }

if [ -n "$NAMESPACE" ]; then
    # The profiles are written for the root namespace; relative names follow ns="...".
    NAMESPACE="/${NAMESPACE#/}"
    NAMESPACE="${NAMESPACE%/}"
    case "$NAMESPACE" in
        *[!A-Za-z0-9_/]*) echo "make_security: invalid namespace $NAMESPACE" >&2; exit 1 ;;
    esac
    TMP_POLICY="$(mktemp --suffix=.xml)"
    trap 'rm -f "$TMP_POLICY"' EXIT
    sed "s|<profile ns=\"/\" |<profile ns=\"$NAMESPACE\" |" "$POLICY" >"$TMP_POLICY"
    POLICY="$TMP_POLICY"
fi

if [ ! -d "$KEYSTORE/public" ]; then
    ros2 security create_keystore "$KEYSTORE"
fi
for enclave in "${ENCLAVES[@]}"; do
    if [ ! -d "$KEYSTORE/enclaves$enclave" ]; then
        ros2 security create_enclave "$KEYSTORE" "$enclave"
    fi
    # Replace the enclave's default permissions with the policy's (signed by the keystore).
    ros2 security create_permission "$KEYSTORE" "$enclave" "$POLICY"
done

cat <<EOT

# facerec: SROS2 keystore ready in $KEYSTORE${NAMESPACE:+ (namespace $NAMESPACE)}. Export:
export ROS_SECURITY_KEYSTORE="$KEYSTORE"
export ROS_SECURITY_ENABLE=true
export ROS_SECURITY_STRATEGY=Enforce
# then, for example:
#   ros2 launch facerec bringup.launch.py use_security:=true${NAMESPACE:+ namespace:=${NAMESPACE#/}}
#   ROS_SECURITY_ENCLAVE_OVERRIDE=/facerec/operator ros2 param list --no-daemon
EOT
