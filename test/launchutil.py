"""Run the project the way ROS users do: the real ``ros2 launch`` and ``ros2`` command line.

:class:`RosLaunch` starts ``ros2 launch facerec <file> name:=value ...`` as a user's shell
would (stdin not a terminal, output redirected to a file, ``HOME`` a temporary folder so
nothing is written to the real one), in a session of its own, so that every process it
starts (nodes, face worker processes) can be found, interrupted like ``timeout -s INT`` does,
and checked to be gone afterwards. :func:`ros2` runs ``ros2 param|topic|node|service ...``
with ``--no-daemon`` (a test leaves no ``ros2 daemon`` behind).

Needs launch, launch_ros, ros2launch and ros2cli (ROS 2 packages, not on PyPI):
:func:`require_ros2_tools` skips a test naming what is missing.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, Iterable, List, Optional, Tuple

import yaml

from rosutil import REPO, child_env

CONFIG = REPO / "config"
ROS2_TOOLS = ("launch", "launch_ros", "ros2launch", "ros2cli", "ros2param")

#: parameters every rclpy node declares by itself (not in our parameter files)
BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}

#: verbs of `ros2` that talk to the graph and take --no-daemon
_DAEMON_VERBS = {"param", "topic", "node", "service", "action", "interface"}


def missing_ros2_tools() -> List[str]:
    missing = [name for name in ROS2_TOOLS if importlib.util.find_spec(name) is None]
    if shutil.which("ros2") is None and "ros2cli" not in missing:
        missing.append("the ros2 command")
    return missing


def require_ros2_tools() -> None:
    """Skip, naming what is missing, unless `ros2 launch` and `ros2 param` are installed."""
    import pytest
    missing = missing_ros2_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (ROS 2 packages, not on PyPI): "
                    "`make setup` installs them from $FACEREC_ROS_TOOLS_SRC "
                    "(default ../shared/ros-tools-src), or source a ROS 2 distribution")


def share_dir() -> pathlib.Path:
    """share/facerec of the installed package: what `ros2 launch facerec ...` reads."""
    from ament_index_python.packages import get_package_share_directory
    return pathlib.Path(get_package_share_directory("facerec"))


def check_installed_files_are_current() -> None:
    """Fail (not test stale copies) when launch/ or config/ changed since `make setup`."""
    share = share_dir()
    stale = [str(path.relative_to(REPO)) for folder in ("launch", "config")
             for path in sorted((REPO / folder).rglob("*")) if path.is_file()
             and (not (share / path.relative_to(REPO)).is_file()
                  or (share / path.relative_to(REPO)).read_bytes() != path.read_bytes())]
    assert not stale, f"{share} is older than the source tree ({', '.join(stale)}): " \
                      "run `make setup` (colcon build) first"


def params_copy(name: str, tmp: pathlib.Path, changes: dict,
                filename: Optional[str] = None) -> pathlib.Path:
    """The installed config/<name> with ``changes`` applied, written to ``tmp``."""
    data = yaml.safe_load((share_dir() / "config" / name).read_text())
    [body] = data.values()
    body["ros__parameters"].update(changes)
    path = pathlib.Path(tmp) / (filename or name)
    path.write_text(yaml.safe_dump(data))
    return path


def _default_sigint() -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored, and an ignored
    # signal stays ignored across exec: give ros2 launch the handler a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def session_processes(session: int) -> Dict[int, str]:
    """{pid: command line} of the live (non-zombie) processes of a session."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
            if int(fields[3]) != session or fields[0] == "Z":
                continue
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def process_tree(roots: Iterable[int]) -> Dict[int, str]:
    """{pid: command line} of the live processes ``roots`` and all their descendants."""
    parents, commands = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] == "Z":
                continue
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        parents[int(entry)] = int(fields[1])
        commands[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    found = {pid for pid in roots if pid in commands}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return {pid: commands[pid] for pid in found}


def still_running(pids: Iterable[int], timeout: float = 15.0) -> Dict[int, str]:
    """Those of ``pids`` still alive after waiting up to ``timeout`` s for them to end."""
    pids = set(pids)
    deadline = time.monotonic() + timeout
    while True:
        alive = {pid: cmd for pid, cmd in process_tree(pids).items() if pid in pids}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def ros2_daemons(domain: Optional[str] = None) -> Dict[int, str]:
    """{pid: command line} of `ros2 daemon` processes serving ROS_DOMAIN_ID ``domain``."""
    domain = domain if domain is not None else os.environ.get("ROS_DOMAIN_ID", "0")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args]
        if any("ros2cli.daemon" in w or w == "ros2-daemon" for w in words) and \
                "--ros-domain-id" in words and \
                words[words.index("--ros-domain-id") + 1] == domain:
            found[int(entry)] = " ".join(words).strip()
    return found


