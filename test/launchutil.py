"""Start nodes exactly as launch/*.launch.py would (no `launch` package needed).

launch_ros turns ``Node(package='facerec', executable=E, name=N, namespace=NS,
parameters=[file, {...}], ros_arguments=[...])`` into::

    <prefix>/lib/facerec/E --ros-args <ros_arguments> -r __node:=N -r __ns:=/NS
        --params-file <file> --params-file <temporary file holding {...}>

:func:`start_as_launched` runs the same command line, with the console script colcon
installed in ``install/facerec/lib/facerec`` (or ``python -m`` of the same module when the
script is not installed yet), and the parameter files from ``config/``.
"""
from __future__ import annotations

import pathlib
import socket
import sys
import time
from typing import Dict, Iterable, List, Optional, Tuple

import yaml

from rosutil import REPO, Proc, write_params

CONFIG = REPO / "config"
SCRIPTS = REPO / "install" / "facerec" / "lib" / "facerec"

#: executable -> module of its console_scripts entry point (setup.py)
MODULES = {
    "facerec_server": "facerec_server.server_node",
    "facerec_camera": "facerec_camera.camera_node",
    "facerec_bridge": "facerec_server.bridge_node",
}

#: parameters every rclpy node declares by itself (not in our parameter files)
BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}


def command(executable: str) -> Tuple[List[str], str]:
    """The command line of ``executable`` and how it was found (for messages)."""
    script = SCRIPTS / executable
    if script.is_file():  # run as launch_ros does: the script itself (venv shebang)
        return [str(script)], f"console script {script}"
    return [sys.executable, "-m", MODULES[executable]], f"python -m {MODULES[executable]}"


def start_as_launched(executable: str, log_dir, name: str, node_name: str,
                      params_files: Iterable[pathlib.Path], namespace: str = "",
                      overrides: Optional[dict] = None, log_level: str = "info",
                      enclave: Optional[str] = None) -> Proc:
    """Start a node the way launch_ros does (see the module docstring)."""
    args, _ = command(executable)
    ros_args = ["--log-level", log_level]
    if enclave:
        ros_args += ["--enclave", enclave]
    ros_args += ["-r", f"__node:={node_name}"]
    if namespace:
        ros_args += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for path in params_files:
        ros_args += ["--params-file", str(path)]
    if overrides:
        # launch_ros writes dict parameters to a temporary file keyed "/**"
        extra = write_params(pathlib.Path(log_dir) / f"{name}.overrides.yaml", "/**", overrides)
        ros_args += ["--params-file", str(extra)]
    return Proc(args + ["--ros-args"] + ros_args, log_dir, name)


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


def wait_port(port: int, proc: Proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n"
                                 + proc.output())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{proc.name} not listening after {timeout} s:\n{proc.output()}")
