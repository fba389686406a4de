"""launch/*.launch.py read with ``ast`` (the ``launch`` package is not installable here).

Checks what a typo would break for ROS users: every executable is a console script of
setup.py and gets installed to lib/facerec, every parameter/rviz file and included launch
file named exists and is installed to share/facerec (a colcon build of the package into a
temporary prefix), every LaunchConfiguration is declared with a description (and choices for
booleans), arguments forwarded by bringup exist in the included file with the same defaults,
enclaves exist in the SROS2 policy, and nothing evaluates strings or starts subprocesses.
"""
import ast
import pathlib
import runpy
import subprocess
import sys
from os import chdir
import xml.etree.ElementTree as ElementTree
from unittest import mock

import pytest

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
        self.constants = {}  # module-level NAME = literal
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                try:
                    self.constants[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
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
                    and node.value.startswith("/"):
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
    source = (LAUNCH / "server.launch.py").read_text()
    assert '"--enclave"' in source and 'use_security == "true"' in source


# --- the OpaqueFunctions' logic, run against a stand-in of the launch API ------------------
class _Recorded:
    """Stands for a launch/launch_ros class: records its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]

    def __eq__(self, other):
        return isinstance(other, _LaunchConfiguration) and other.args == self.args

    __hash__ = None


def _stub_modules():
    import types
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "OpaqueFunction", "GroupAction",
                           "IncludeLaunchDescription"],
        "launch.conditions": ["IfCondition", "UnlessCondition"],
        "launch.substitutions": ["PathJoinSubstitution"],
        "launch.launch_description_sources": ["PythonLaunchDescriptionSource"],
        "launch_ros": [], "launch_ros.actions": ["Node"],
        "launch_ros.substitutions": ["FindPackageShare"],
    }
    modules = {}
    for module, classes in names.items():
        stub = types.ModuleType(module)
        for cls in classes:
            setattr(stub, cls, type(cls, (_Recorded,), {}))
        modules[module] = stub
    modules["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    return modules


def _run_opaque(name, **arguments):
    """generate_launch_description() of launch/<name> with the stand-in API, then its
    OpaqueFunction with the argument defaults updated by ``arguments``: the Node actions."""
    with mock.patch.dict(sys.modules, _stub_modules()):
        description = runpy.run_path(str(LAUNCH / name))["generate_launch_description"]()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs.get("default_value") for e in entities
                if type(e).__name__ == "DeclareLaunchArgument"}
    unknown = set(arguments) - set(declared)
    assert not unknown, unknown
    context = mock.Mock(launch_configurations=dict(declared, **arguments))
    [opaque] = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    return {node.kwargs["executable"]: node.kwargs for node in opaque.kwargs["function"](context)}


def test_camera_launch_nodes_for_its_arguments():
    [camera] = _run_opaque("camera.launch.py").values()
    assert camera["package"] == "facerec" and camera["name"] == "facerec_camera"
    assert camera["parameters"] == [_LaunchConfiguration("params_file")]  # source "" = file's
    assert camera["namespace"] == _LaunchConfiguration("namespace")
    assert camera["ros_arguments"] == ["--log-level", "info"]
    [camera] = _run_opaque("camera.launch.py", source="pattern", use_security="true",
                           log_level="debug").values()
    assert camera["parameters"] == [_LaunchConfiguration("params_file"), {"source": "pattern"}]
    assert camera["ros_arguments"] == ["--log-level", "debug", "--enclave", "/facerec/camera"]


def test_server_launch_nodes_for_its_arguments():
    nodes = _run_opaque("server.launch.py")
    assert list(nodes) == ["facerec_server"]
    assert nodes["facerec_server"]["ros_arguments"] == ["--log-level", "info"]
    assert nodes["facerec_server"]["parameters"] == [_LaunchConfiguration("params_file")]
    nodes = _run_opaque("server.launch.py", use_bridge="true", rviz="true", use_security="true")
    assert sorted(nodes) == ["facerec_bridge", "facerec_server", "rviz2"]
    assert nodes["facerec_server"]["ros_arguments"][-2:] == ["--enclave", "/facerec/server"]
    assert nodes["facerec_bridge"]["ros_arguments"][-2:] == ["--enclave", "/facerec/bridge"]
    assert nodes["facerec_bridge"]["parameters"] == [_LaunchConfiguration("bridge_params_file")]
    assert nodes["facerec_bridge"]["namespace"] == _LaunchConfiguration("namespace")
    assert nodes["rviz2"]["ros_arguments"][-2:] == ["--enclave", "/facerec/viewer"]
    assert nodes["rviz2"]["arguments"] == ["-d", _LaunchConfiguration("rviz_config")]
