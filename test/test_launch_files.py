"""launch/*.launch.py: read with ``ast``, then run by the real ``ros2 launch``.

Read with ``ast`` (no launch package needed), what a typo would break for ROS users: every
executable is a console script of setup.py and gets installed to lib/facerec, every
parameter/rviz file and included launch file named exists and is installed to share/facerec
(a colcon build of the package into a temporary prefix), every LaunchConfiguration is
declared with a description (and choices for booleans), arguments forwarded by bringup exist
in the included file with the same defaults, enclaves exist in the SROS2 policy, and nothing
evaluates strings or starts subprocesses.

Run by ``ros2 launch --launch-prefix`` (skipped, naming what is missing, without
launch/launch_ros/ros2cli): the command line each argument combination gives each node
(``--log-level``, ``--enclave``, name, namespace, parameter files, the ``source:=`` override).
"""
import ast
import pathlib
import runpy
import subprocess
import sys
import time
from os import chdir
import xml.etree.ElementTree as ElementTree
from unittest import mock

import pytest
import yaml

from rosutil import REPO

LAUNCH = REPO / "launch"
LAUNCH_FILES = ("bringup.launch.py", "camera.launch.py", "server.launch.py")
CONTRACT = {  # arguments the issue names; more are allowed
    "camera.launch.py": {"namespace", "params_file", "source", "log_level", "use_security",
                         "enclave"},
    "server.launch.py": {"namespace", "params_file", "use_bridge", "rviz", "log_level",
                         "use_security", "enclave"},
    "bringup.launch.py": {"namespace", "source", "use_bridge", "rviz", "log_level",
                          "use_security"},
}
EXTERNAL_EXECUTABLES = {("rviz2", "rviz2")}  # (package, executable) from other packages
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "subprocess", "os",
                   "ExecuteProcess", "PythonExpression", "system", "Popen"}


