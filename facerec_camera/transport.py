"""The project's DDS transport settings as environment variables for a node (no ROS).

``config/fastdds.xml`` (every node) and ``config/fastdds_link.xml`` (the camera on the robot
side of a link: the same plus a flow controller of ``max_bandwidth`` Mbit/s) are Fast DDS XML
profiles; a process reads them at start from ``FASTDDS_DEFAULT_PROFILES_FILE``. The launch
files, the demo and the tests use :func:`profile_env` so the rules live in one place:

* a user who set ``FASTDDS_DEFAULT_PROFILES_FILE`` (or the Fast DDS 2 spelling
  ``FASTRTPS_DEFAULT_PROFILES_FILE``) keeps their own settings: nothing is added;
* the flow controller needs asynchronous publishing: ``RMW_FASTRTPS_PUBLICATION_MODE`` is set to
  ``ASYNCHRONOUS`` when unset; a user who chose ``SYNCHRONOUS`` gets ``fastdds.xml`` (no flow
  controller) instead, as Fast DDS refuses a flow controller with synchronous publishing.
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

PROFILE = "fastdds.xml"
LINK_PROFILE = "fastdds_link.xml"
#: The flow controller's budget, in bytes per 10 ms period (fastdds_link.xml).
LINK_VARIABLE = "FACEREC_LINK_BYTES_PER_10MS"
#: The camera launch file's default: below a 10 Mbit/s link (bench/bench_link.py).
DEFAULT_MAX_BANDWIDTH = 8.0
_USER_PROFILE = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def default_share_dir() -> str:
    """The folder holding ``config/fastdds.xml``: this checkout's root when run from one, else
    the installed ``share/facerec`` (ament index)."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, "config", PROFILE)):
        return checkout
    from ament_index_python.packages import get_package_share_directory
    return get_package_share_directory("facerec")


def link_bytes_per_period(max_bandwidth_mbit: float) -> int:
    """Bytes per 10 ms for a rate in Mbit/s (0 = no limit)."""
    if max_bandwidth_mbit < 0:
        raise ValueError(f"max_bandwidth must be >= 0 Mbit/s (0 = no limit), "
                         f"got {max_bandwidth_mbit:g}")
    return int(round(max_bandwidth_mbit * 1e6 / 8 / 100))


def profile_env(share_dir: str, max_bandwidth_mbit: Optional[float] = None,
                environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """Variables to add to a node's environment: the general profile, or with
    ``max_bandwidth_mbit`` the link profile paced to that rate (0 = no limit). ``share_dir``
    holds ``config/`` (the installed ``share/facerec`` or a checkout)."""
    config_dir = os.path.join(share_dir, "config")
    if any(environ.get(name) for name in _USER_PROFILE):
        return {}
    mode = environ.get("RMW_FASTRTPS_PUBLICATION_MODE", "")
    if max_bandwidth_mbit is None or mode.upper() == "SYNCHRONOUS":
        return {"FASTDDS_DEFAULT_PROFILES_FILE": os.path.join(config_dir, PROFILE)}
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": os.path.join(config_dir, LINK_PROFILE),
           LINK_VARIABLE: str(link_bytes_per_period(float(max_bandwidth_mbit)))}
    if not mode:
        env["RMW_FASTRTPS_PUBLICATION_MODE"] = "ASYNCHRONOUS"
    return env
