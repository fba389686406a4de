"""What launch/*.launch.py share: how a facerec node is started and what its exit means.

* :func:`ros_arguments`: ``--log-level`` and, with security on, ``--enclave``.
* :func:`node_options`: output to the screen, emulating a terminal only when ros2 launch's
  own output is one (so logs redirected to a file or a pipe hold no colour codes; set
  ``RCUTILS_COLORIZED_OUTPUT=1`` to force colours), unbuffered Python output, and
  :func:`required` as ``on_exit``.
* :func:`required`: a facerec node is required. When it exits the launch ends; when it
  exits with a non-zero code (a bridge without certificates, security enabled without a
  keystore, a crash) ``ros2 launch`` ends with a non-zero code too (launch reports an error
  only for an exception, so one is raised; it prints one line naming the node and its code).
* :func:`installed` and :func:`warn`: an optional viewer (rviz2) that is not installed is
  reported and the rest runs, instead of launch failing with nodes left running.

Importing this module needs neither launch nor launch_ros (tests read its constants).
"""
from __future__ import annotations

import sys
from typing import List

PACKAGE = "facerec"
BOOLEAN = ["true", "false"]
LOG_LEVELS = ["debug", "info", "warn", "error", "fatal"]


class RequiredNodeFailed(RuntimeError):
    """A required node exited with a non-zero code: ros2 launch must not exit with 0."""


def ros_arguments(log_level: str, use_security: str, enclave: str) -> List[str]:
    """--ros-args of a node: its log level, and its SROS2 enclave when security is on."""
    args = ["--log-level", log_level]
    if use_security == "true":
        args += ["--enclave", enclave]
    return args


def node_options() -> dict:
    """Keyword arguments of launch_ros ``Node`` for a facerec node (see the module doc)."""
    return {"output": "screen", "emulate_tty": sys.stdout.isatty(),
            "additional_env": {"PYTHONUNBUFFERED": "1"}, "on_exit": required}


def required(event, context):
    """``on_exit`` of a required node (``event`` is launch's ProcessExited)."""
    from launch.actions import Shutdown
    if event.returncode != 0:
        raise RequiredNodeFailed(f"{event.process_name} exited with code {event.returncode}: "
                                 "a required node, stopping the launch (see its output above)")
    if not context.is_shutdown:
        return [Shutdown(reason=f"{event.process_name} ended (a required node)")]
    return None


def installed(package: str) -> bool:
    """Whether the ROS package ``package`` is installed (in the ament index)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        get_package_prefix(package)
    except PackageNotFoundError:
        return False
    return True


def warn(message: str) -> None:
    """A warning in ros2 launch's output (``[WARNING] [launch]: <message>``)."""
    import launch.logging
    launch.logging.get_logger("launch").warning(message)
