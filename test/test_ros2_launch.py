"""The real `ros2 launch` and `ros2 param`, run the way users run them.

One bringup (camera test pattern, server, bridge, ``rviz:=true`` on a machine without rviz2)
started with ``ros2 launch`` from a shell whose stdin is not a terminal and whose output goes
to a file, in a temporary HOME; the README's ``ros2 param`` examples are run against it and
must print exactly what the README says; every double parameter of every node takes an
integer; the descriptors' ranges are what the nodes accept; the shipped parameter files load
with ``ros2 param load``. Then it is stopped as ``timeout -s INT`` stops it (SIGINT to the
process group, and one more from ros2 launch to each node): exit code 0, no traceback, no
process left. Launches whose required node dies at start (bridge without certificates,
security enabled without a keystore) must end by themselves with a non-zero exit code.

Skipped, naming what is missing, without launch/launch_ros/ros2cli (not on PyPI).
"""
import math
import re
import time

import pytest

from launchutil import (RosLaunch, bridge_tls, check_installed_files_are_current,
                        describe_parameters, free_port, get_parameters, list_parameters,
                        params_copy, require_ros2_tools, ros2, share_dir, wait_for_service,
                        wait_port)
from rosutil import REPO, set_parameters

pytestmark = pytest.mark.usefixtures("ros2_tools")

NODES = ("/facerec_server", "/facerec_camera", "/facerec_bridge")
#: doubles the parameter files below give as integers, and the values the nodes must hold
STARTED_WITH_INTEGERS = {
    "/facerec_camera": {"fps": 5.0, "wait_for_subscribers": 0.0},
    "/facerec_server": {"max_frame_age": 5.0, "diagnostics_period": 2.0},
    "/facerec_bridge": {"bridge.max_message_rate": 30.0, "face.threshold": 1.0}}
COLOUR = "\x1b["


@pytest.fixture(scope="module")
def ros2_tools():
    require_ros2_tools()
    check_installed_files_are_current()


@pytest.fixture(scope="module")
def bringup(tmp_path_factory, ros_context, ros2_tools):
    """bringup.launch.py source:=pattern use_bridge:=true rviz:=true, root namespace.

    The parameter files are the installed ones with a few changes; some doubles are given
    as integers (fps: 5, max_frame_age: 5, ...), as users write them."""
    from facerec_msgs.srv import ListFaces
    from rosutil import Graph
    from sensor_msgs.msg import CompressedImage
    tmp = tmp_path_factory.mktemp("ros2_launch")
    tls = bridge_tls(tmp)
    port = free_port()
    files = {
        "camera_params_file": params_copy("camera.yaml", tmp, {
            "fps": 5, "width": 320, "height": 240, "wait_for_subscribers": 0}),
        "server_params_file": params_copy("server.yaml", tmp, {
            "gallery.path": str(tmp / "gallery.db"), "workers": 1, "max_frame_age": 5,
            "diagnostics_period": 2}),
        "bridge_params_file": params_copy("bridge.yaml", tmp, dict(tls["overrides"], **{
            "bridge.port": port, "workers": 1, "gallery.path": str(tmp / "gallery.db"),
            "bridge.max_message_rate": 30, "face.threshold": 1})),
    }
    launch = RosLaunch("bringup.launch.py", dict(files, source="pattern", use_bridge="true",
                                                 rviz="true"), tmp=tmp, name="bringup")
    graph = Graph(ros_context, "ros2_launch")
    try:
        frames = graph.subscribe_sensor(CompressedImage, "/camera/image/compressed")
        wait_for_service(graph, ListFaces, "/facerec_server/list_faces", launch, timeout=180)
        wait_port(port, launch, timeout=180)
        assert frames.wait_count(2, 60), "the camera publishes nothing\n" + launch.describe()
        started = {node: get_parameters(graph, node, list(STARTED_WITH_INTEGERS[node]))
                   for node in NODES}  # before the tests below change them
        yield {"launch": launch, "graph": graph, "tmp": tmp, "files": files,
               "started": started}
    finally:
        graph.close()
        launch.close()


# --- while it runs -------------------------------------------------------------------------
def test_rviz_without_rviz2_is_reported_and_the_rest_runs(bringup):
    launch = bringup["launch"]
    assert launch.alive(), launch.describe()
    output = launch.output()
    [line] = [x for x in output.splitlines() if "rviz2" in x and "not installed" in x]
    assert "rviz:=false" in line or "ros-" in line, line  # says what to do
    assert "process started" in output and "[rviz2" not in output


def _readme_param_examples():
    """(command, expected output lines) of the README's ```console blocks: `$ ros2 param`."""
    readme = (REPO / "README.md").read_text()
    examples = []
    for block in re.findall(r"```console\n(.*?)```", readme, re.S):
        command = None
        for line in block.splitlines():
            if line.startswith("$ "):
                command = line[2:].strip()
                examples.append((command, []))
            elif command is not None:
                examples[-1][1].append(line.rstrip())
    return [(c, out) for c, out in examples if c.startswith("ros2 param ")]


