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
* :func:`missing_files`: a parameter file argument naming no file ends the launch with an
  error (launch_ros alone only warns "Parameter file path is not a file" and starts the
  node with its built-in defaults: a typo or a renamed file would go unnoticed).
* :func:`installed` and :func:`warn`: an optional viewer (rviz2) that is not installed is
  reported and the rest runs, instead of launch failing with nodes left running.

An error found while a launch file is being read is raised from a zero-period timer, not on
the spot: an exception raised while launch is still starting the nodes of the same launch
description leaves those already started running after ros2 launch exits.

Importing this module needs neither launch nor launch_ros (tests read its constants).
"""
from __future__ import annotations

import os
import sys
from typing import Dict, Iterable, List, Optional

PACKAGE = "facerec"
BOOLEAN = ["true", "false"]
LOG_LEVELS = ["debug", "info", "warn", "error", "fatal"]


class RequiredNodeFailed(RuntimeError):
    """A required node exited with a non-zero code: ros2 launch must not exit with 0."""


class LaunchArgumentError(RuntimeError):
    """A launch argument that cannot work (a parameter file that does not exist)."""


def ros_arguments(log_level: str, use_security: str, enclave: str) -> List[str]:
    """--ros-args of a node: its log level, and its SROS2 enclave when security is on."""
    args = ["--log-level", log_level]
    if use_security == "true":
        args += ["--enclave", enclave]
    return args


def node_options(env: Optional[Dict[str, str]] = None) -> dict:
    """Keyword arguments of launch_ros ``Node`` for a facerec node (see the module doc);
    ``env``: more environment variables for the node (e.g. its transport profile)."""
    return {"output": "screen", "emulate_tty": sys.stdout.isatty(),
            "additional_env": {"PYTHONUNBUFFERED": "1", **(env or {})}, "on_exit": required}


def required(event, context):
    """``on_exit`` of a required node (``event`` is launch's ProcessExited)."""
    from launch.actions import Shutdown
    if event.returncode != 0:
        raise RequiredNodeFailed(f"{event.process_name} exited with code {event.returncode}: "
                                 "a required node, stopping the launch (see its output above)")
    if not context.is_shutdown:
        return [Shutdown(reason=f"{event.process_name} ended (a required node)")]
    return None


def missing_files(context, arguments: Iterable[str]) -> list:
    """[] when every launch argument in ``arguments`` names an existing file; otherwise the
    actions that end the launch with an error naming them (return them instead of nodes)."""
    from launch.substitutions import LaunchConfiguration
    missing = [f"{name}:={path}" for name in arguments
               for path in [LaunchConfiguration(name).perform(context)]
               if not os.path.isfile(path)]
    if not missing:
        return []
    return fail(f"no such parameter file: {', '.join(missing)} (the shipped ones are in "
                "$(ros2 pkg prefix facerec)/share/facerec/config)")


def fail(message: str) -> list:
    """Actions that end the launch with exit code 1 and ``message`` (see the module doc)."""
    from launch.actions import OpaqueFunction, TimerAction

    def error(context):
        raise LaunchArgumentError(message)
    return [TimerAction(period=0.0, actions=[OpaqueFunction(function=error)])]


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