class RosLaunch:
    """``ros2 launch facerec <launch_file> <arguments>`` in a session of its own."""

    def __init__(self, launch_file: str, arguments: Optional[dict] = None, *,
                 tmp: pathlib.Path, name: str = "launch", prefix: Optional[str] = None,
                 env: Optional[dict] = None, terminal: bool = False):
        self.name = name
        self.home = pathlib.Path(tmp) / f"{name}_home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = pathlib.Path(tmp) / f"{name}.log"
        self.command = ["ros2", "launch"] + (["--launch-prefix", prefix] if prefix else []) \
            + ["facerec", launch_file] \
            + [f"{key}:={value}" for key, value in (arguments or {}).items()]
        self.members: Dict[int, str] = {}  # every process seen in the session
        self.returncode: Optional[int] = None
        self._survivors: Optional[Dict[int, str]] = None
        self._daemons_before = ros2_daemons()
        environment = child_env(HOME=str(self.home), **(env or {}))
        if terminal:  # a pseudo-terminal as stdin/stdout/stderr, as in an interactive shell
            import pty
            self._master, slave = pty.openpty()
            streams = dict(stdin=slave, stdout=slave, stderr=slave)
        else:
            self._master, slave = None, None
            self._log = open(self.log_path, "wb")
            streams = dict(stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.popen = subprocess.Popen(self.command, env=environment, cwd=str(self.home),
                                      start_new_session=True, preexec_fn=_default_sigint,
                                      **streams)
        if slave is not None:
            os.close(slave)
            self._log = open(self.log_path, "wb")
        self.session = self.popen.pid

    # --- output -----------------------------------------------------------------------------
    def _drain_terminal(self) -> None:
        import select
        while self._master is not None:
            ready, _, _ = select.select([self._master], [], [], 0)
            if not ready:
                return
            try:
                data = os.read(self._master, 65536)
            except OSError:  # the other side is closed
                data = b""
            if not data:
                os.close(self._master)
                self._master = None
                return
            self._log.write(data)
        self._log.flush()

    def output(self) -> str:
        self._drain_terminal()
        self._log.flush()
        return self.log_path.read_bytes().decode(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """True once ``text`` appears in the output; False on time-out or when launch ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.processes()
            if text in self.output():
                return True
            if self.popen.poll() is not None:
                return text in self.output()
            time.sleep(0.2)
        return False

    # --- processes --------------------------------------------------------------------------
    def processes(self) -> Dict[int, str]:
        """The session's live processes now (also remembered in :attr:`members`)."""
        current = session_processes(self.session)
        self.members.update(current)
        return current

    def alive(self) -> bool:
        return self.popen.poll() is None

    def interrupt(self, group: bool = True) -> None:
        """SIGINT to the whole process group (as ``timeout -s INT`` or Ctrl-C do: each node
        gets one, and ros2 launch, its stdin not being a terminal, sends one more), or with
        ``group`` false to ros2 launch alone (as ``kill -INT <pid>``)."""
        self.processes()
        if self.alive():
            if group:
                os.killpg(self.session, signal.SIGINT)
            else:
                self.popen.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> Optional[int]:
        """The exit code of ros2 launch, or None if it still runs after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.processes()
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        self._drain_terminal()
        self.returncode = self.popen.poll()
        return self.returncode

    def stop(self, timeout: float = 60.0, group: bool = True) -> Optional[int]:
        """Interrupt (see :meth:`interrupt`) and wait; None when it did not end in time."""
        if self.returncode is None:
            self.interrupt(group)
            self.wait(timeout)
        return self.returncode

    def survivors(self, timeout: float = 15.0) -> Dict[int, str]:
        """Processes of the session still alive ``timeout`` s after ros2 launch exited, and
        ros2 daemons of this ROS domain that did not run before: must be none."""
        if self._survivors is None:
            deadline = time.monotonic() + timeout
            left = session_processes(self.session)
            while left and time.monotonic() < deadline:
                time.sleep(0.2)
                left = session_processes(self.session)
            new_daemons = {pid: cmd for pid, cmd in ros2_daemons().items()
                           if pid not in self._daemons_before}
            self._survivors = dict(left, **new_daemons)
        return self._survivors

    def close(self) -> None:
        """Clean up whatever is left (SIGKILL to the session's processes and new daemons)."""
        if self.popen.poll() is None:
            self.stop(30.0)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        for pid in list(session_processes(self.session)) + [
                pid for pid in ros2_daemons() if pid not in self._daemons_before]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._drain_terminal()
        self._log.close()

    def describe(self) -> str:
        """For assertion messages: the command, its exit code and the end of its output."""
        return (f"$ {' '.join(self.command)}\n(exit code {self.popen.poll()})\n"
                + self.output()[-6000:])


def ros2(*args: str, home: pathlib.Path, timeout: float = 60.0,
         env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """``ros2 <args>`` as typed by a user, with ``--no-daemon`` after the verb where it
    applies (and for ``ros2 param`` ``--timeout 10``: without the daemon's cached graph the
    node must be discovered first, and the default 1 s is short on a busy machine);
    stdout and stderr together, in the order printed, in ``.stdout``."""
    args = list(args)
    if args and args[0] in _DAEMON_VERBS and len(args) > 1:
        args = args[:2] + ["--no-daemon"] + (["--timeout", "10"] if args[0] == "param" else []) \
            + args[2:]
    return subprocess.run(["ros2"] + args, env=child_env(HOME=str(home), **(env or {})),
                          cwd=str(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          preexec_fn=_default_sigint)


def load_params(path: pathlib.Path) -> Tuple[str, Dict]:
    """(node key, ros__parameters) of a one-node ROS parameter file."""
    data = yaml.safe_load(pathlib.Path(path).read_text())
    assert isinstance(data, dict) and len(data) == 1, f"{path}: expected one node key"
    [(key, body)] = data.items()
    assert set(body) == {"ros__parameters"}, f"{path}: {key} must hold only ros__parameters"
    return key, body["ros__parameters"]


def list_parameters(graph, node: str) -> List[str]:
    from rcl_interfaces.srv import ListParameters
    return list(graph.call(ListParameters, f"{node}/list_parameters",
                           ListParameters.Request()).result.names)


def get_parameters(graph, node: str, names: List[str]) -> Dict:
    """{name: Python value}; arrays as lists, unset parameters as None."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    values = graph.call(GetParameters, f"{node}/get_parameters",
                        GetParameters.Request(names=names)).values
    result = {}
    for name, value in zip(names, values):
        python = parameter_value_to_python(value)
        if python is not None and not isinstance(python, (bool, int, float, str)):
            python = list(python)
        result[name] = python
    return result


def describe_parameters(graph, node: str, names: Iterable[str]) -> Dict:
    """{name: rcl_interfaces ParameterDescriptor} (what `ros2 param describe` shows)."""
    from rcl_interfaces.srv import DescribeParameters
    names = list(names)
    descriptors = graph.call(DescribeParameters, f"{node}/describe_parameters",
                             DescribeParameters.Request(names=names)).descriptors
    return dict(zip(names, descriptors))


def same_value(a, b) -> bool:
    """Equal and of the same ROS type (1 is not 1.0, True is not 1)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bridge_tls(tmp: pathlib.Path, token: str = "launch-test-token") -> dict:
    """A throw-away CA, server certificate and tokens file for facerec_bridge."""
    import trustme
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp / "server.key"))
    (tmp / "tokens").write_text(f"robot:{token}\n")
    return {"ca": ca, "token": token, "overrides": {
        "bridge.host": "127.0.0.1", "bridge.certfile": str(tmp / "server.pem"),
        "bridge.keyfile": str(tmp / "server.key"), "bridge.tokens_file": str(tmp / "tokens")}}


def wait_port(port: int, launch: RosLaunch, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not launch.alive():
            raise AssertionError(f"{launch.name} ended:\n{launch.describe()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout} s:\n{launch.describe()}")


def wait_for_service(graph, srv_type, name: str, launch: RosLaunch,
                     timeout: float = 120.0) -> None:
    client = graph.node.create_client(srv_type, name)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.wait_for_service(timeout_sec=0.5):
                return
            if not launch.alive():
                raise AssertionError(f"{launch.name} ended:\n{launch.describe()}")
        raise AssertionError(f"{name} not up after {timeout} s:\n{launch.describe()}")
    finally:
        graph.node.destroy_client(client)