def _matches(expected, got) -> bool:
    """Line by line; a line "..." in ``expected`` stands for any number of lines."""
    if not expected:
        return not got
    if expected[0] == "...":
        return any(_matches(expected[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and expected[0] == got[0] and _matches(expected[1:], got[1:])


def test_readme_param_examples_print_what_the_readme_says(bringup):
    examples = _readme_param_examples()
    commands = [c for c, _ in examples]
    assert len(examples) >= 8, commands
    assert any("max_frame_age 5" in c for c in commands)  # an integer for a double
    assert any(c.startswith("ros2 param load") for c in commands)
    assert any(c.startswith("ros2 param describe") for c in commands)
    share = str(share_dir())
    for command, expected in examples:
        words = command.replace("$(ros2 pkg prefix facerec)/share/facerec", share).split()
        result = ros2(*words[1:], home=bringup["launch"].home)
        got = [line.rstrip() for line in result.stdout.strip("\n").splitlines()]
        assert _matches(expected, got), \
            f"$ {command}\nREADME says:\n" + "\n".join(expected) + "\nros2 printed:\n" + \
            result.stdout


def _params_of(graph, node):
    from rcl_interfaces.msg import ParameterType
    names = list_parameters(graph, node)
    descriptors = describe_parameters(graph, node, names)
    values = get_parameters(graph, node, names)
    return {n: (values[n], d) for n, d in descriptors.items()
            if d.type != ParameterType.PARAMETER_NOT_SET}


def test_every_double_parameter_takes_an_integer(bringup):
    """From the parameter file (fps: 5, max_frame_age: 5 ...) and at run time."""
    from rcl_interfaces.msg import ParameterType
    graph = bringup["graph"]
    for node in NODES:
        for name, value in STARTED_WITH_INTEGERS[node].items():
            got = bringup["started"][node][name]
            assert type(got) is float and got == value, (node, name, got)
        params = _params_of(graph, node)
        doubles = {name: (value, d) for name, (value, d) in params.items()
                   if d.type == ParameterType.PARAMETER_DOUBLE and not d.read_only}
        assert doubles, node
        for name, (value, d) in doubles.items():
            whole = int(math.floor(value)) if value >= 1 else 1
            if d.floating_point_range:
                whole = int(math.ceil(d.floating_point_range[0].from_value)) \
                    if whole < d.floating_point_range[0].from_value else whole
            [result] = set_parameters(graph, node, {name: whole})
            assert result.successful, f"{node} {name} := {whole} (integer): {result.reason}"
            now = get_parameters(graph, node, [name])[name]
            assert type(now) is float and now == float(whole), (node, name, now)
            [result] = set_parameters(graph, node, {name: value})
            assert result.successful, (node, name, result.reason)


def test_descriptor_ranges_are_what_the_nodes_accept(bringup):
    """`ros2 param describe` shows Min/Max: both ends are accepted, beyond them refused."""
    graph = bringup["graph"]
    checked = 0
    for node in NODES:
        for name, (value, d) in _params_of(graph, node).items():
            ranges = list(d.integer_range) + list(d.floating_point_range)
            if d.read_only or not ranges:
                continue
            [limits] = ranges
            cast = int if d.integer_range else float
            low, high = cast(limits.from_value), cast(limits.to_value)
            for end in (low, high):
                [result] = set_parameters(graph, node, {name: end})
                assert result.successful, f"{node} {name} = {end} (the descriptor's " \
                                          f"range {low}..{high}) refused: {result.reason}"
            below = low - (1 if cast is int else max(abs(low) * 0.5, 0.01))
            for outside in (below, high + (1 if cast is int else 1.0)):
                [result] = set_parameters(graph, node, {name: outside})
                assert not result.successful, f"{node} {name} = {outside} accepted"
            [result] = set_parameters(graph, node, {name: value})
            assert result.successful, (node, name, result.reason)
            checked += 1
    assert checked >= 20, checked


@pytest.mark.parametrize("node,filename", [("/facerec_server", "server.yaml"),
                                           ("/facerec_camera", "camera.yaml"),
                                           ("/facerec_bridge", "bridge.yaml")])
def test_ros2_param_load_takes_the_shipped_files(bringup, node, filename):
    from rcl_interfaces.msg import ParameterType
    graph = bringup["graph"]
    settable = sorted(name for name, (_, d) in _params_of(graph, node).items()
                      if not d.read_only and d.type != ParameterType.PARAMETER_NOT_SET
                      and name not in ("use_sim_time", "start_type_description_service"))
    result = ros2("param", "load", node, str(share_dir() / "config" / filename),
                  home=bringup["launch"].home)
    assert result.returncode == 0, result.stdout
    for name in settable:
        assert f"Set parameter {name} successful" in result.stdout, (name, result.stdout)
    for line in result.stdout.splitlines():
        assert "successful" in line or "read-only" in line, line


def test_redirected_output_has_no_colour_codes(bringup):
    output = bringup["launch"].output()
    assert "ready: inputs" in output
    assert COLOUR not in output, repr(output[output.index(COLOUR) - 200:][:400])


# --- stopped as `timeout -s INT ros2 launch ...` stops it ------------------------------------
def test_sigint_to_the_process_group_ends_everything_with_exit_code_0(bringup):
    launch = bringup["launch"]
    code = launch.stop(60, group=True)
    output = launch.output()
    assert code == 0, launch.describe()
    for word in ("Traceback", "KeyboardInterrupt", "process has died"):
        assert word not in output, launch.describe()
    for node in ("facerec_camera", "facerec_server", "facerec_bridge"):
        assert re.search(rf"\[{node}-\d+\]: process has finished cleanly", output), \
            launch.describe()


def test_no_process_outlives_the_launch(bringup):
    launch = bringup["launch"]
    assert launch.stop(60) is not None, launch.describe()
    workers = [cmd for cmd in launch.members.values() if "multiprocessing" in cmd]
    assert workers, launch.members  # the server's and the bridge's face worker processes
    assert launch.survivors() == {}, launch.describe()


def test_the_given_gallery_is_used_and_nothing_lands_in_home(bringup):
    """The nodes ran with HOME in a temporary folder: the gallery.path of the parameter files
    given was used, not the default ~/.ros/facerec/gallery.db."""
    assert (bringup["tmp"] / "gallery.db").is_file()
    home = bringup["launch"].home
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert not [p for p in written if p.startswith(".ros/facerec")], written


# --- a required node that dies at start ends the launch -------------------------------------
def _ends_by_itself(launch, timeout=120):
    code = launch.wait(timeout)
    assert code is not None, "the launch kept running:\n" + launch.describe()
    return code


def test_bridge_without_certificates_ends_the_launch_with_an_error(tmp_path):
    launch = RosLaunch("server.launch.py", {
        "use_bridge": "true",
        "params_file": params_copy("server.yaml", tmp_path, {
            "gallery.path": str(tmp_path / "gallery.db"), "workers": 1})},
        tmp=tmp_path, name="no_certs")
    try:
        code = _ends_by_itself(launch)
        output = launch.output()
        assert code != 0, launch.describe()
        [line] = [x for x in output.splitlines() if "cannot start" in x]
        assert "certfile" in line, line  # says what to set
        assert "Traceback" not in output, launch.describe()
        assert launch.survivors() == {}, launch.describe()
    finally:
        launch.close()


def test_security_without_a_keystore_ends_the_launch_with_an_error(tmp_path):
    launch = RosLaunch("bringup.launch.py", {"use_security": "true", "source": "pattern",
                                             "use_bridge": "true"},
                       tmp=tmp_path, name="no_keystore",
                       env={"ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_STRATEGY": "Enforce",
                            "ROS_SECURITY_KEYSTORE": str(tmp_path / "no_keystore")})
    try:
        code = _ends_by_itself(launch)
        output = launch.output()
        assert code != 0, launch.describe()
        assert "Traceback" not in output, launch.describe()
        lines = [x for x in output.splitlines() if "cannot start ROS 2" in x]
        assert lines, launch.describe()
        assert all("ROS_SECURITY_KEYSTORE" in x for x in lines), lines
        assert launch.survivors() == {}, launch.describe()
    finally:
        launch.close()


def test_a_parameter_file_that_does_not_exist_ends_the_launch_with_an_error(tmp_path):
    """A typo or a renamed file: launch_ros alone would warn and start the node with its
    built-in defaults. Here nothing starts."""
    missing = tmp_path / "renamed_server.yaml"
    launch = RosLaunch("bringup.launch.py", {"source": "pattern",
                                             "server_params_file": str(missing)},
                       tmp=tmp_path, name="no_file")
    try:
        code = _ends_by_itself(launch)
        output = launch.output()
        assert code != 0, launch.describe()
        [line] = [x for x in output.splitlines() if "no such parameter file" in x]
        assert f"server_params_file:={missing}" in line, line  # the argument as given
        assert "process started" not in output, launch.describe()
        assert "Traceback" not in output, launch.describe()
        assert launch.survivors() == {}, launch.describe()
    finally:
        launch.close()


def test_on_a_terminal_the_log_keeps_its_colours(tmp_path):
    """emulate_tty only when ros2 launch's output is a terminal: colours there, not in files."""
    launch = RosLaunch("camera.launch.py", {"source": "pattern"}, tmp=tmp_path,
                       name="terminal", terminal=True)
    try:
        assert launch.wait_for_output("publishing test pattern", 60), launch.describe()
        time.sleep(0.5)
        assert COLOUR in launch.output(), launch.describe()
        assert launch.stop(30) == 0, launch.describe()
    finally:
        launch.close()
