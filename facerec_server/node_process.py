"""How a facerec node process starts and stops (server, bridge and camera ``main()``).

* The console scripts ``facerec_server``, ``facerec_bridge`` and ``facerec_camera`` enter
  through :func:`server`, :func:`bridge` and :func:`camera`: the SIGINT handling below is in
  place before the node's module is imported (dlib, OpenCV: a second or two), so a Ctrl-C
  (or a launch stopping because another node failed) during that time ends the process
  quietly with exit code 0 instead of a KeyboardInterrupt traceback.
* :func:`init` starts rclpy; when it cannot (a security set-up without keystore, a bad
  ``--ros-args``) it prints one line saying why and what to check, instead of a traceback.
* :func:`stopping` marks the start of the clean-up, which a further Ctrl-C must not break.
  ``ros2 launch`` whose stdin is not a terminal (``timeout -s INT 20 ros2 launch ...``, a
  service manager, a CI job) sends each node its own SIGINT on top of the one the process
  group got, so a node receives two within milliseconds: the first starts the shutdown, the
  second used to raise KeyboardInterrupt inside it (joining the capture thread, the face
  worker pool, destroying the node), ending with a traceback and exit code -2. After the
  first SIGINT, or once :func:`stopping` was called, SIGINT is ignored; SIGTERM still ends
  the process (launch escalates to it when a node takes too long to stop).
* A SIGINT can arrive while Python runs code whose exceptions it ignores (a weakref
  callback of the import machinery, a ``__del__``): the KeyboardInterrupt raised there is
  lost, and Python would print "Exception ignored ... Traceback". That one is dropped
  silently (``sys.unraisablehook``), and :func:`init` does not start ROS once a SIGINT
  came: the process ends with exit code 0 as if the interrupt had not been lost.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import List, Optional

_stopping = False


def _ignore_sigint() -> None:
    # SIG_IGN rather than a handler that returns: Python puts the default action back for
    # its handlers when the interpreter finalizes, and a SIGINT arriving then would kill the
    # process with -2 after a clean shutdown. (rclpy's handler, if still installed, is
    # replaced: it is no longer needed.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_sigint(signum, frame) -> None:
    global _stopping
    if _stopping:
        return  # already stopping: let the clean-up finish
    _stopping = True
    _ignore_sigint()
    raise KeyboardInterrupt


def stopping() -> None:
    """From now on SIGINT is ignored: the process is shutting down."""
    global _stopping
    _stopping = True
    _ignore_sigint()


def _unraisable(info) -> None:
    if _stopping and isinstance(info.exc_value, KeyboardInterrupt):
        return  # our own interrupt, lost where Python ignores exceptions (module doc)
    sys.__unraisablehook__(info)


def _guard_sigint() -> None:
    sys.unraisablehook = _unraisable
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Before rclpy.init: rclpy's own handler calls this one after shutting rclpy down.
        # (Left alone when SIGINT is ignored, as in a background job of a shell.)
        signal.signal(signal.SIGINT, _on_sigint)


def run(module: str) -> int:
    """Import ``module`` and return its ``main()``: the console scripts' entry."""
    _guard_sigint()
    try:
        return importlib.import_module(module).main()
    except KeyboardInterrupt:  # stopped while importing, before main() took over
        return 0
    finally:
        stopping()  # also for the interpreter's own shutdown that follows


def server() -> int:
    return run("facerec_server.server_node")


def bridge() -> int:
    return run("facerec_server.bridge_node")


def camera() -> int:
    return run("facerec_camera.camera_node")


def init(node_name: str, args: Optional[List[str]] = None) -> bool:
    """``rclpy.init(args)`` with the SIGINT handling above; False after printing one line
    ``[<node_name>] cannot start ROS 2: <reason>`` on stderr when rclpy cannot start."""
    import rclpy
    _guard_sigint()
    if _stopping:  # a SIGINT came while importing and its KeyboardInterrupt was lost
        raise KeyboardInterrupt
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rclpy's RCLError and friends: a set-up problem, not a bug
        stopping()
        print(f"[{node_name}] cannot start ROS 2: {reason(exc)}", file=sys.stderr)
        return False
    return True


def reason(exc: BaseException) -> str:
    """One line: what rclpy said, and for a security set-up what to check."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if os.environ.get("ROS_SECURITY_ENABLE", "").lower() == "true":
        keystore = os.environ.get("ROS_SECURITY_KEYSTORE", "")
        text += (f" (ROS_SECURITY_ENABLE=true: ROS_SECURITY_KEYSTORE="
                 f"{keystore or '(not set)'} must be a keystore holding this node's enclave; "
                 "make one with scripts/make_security.sh, or unset ROS_SECURITY_ENABLE)")
    return text
