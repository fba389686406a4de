"""How a facerec node process starts and stops (server, bridge and camera ``main()``).

* The console scripts ``facerec_server``, ``facerec_bridge`` and ``facerec_camera`` enter
  through :func:`server`, :func:`bridge` and :func:`camera`: the SIGINT and SIGTERM handling
  below is in place before the node's module is imported (dlib, OpenCV: a second or two),
  so a Ctrl-C or SIGTERM (or a launch stopping because another node failed) during that
  time ends the process quietly with exit code 0 instead of a KeyboardInterrupt traceback
  or death by the signal.
* :func:`starting` wraps a node's construction: once a signal has shut rclpy down under it
  (rclpy's own handler does that at once, so the start-up's next rclpy call fails with
  "context is invalid"), whatever the start-up raises ends it quietly with exit code 0.
* A signal can arrive while Python runs a callback whose exceptions it cannot raise (a
  weakref callback of importlib's module locks while the node's modules import, a
  ``__del__``): Python then prints "Exception ignored in ... Traceback ... KeyboardInterrupt"
  and goes on. Our KeyboardInterrupt is not printed there (:func:`_unraisable`), and the
  start-up still stops: :func:`init` and the end of :func:`starting` raise KeyboardInterrupt
  once a signal asked the process to stop.
* :func:`init` starts rclpy; when it cannot (a security set-up without keystore, a bad
  ``--ros-args``) it prints one line saying why and what to check, instead of a traceback.
* :func:`stopping` marks the start of the clean-up, which a further Ctrl-C must not break.
  ``ros2 launch`` whose stdin is not a terminal (``timeout -s INT 20 ros2 launch ...``, a
  service manager, a CI job) sends each node its own SIGINT on top of the one the process
  group got, so a node receives two within milliseconds: the first starts the shutdown, the
  second used to raise KeyboardInterrupt inside it (joining the capture thread, the face
  worker pool, destroying the node), ending with a traceback and exit code -2. After the
  first SIGINT or SIGTERM, or once :func:`stopping` was called, SIGINT is ignored; a
  further SIGTERM ends the process (launch escalates to it when a node takes too long to
  stop).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
from typing import List, Optional

_stopping = False
_signalled = False  # a SIGINT or SIGTERM asked the process to stop


def _ignore_sigint() -> None:
    # SIG_IGN rather than a handler that returns: Python puts the default action back for
    # its handlers when the interpreter finalizes, and a SIGINT arriving then would kill the
    # process with -2 after a clean shutdown. (rclpy's handler, if still installed, is
    # replaced: it is no longer needed.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_signal(signum, frame) -> None:
    global _stopping, _signalled
    _signalled = True
    if _stopping:
        if signum == signal.SIGTERM:  # a second SIGTERM: end now, as the default action does
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return  # already stopping: let the clean-up finish
    _stopping = True
    _ignore_sigint()
    raise KeyboardInterrupt


def stopping() -> None:
    """From now on SIGINT is ignored: the process is shutting down."""
    global _stopping
    _stopping = True
    _ignore_sigint()


def _unraisable(unraisable) -> None:
    """sys.unraisablehook: our own KeyboardInterrupt (a signal handled inside a callback
    Python cannot raise from) is not printed; anything else goes to the previous hook."""
    if _stopping and unraisable.exc_type is KeyboardInterrupt:
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def _guard_signals() -> None:
    global _previous_unraisablehook
    if sys.unraisablehook is not _unraisable:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _unraisable
    if threading.current_thread() is not threading.main_thread():
        return
    # Before rclpy.init: rclpy's own handlers call these after shutting rclpy down.
    # (SIGINT is left alone when it is ignored, as in a background job of a shell.)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def starting():
    """Around a node's construction (see the module docstring): an exception raised once a
    signal stopped the process, or shut rclpy down, becomes KeyboardInterrupt, which the
    nodes' ``main()`` turn into exit code 0; so does a signal whose KeyboardInterrupt Python
    swallowed (raised inside a callback) while the node was being made."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception:
        import rclpy
        if _stopping or not rclpy.ok():
            raise KeyboardInterrupt from None
        raise
    if _stopping:
        raise KeyboardInterrupt


def run(module: str) -> int:
    """Import ``module`` and return its ``main()``: the console scripts' entry."""
    _guard_signals()
    try:
        return importlib.import_module(module).main()
    except KeyboardInterrupt:  # stopped while importing, before main() took over
        return 0
    except Exception:
        if _signalled:  # e.g. rclpy's C extension failing to load under a KeyboardInterrupt
            return 0
        raise
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
    ``[<node_name>] cannot start ROS 2: <reason>`` on stderr when rclpy cannot start.
    Raises KeyboardInterrupt (exit code 0 through :func:`run`) when a signal already asked
    the process to stop, e.g. one Python swallowed while the node's modules imported."""
    import rclpy
    _guard_signals()
    if _stopping:
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