class LaunchFile:
    """What a launch file declares and uses, from its syntax tree."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.tree = ast.parse(path.read_text(), str(path))
        self.constants = {}  # module-level NAME = literal, and constants imported from us
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                try:
                    self.constants[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
            if isinstance(node, ast.ImportFrom) and node.module == "facerec_server.launch_support":
                import facerec_server.launch_support as support
                for alias in node.names:
                    value = getattr(support, alias.name)
                    if isinstance(value, (str, list)):
                        self.constants[alias.asname or alias.name] = value
        self.arguments = {}  # name -> {"default": str|None, "description":..., "choices":...}
        self.used = set()
        self.nodes = []
        self.files = []  # ("config", "server.yaml") pairs from PathJoinSubstitution lists
        self.includes = []  # (launch file, {argument: our configuration}) of _include calls
        for call in (n for n in ast.walk(self.tree) if isinstance(n, ast.Call)):
            name = self._name(call.func)
            if name == "DeclareLaunchArgument":
                self._argument(call)
            elif name in ("LaunchConfiguration", "get") and call.args \
                    and isinstance(call.args[0], ast.Constant):
                # get("x") = LaunchConfiguration("x").perform(context) in OpaqueFunctions
                self.used.add(call.args[0].value)
            elif name == "Node":
                self.nodes.append({k.arg: self._value(k.value) for k in call.keywords})
            elif name == "PathJoinSubstitution":
                parts = call.args[0].elts
                literal = [ast.literal_eval(p) for p in parts if isinstance(p, ast.Constant)]
                if len(literal) == len(parts) - 1:  # [share, "config", "x.yaml"]
                    self.files.append(tuple(literal))
            elif name == "_include":  # bringup: _include(share, "x.launch.py", dict(...))
                mapping = self._mapping(call.args[2])
                self.includes.append((ast.literal_eval(call.args[1]), mapping))
                self.used.update(mapping.values())

    @staticmethod
    def _name(func):
        return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)

    def _value(self, node):
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        try:
            return ast.literal_eval(node)
        except ValueError:
            return node

    def _argument(self, call):
        keywords = {k.arg: k.value for k in call.keywords}
        name = ast.literal_eval(call.args[0])
        default = keywords.get("default_value")
        self.arguments[name] = {
            "default": ast.literal_eval(default) if isinstance(default, ast.Constant) else default,
            "description": self._value(keywords["description"])
            if "description" in keywords else None,
            "choices": self._value(keywords["choices"]) if "choices" in keywords else None,
        }

    def _mapping(self, node):
        """dict(common, a="b") where common = {...} is assigned in the file."""
        assert isinstance(node, ast.Call) and self._name(node.func) == "dict"
        result = {}
        for arg in node.args:
            [assign] = [n for n in ast.walk(self.tree) if isinstance(n, ast.Assign)
                        and getattr(n.targets[0], "id", None) == arg.id]
            result.update(ast.literal_eval(assign.value))
        result.update({k.arg: ast.literal_eval(k.value) for k in node.keywords})
        return result


@pytest.fixture(scope="module")
def launch_files():
    return {name: LaunchFile(LAUNCH / name) for name in LAUNCH_FILES}


@pytest.fixture(scope="module")
def setup_kwargs():
    """The arguments setup.py gives setuptools.setup (run from the repository root)."""
    captured = {}
    cwd = pathlib.Path.cwd()
    with mock.patch("setuptools.setup", lambda **kw: captured.update(kw)):
        try:
            chdir(REPO)  # setup.py globs relative paths
            runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
        finally:
            chdir(cwd)
    return captured


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``colcon build --packages-select facerec`` into a temporary prefix (ament_python)."""
    tmp = tmp_path_factory.mktemp("colcon")
    result = subprocess.run(
        [sys.executable, "-m", "colcon", "--log-base", str(tmp / "log"), "build",
         "--base-paths", str(REPO), "--packages-select", "facerec",
         "--build-base", str(tmp / "build"), "--install-base", str(tmp / "install")],
        cwd=str(tmp), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / "install" / "facerec"


def _literal_parts(node):
    """("config", "camera.yaml") of a PathJoinSubstitution([share, "config", "camera.yaml"])."""
    return tuple(n.value for n in ast.walk(node)
                 if isinstance(n, ast.Constant) and isinstance(n.value, str))


def _console_scripts(setup_kwargs):
    return {line.split("=")[0].strip(): line.split("=")[1].strip()
            for line in setup_kwargs["entry_points"]["console_scripts"]}


def test_launch_files_parse_and_define_generate_launch_description(launch_files):
    for name, launch in launch_files.items():
        functions = {n.name for n in launch.tree.body if isinstance(n, ast.FunctionDef)}
        assert "generate_launch_description" in functions, name


def test_contract_arguments_declared_with_descriptions_and_choices(launch_files):
    for name, launch in launch_files.items():
        missing = CONTRACT[name] - set(launch.arguments)
        assert not missing, f"{name} lacks arguments {sorted(missing)}"
        for arg, spec in launch.arguments.items():
            assert isinstance(spec["description"], str) and len(spec["description"]) > 15, \
                f"{name}: {arg} needs a description"
            if spec["default"] in ("true", "false"):
                assert spec["choices"] == ["true", "false"], f"{name}: {arg} needs choices"
            if spec["choices"] is not None and isinstance(spec["default"], str):
                assert spec["default"] in spec["choices"], f"{name}: {arg} default not a choice"
        assert launch.arguments["log_level"]["choices"] == \
            ["debug", "info", "warn", "error", "fatal"]


def test_every_configuration_used_is_declared(launch_files):
    for name, launch in launch_files.items():
        undeclared = launch.used - set(launch.arguments)
        assert not undeclared, f"{name} uses undeclared arguments {sorted(undeclared)}"
        unused = set(launch.arguments) - launch.used
        assert not unused, f"{name} declares arguments it never uses: {sorted(unused)}"


def test_no_eval_no_subprocesses(launch_files):
    for name, launch in launch_files.items():
        for node in ast.walk(launch.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(m.split(".")[0] in FORBIDDEN_NAMES for m in modules), name
                assert not any(a.name in FORBIDDEN_NAMES for a in node.names), name
            if isinstance(node, ast.Name):
                assert node.id not in FORBIDDEN_NAMES, f"{name}: {node.id}"
            if isinstance(node, ast.Attribute):
                assert node.attr not in FORBIDDEN_NAMES, f"{name}: .{node.attr}"


def test_no_absolute_names_except_enclaves(launch_files):
    """Topics follow namespaces: the only absolute strings are enclave paths."""
    for name, launch in launch_files.items():
        enclave_defaults = {spec["default"] for arg, spec in launch.arguments.items()
                            if "enclave" in arg}
        for node in ast.walk(launch.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.startswith("/") and node.value != "/":  # "/" joins names
                assert node.value in enclave_defaults, f"{name}: absolute name {node.value!r}"
        for node in launch.nodes:
            assert "remappings" not in node, f"{name}: remappings are not needed"


def test_executables_are_console_scripts(launch_files, setup_kwargs):
    scripts = _console_scripts(setup_kwargs)
    for name, launch in launch_files.items():
        for node in launch.nodes:
            package, executable = node["package"], node["executable"]
            if (package, executable) in EXTERNAL_EXECUTABLES:
                continue
            assert package == "facerec", f"{name}: {package}"
            assert executable in scripts, \
                f"{name} runs {executable}, which setup.py does not install (console_scripts)"
            module = scripts[executable].split(":")[0]
            assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module


def test_launch_and_config_files_exist_and_setup_installs_them(launch_files, setup_kwargs):
    data_files = {pathlib.PurePosixPath(dest) / pathlib.PurePosixPath(f).name
                  for dest, files in setup_kwargs["data_files"] for f in files}
    named = set()
    for name, launch in launch_files.items():
        named.add(("launch", name))
        named.update(("launch", included) for included, _ in launch.includes)
        named.update(launch.files)
    for parts in sorted(named):
        path = REPO.joinpath(*parts)
        assert path.is_file(), f"{path} is named in a launch file but missing"
        assert pathlib.PurePosixPath("share", "facerec", *parts) in data_files, \
            f"setup.py does not install {'/'.join(parts)}"
    assert pathlib.PurePosixPath("share/facerec/config/security/policy.xml") in data_files


def test_colcon_installs_what_the_launch_files_need(launch_files, setup_kwargs, installed):
    share = installed / "share" / "facerec"
    for name, launch in launch_files.items():
        assert (share / "launch" / name).is_file(), name
        for parts in launch.files:
            assert share.joinpath(*parts).is_file(), f"{'/'.join(parts)} not installed"
        for node in launch.nodes:
            if node["package"] == "facerec":
                assert (installed / "lib" / "facerec" / node["executable"]).is_file(), \
                    f"{node['executable']} not installed in lib/facerec (ros2 run / launch)"
    assert (share / "config" / "security" / "policy.xml").is_file()


def test_bringup_forwards_arguments_the_included_files_declare(launch_files):
    bringup = launch_files["bringup.launch.py"]
    assert sorted(f for f, _ in bringup.includes) == ["camera.launch.py", "server.launch.py"]
    for included, mapping in bringup.includes:
        child = launch_files[included]
        for theirs, ours in mapping.items():
            assert theirs in child.arguments, f"{included} has no argument {theirs}"
            assert ours in bringup.arguments, f"bringup has no argument {ours}"
            mine, their = bringup.arguments[ours], child.arguments[theirs]
            if isinstance(mine["default"], str) or isinstance(their["default"], str):
                assert mine["default"] == their["default"], \
                    f"default of {ours} ({mine['default']!r}) differs from {included}'s " \
                    f"{theirs} ({their['default']!r})"
            else:  # PathJoinSubstitution([share, "config", "x.yaml"]): same file
                assert _literal_parts(mine["default"]) == _literal_parts(their["default"]), ours
            assert mine["choices"] == their["choices"], ours


def test_security_enclaves_and_node_names_match_the_policy(launch_files):
    policy = ElementTree.parse(REPO / "config" / "security" / "policy.xml").getroot()
    profiles = {e.get("path"): {p.get("node") for p in e.iter("profile")}
                for e in policy.iter("enclave")}
    pairs = {"camera.launch.py": [("enclave", "facerec_camera")],
             "server.launch.py": [("enclave", "facerec_server"),
                                  ("bridge_enclave", "facerec_bridge"),
                                  ("viewer_enclave", "rviz2")]}
    for name, expected in pairs.items():
        launch = launch_files[name]
        names = {node.get("name") for node in launch.nodes}
        for argument, node_name in expected:
            enclave = launch.arguments[argument]["default"]
            assert enclave in profiles, f"{name}: enclave {enclave} not in policy.xml"
            assert profiles[enclave] == {node_name}
            assert node_name in names, f"{name} starts no node named {node_name}"
    from facerec_server.launch_support import ros_arguments
    assert ros_arguments("info", "true", "/facerec/server") == \
        ["--log-level", "info", "--enclave", "/facerec/server"]
    assert ros_arguments("debug", "false", "/facerec/server") == ["--log-level", "debug"]


# --- the launch files run by the real ros2 launch: the command line of each node -------------
# `ros2 launch --launch-prefix` puts a program in front of every node's command line (as
# `--launch-prefix 'gdb -ex run --args'` does); this one prints the command line and the
# parameter files it names, then waits for Ctrl-C, so no node really starts.
ARGV_PRINTER = """
import json, os, signal, sys, time
# Two SIGINTs arrive: the process group's, then launch's own. Exit a moment after the first,
# as a node does: a process gone before launch signals it is reaped by Popen.send_signal's
# poll() inside launch, and asyncio then reports exit code 255 ("Unknown child process").
signal.signal(signal.SIGINT, lambda *_: (time.sleep(0.5), os._exit(0)))
args = sys.argv[1:]
files = {a: open(a).read() for i, a in enumerate(args) if i and args[i - 1] == "--params-file"}
print("ARGV " + json.dumps({"argv": args, "files": files}), flush=True)
while True:
    signal.pause()
"""


def _commands(tmp_path, launch_file, count, **arguments):
    """{node executable: (argv after the executable, {params file: its text})} of the nodes
    ``ros2 launch facerec <launch_file> <arguments>`` starts (``count`` of them)."""
    import json
    from launchutil import RosLaunch, check_installed_files_are_current, require_ros2_tools
    require_ros2_tools()
    check_installed_files_are_current()
    printer = tmp_path / "argv_printer.py"
    printer.write_text(ARGV_PRINTER)
    launch = RosLaunch(launch_file, arguments, tmp=tmp_path, name=launch_file,
                       prefix=f"{sys.executable} {printer}")
    try:
        deadline = time.monotonic() + 60
        while launch.output().count("ARGV ") < count and time.monotonic() < deadline \
                and launch.alive():
            time.sleep(0.2)
        time.sleep(1.0)  # a node more than expected would show up now
        lines = [line.split("ARGV ", 1)[1] for line in launch.output().splitlines()
                 if "ARGV " in line]
        assert launch.stop(30) == 0, launch.describe()
    finally:
        launch.close()
    commands = {}
    for line in lines:
        data = json.loads(line)
        executable = pathlib.Path(data["argv"][0]).name
        commands[executable] = (data["argv"][1:], data["files"])
    assert len(commands) == count, (sorted(commands), launch.describe())
    return commands


def _ros_args(argv):
    """The --ros-args part of a node's command line, as (option, value) pairs."""
    pairs, words = [], [w for w in argv if w != "--ros-args"]
    for option, value in zip(words[::2], words[1::2]):
        pairs.append((option, value))
    return pairs


def test_camera_launch_command_lines(tmp_path):
    from launchutil import share_dir
    config = str(share_dir() / "config" / "camera.yaml")
    [(argv, files)] = _commands(tmp_path, "camera.launch.py", 1).values()
    assert _ros_args(argv) == [("--log-level", "info"), ("-r", "__node:=facerec_camera"),
                               ("-r", "__ns:=/"), ("--params-file", config)]
    commands = _commands(tmp_path, "camera.launch.py", 1, source="pattern", log_level="debug",
                         use_security="true", namespace="robot1")
    [(argv, files)] = commands.values()
    pairs = _ros_args(argv)
    assert pairs[:6] == [("--log-level", "debug"), ("--enclave", "/facerec/camera"),
                         ("-r", "__node:=facerec_camera"), ("-r", "__ns:=/robot1"),
                         ("--params-file", config), ("--params-file", pairs[5][1])]
    overrides = yaml.safe_load(files[pairs[5][1]])  # the source:= argument wins over the file
    assert [body["ros__parameters"] for body in overrides.values()] == [{"source": "pattern"}]


def test_server_launch_command_lines(tmp_path):
    from launchutil import share_dir
    share = share_dir()
    [(argv, _)] = _commands(tmp_path, "server.launch.py", 1).values()
    assert _ros_args(argv) == [("--log-level", "info"), ("-r", "__node:=facerec_server"),
                               ("-r", "__ns:=/"),
                               ("--params-file", str(share / "config" / "server.yaml"))]
    # rviz:=true on a machine without rviz2: the other nodes start (see test_ros2_launch.py)
    nodes = _commands(tmp_path, "server.launch.py", 2, use_bridge="true", rviz="true",
                      use_security="true", namespace="ws")
    assert sorted(nodes) == ["facerec_bridge", "facerec_server"]
    server = _ros_args(nodes["facerec_server"][0])
    assert server[:2] == [("--log-level", "info"), ("--enclave", "/facerec/server")]
    assert _ros_args(nodes["facerec_bridge"][0]) == [
        ("--log-level", "info"), ("--enclave", "/facerec/bridge"),
        ("-r", "__node:=facerec_bridge"), ("-r", "__ns:=/ws"),
        ("--params-file", str(share / "config" / "bridge.yaml"))]


def test_server_launch_serves_a_group_of_cameras_with_a_shared_gallery(tmp_path):
    """One server per group of camera namespaces, on any machine, one PostgreSQL gallery."""
    url = "postgresql://facerec@db-host/facerec"
    nodes = _commands(tmp_path, "server.launch.py", 2, namespace="ws2", use_bridge="true",
                      cameras="robot3, /robot4/,robot5", gallery=url)
    server, bridge = _ros_args(nodes["facerec_server"][0]), _ros_args(nodes["facerec_bridge"][0])
    assert server[1:3] == [("-r", "__node:=facerec_server"), ("-r", "__ns:=/ws2")]

    def overrides(node, pairs):  # launch_ros writes lists as !!python/tuple (rcl reads them)
        [body] = yaml.full_load(nodes[node][1][pairs[-1][1]]).values()
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in body["ros__parameters"].items()}
    assert overrides("facerec_server", server) == {
        "image_topics": ["/robot3/camera/image/compressed", "/robot4/camera/image/compressed",
                         "/robot5/camera/image/compressed"],
        "gallery.path": url}
    assert overrides("facerec_bridge", bridge) == {"gallery.path": url}
    [(argv, files)] = _commands(tmp_path, "server.launch.py", 1, cameras=" , ").values()
    assert len(files) == 1  # nothing named: the parameter file alone


def test_bringup_launch_forwards_its_arguments(tmp_path):
    from launchutil import share_dir
    share = share_dir()
    mine = {name: tmp_path / f"my_{name}.yaml" for name in ("camera", "server")}
    for name, path in mine.items():
        path.write_text((share / "config" / f"{name}.yaml").read_text())
    nodes = _commands(tmp_path, "bringup.launch.py", 2, namespace="robot2", source="pattern",
                      server_params_file=mine["server"], camera_params_file=mine["camera"],
                      log_level="warn")
    assert sorted(nodes) == ["facerec_camera", "facerec_server"]
    camera, server = _ros_args(nodes["facerec_camera"][0]), _ros_args(nodes["facerec_server"][0])
    assert camera[:5] == [("--log-level", "warn"), ("-r", "__node:=facerec_camera"),
                          ("-r", "__ns:=/robot2"), ("--params-file", str(mine["camera"])),
                          ("--params-file", camera[4][1])]
    assert server == [("--log-level", "warn"), ("-r", "__node:=facerec_server"),
                      ("-r", "__ns:=/robot2"), ("--params-file", str(mine["server"]))]
