"""config/*.yaml against the nodes: every parameter listed, declared, accepted, same default.

Static half: the files' values equal the defaults the code declares (facerec_server.params,
facerec_camera.camera_node.SPECS, facerec_server.bridge_node), so they cannot drift.
Live half: camera, server and bridge started by the real `ros2 launch` of bringup.launch.py
in a namespace, with parameter files made from the installed ones; list_parameters /
get_parameters show every key of the files declared with the file's value, and camera ->
server traffic arrives on the namespaced faces topic. The server's file also holds
server.yaml's commented object model example, uncommented (every field declared, accepted).
The live half skips, naming what is missing, without launch/launch_ros/ros2cli.
"""
import json
import os
import re

import pytest
import yaml
from rclpy.qos import ReliabilityPolicy

from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import ListFaces
from launchutil import (BUILTIN_PARAMETERS, CONFIG, RosLaunch, bridge_tls,
                        check_installed_files_are_current, free_port, get_parameters,
                        list_parameters, load_params, params_copy, require_ros2_tools,
                        same_value, wait_for_service, wait_port)

NAMESPACE = f"lt{os.getpid() % 10000}"


def _server_defaults():
    from facerec_server import params
    return {s.name: s.default for s in params.SPECS}


def _camera_defaults():
    from facerec_camera.camera_node import SPECS
    return {s.name: s.default for s in SPECS}


def _bridge_defaults():
    from facerec_server import bridge_node
    return {s.name: s.default for s in bridge_node.SHARED_SPECS + bridge_node.BRIDGE_SPECS}


FILES = {  # file: (node key, defaults of the node)
    "server.yaml": ("/**", _server_defaults),
    "camera.yaml": ("/**", _camera_defaults),
    "bridge.yaml": ("/**", _bridge_defaults),
}


def object_model_example() -> dict:
    """The commented object model block of config/server.yaml, uncommented and parsed."""
    text = (CONFIG / "server.yaml").read_text()
    block = re.search(r"# BEGIN object model example\n(.*?)\n\s*# END object model example",
                      text, re.S)
    assert block, "server.yaml has no object model example block"
    lines = [re.sub(r"^\s*# ?", "", line) for line in block.group(1).splitlines()]
    return yaml.safe_load("\n".join(lines))


# --- static: files == code --------------------------------------------------------------
@pytest.mark.parametrize("filename", sorted(FILES))
def test_yaml_lists_every_parameter_with_its_default(filename):
    key, defaults = FILES[filename][0], FILES[filename][1]()
    node_key, values = load_params(CONFIG / filename)
    assert node_key == key, "the key must match the node in any namespace, and be one " \
        "`ros2 param load` understands"
    missing = sorted(set(defaults) - set(values))
    unknown = sorted(set(values) - set(defaults))
    assert not missing, f"{filename} lacks parameters the node declares: {missing}"
    assert not unknown, f"{filename} sets parameters the node does not declare: {unknown}"
    drift = {name: (values[name], defaults[name]) for name in defaults
             if not same_value(values[name], defaults[name])}
    assert not drift, f"{filename}: (file value, declared default) differ: {drift}"


@pytest.mark.parametrize("filename", sorted(FILES))
def test_every_parameter_has_a_comment(filename):
    lines = (CONFIG / filename).read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^    ([a-z_.]+):", line)
        if match and index > 0:
            above = lines[index - 1].strip()
            # a comment line above, or the previous key's comment block covers a group
            assert above.startswith("#") or re.match(r"^[a-z_.]+:", above), \
                f"{filename}:{index + 1}: {match.group(1)} has no comment"


def test_server_yaml_object_model_example_is_complete_and_valid():
    """The commented example block, uncommented, configures one model with every field."""
    from facerec_server.core.objects import MODEL_PARAMETER_DEFAULTS, configs_from_parameters
    example = object_model_example()
    prefix = "object_recognition.cars."
    assert {k[len(prefix):] for k in example} == set(MODEL_PARAMETER_DEFAULTS)
    for field, default in MODEL_PARAMETER_DEFAULTS.items():
        if field not in ("type", "path"):
            assert same_value(example[prefix + field], default), field
    [config] = configs_from_parameters(dict(example, **{"object_recognition.models": ["cars"]}))
    assert config.type == "mmod"


def test_qos_of_camera_and_server_defaults_match():
    """Camera and server default to reliable images (bench/bench_link.py: a lossy link then
    costs frames per second, not frames); both offer best effort as well."""
    from facerec_camera.camera_node import image_qos
    _, server = load_params(CONFIG / "server.yaml")
    _, camera = load_params(CONFIG / "camera.yaml")
    assert image_qos(camera["reliability"]).reliability == ReliabilityPolicy.RELIABLE
    assert image_qos("best_effort").reliability == ReliabilityPolicy.BEST_EFFORT
    assert image_qos("reliable").depth == image_qos("best_effort").depth == 1
    assert server["image_reliability"] == "reliable"
    assert camera["topic"] in server["image_topics"]
    assert not camera["topic"].startswith("/") and not server["image_topics"][0].startswith("/")


def test_example_files_parse():
    from facerec_server.bridge.config import load_tokens
    from facerec_server.core.gallery import validate_name
    entries = json.loads((CONFIG / "faces.example.json").read_text())
    assert isinstance(entries, list) and entries
    for entry in entries:
        assert set(entry) == {"tag", "photos"}
        validate_name(entry["tag"])
        assert entry["photos"] and all(isinstance(p, str) for p in entry["photos"])
    tokens = load_tokens(str(CONFIG / "tokens.example"))
    assert [name for name, _ in tokens] == ["front_door", "kitchen_pi"]


def test_rviz_config_shows_the_server_overlay():
    data = yaml.safe_load((CONFIG / "facerec.rviz").read_text())
    manager = data["Visualization Manager"]
    images = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"]
    assert len(images) == 1 and images[0]["Enabled"] is True
    topic = images[0]["Topic"]
    assert topic["Value"] == "/facerec_server/annotated"
    assert topic["Reliability Policy"] in ("Best Effort", "Reliable")
    assert {"Global Options", "Views", "Tools"} <= set(manager)


# --- one parameter mechanism for every node (facerec_server.ros_params) ------------------
def _node_with(ros_context, name, overrides):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    return Node(name, context=ros_context, parameter_overrides=[
        Parameter(key, value=value) for key, value in overrides.items()])


def test_integers_are_taken_for_doubles_at_start_and_at_run_time(ros_context):
    from rclpy.parameter import Parameter
    from facerec_camera.camera_node import SPECS as CAMERA
    from facerec_server import params
    from facerec_server.ros_params import declare
    server = _node_with(ros_context, "typing_server", {"max_frame_age": 5, "face.threshold": 1})
    camera = _node_with(ros_context, "typing_camera", {"fps": 15, "source": 2})
    try:
        values = declare(server, params.SPECS)
        assert same_value(values["max_frame_age"], 5.0)
        assert same_value(server.get_parameter("face.threshold").value, 1.0)
        declare(camera, CAMERA)
        assert same_value(camera.get_parameter("fps").value, 15.0)
        assert same_value(camera.get_parameter("source").value, "2")  # a camera index
        [result] = server.set_parameters([Parameter("max_frame_age", value=7)])
        assert result.successful, result.reason
        assert same_value(server.get_parameter("max_frame_age").value, 7.0)
        [result] = camera.set_parameters([Parameter("resize", value=1)])
        assert result.successful and same_value(camera.get_parameter("resize").value, 1.0)
        [refused] = server.set_parameters([Parameter("workers", value=2.0)])  # not the reverse
        assert not refused.successful
    finally:
        server.destroy_node()
        camera.destroy_node()


@pytest.mark.parametrize("overrides, message", [
    ({"max_frame_age": "soon"}, "max_frame_age must be a number, got 'soon'"),
    ({"max_frame_age": -1}, "max_frame_age must be >= 0.0, got -1.0"),
    ({"face.upsample": 1.5}, "face.upsample must be an integer, got 1.5"),
    ({"face.detector": "yolo"}, "face.detector must be one of hog, hog_dlib, cnn, cnn_opencv"),
])
def test_a_wrong_start_value_is_one_line_naming_it(ros_context, overrides, message):
    from facerec_server import params
    from facerec_server.ros_params import declare
    node = _node_with(ros_context, "typing_bad", overrides)
    try:
        with pytest.raises(ValueError) as error:
            declare(node, params.SPECS)
        text = str(error.value)
        assert message in text and "\n" not in text, text
    finally:
        node.destroy_node()


# --- live: the nodes started by the real ros2 launch -------------------------------------
@pytest.fixture(scope="module")
def launched(tmp_path_factory, ros_context):
    """`ros2 launch facerec bringup.launch.py namespace:=NS source:=pattern use_bridge:=true`
    with parameter files made from the installed config/*.yaml, a few values changed."""
    require_ros2_tools()
    check_installed_files_are_current()
    from rosutil import Graph
    tmp = tmp_path_factory.mktemp("launched")
    tls = bridge_tls(tmp)
    port = free_port()
    # The server's file gets server.yaml's object model example uncommented, as a user
    # would (with a model file that exists here: dlib's MMOD face detector).
    import face_recognition_models
    example = dict(object_model_example(), **{
        "object_recognition.models": ["cars"],
        "object_recognition.cars.path": face_recognition_models.cnn_face_detector_model_location()})
    changes = {
        # a lower rate and size than config/camera.yaml, to spare a test machine's CPU
        "camera": {"fps": 4.0, "width": 320, "height": 240},
        # a test must not touch ~/.ros: own gallery; one face worker; the object model of
        # the example block is loaded but not run (CPU)
        "server": dict(example, **{"gallery.path": str(tmp / "gallery.db"), "workers": 1,
                                   "object_recognition.enabled": False}),
        "bridge": dict(tls["overrides"], **{"bridge.port": port, "workers": 1,
                                            "gallery.path": str(tmp / "gallery.db")}),
    }
    files = {role: params_copy(f"{role}.yaml", tmp, values)
             for role, values in changes.items()}
    launch = RosLaunch("bringup.launch.py", {
        "namespace": NAMESPACE, "source": "pattern", "use_bridge": "true",
        "camera_params_file": files["camera"], "server_params_file": files["server"],
        "bridge_params_file": files["bridge"]}, tmp=tmp, name="bringup")
    graph = Graph(ros_context, "config_params")
    try:
        wait_for_service(graph, ListFaces, f"/{NAMESPACE}/facerec_server/list_faces", launch,
                         timeout=180)
        wait_port(port, launch, timeout=180)
        yield {"graph": graph, "launch": launch, "files": files,
               "arguments": {"camera": {"source": "pattern"}}}
        code = launch.stop(60)
        assert code == 0, launch.describe()
        assert launch.survivors() == {}, launch.describe()
    finally:
        graph.close()
        launch.close()


@pytest.mark.parametrize("node,filename", [("facerec_server", "server.yaml"),
                                           ("facerec_camera", "camera.yaml"),
                                           ("facerec_bridge", "bridge.yaml")])
def test_launched_node_declares_and_accepts_every_parameter_of_its_file(launched, node,
                                                                        filename):
    graph = launched["graph"]
    fqn = f"/{NAMESPACE}/{node}"
    role = node.split("_")[1]
    _, shipped = load_params(CONFIG / filename)
    _, values = load_params(launched["files"][role])  # the file given to the launch
    assert set(shipped) <= set(values)
    expected = dict(values, **launched["arguments"].get(role, {}))
    declared = set(list_parameters(graph, fqn))
    undeclared = sorted(set(expected) - declared)
    assert not undeclared, f"{node} ignores these keys of {filename}: {undeclared}"
    not_in_file = sorted(declared - set(values) - BUILTIN_PARAMETERS)
    assert not not_in_file, f"{node} declares parameters {filename} lacks: {not_in_file}"
    got = get_parameters(graph, fqn, sorted(expected))
    wrong = {name: (got[name], expected[name]) for name in expected
             if not same_value(got[name], expected[name])}
    assert not wrong, f"{node}: (node value, file value) differ: {wrong}"


def test_launched_camera_feeds_server_in_the_namespace(launched):
    graph = launched["graph"]
    faces = graph.subscribe(FaceArray, f"/{NAMESPACE}/facerec_server/faces")
    assert faces.wait_count(2, 120), "no FaceArray from the launched server:\n" + \
        launched["launch"].describe()
    msg = faces.messages[-1]
    assert msg.source.endswith("camera/image/compressed")  # as given, or resolved
    assert msg.header.frame_id == "camera"
    topic = f"/{NAMESPACE}/camera/image/compressed"
    [pub] = graph.node.get_publishers_info_by_topic(topic)
    subs = graph.node.get_subscriptions_info_by_topic(topic)
    assert pub.node_name == "facerec_camera" and pub.node_namespace == f"/{NAMESPACE}"
    assert pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    assert [s.node_name for s in subs] == ["facerec_server"]
    assert subs[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE


def test_nan_and_infinity_are_refused_where_a_range_is_set():
    """Found by test_fuzz (parameter validation): ParamSpec.validate took NaN for a double
    with a range (every comparison with NaN is false), so a NaN face.padding passed the
    project's own check; only rclpy's range check stopped it on the ROS path."""
    from facerec_camera.camera_node import SPECS as CAMERA
    from facerec_server.bridge_node import BRIDGE_SPECS
    from facerec_server.params import SPECS as SERVER
    ranged = [s for s in SERVER + BRIDGE_SPECS + CAMERA
              if s.kind == "double" and (s.low is not None or s.high is not None)]
    assert ranged
    for spec in ranged:
        for value in (float("nan"), float("inf"), float("-inf")):
            reason = spec.validate(value)
            assert reason and spec.name in reason, (spec.name, value)
        assert spec.validate(float(spec.default)) is None


def test_model_path_with_a_newline_is_named_on_one_line(tmp_path):
    """Found by test_fuzz (parameter validation): a face.models.* path holding a newline
    was put into the refusal as it is, so the one-line message became two lines."""
    from facerec_server import params, settings
    from facerec_server.core.models import ModelError
    value = str(tmp_path / "a\nb.dat")
    reason = params.BY_NAME["face.models.recognition"].validate(value)
    assert reason and "\n" not in reason and repr(value) in reason

    class Change:
        name = "face.models.recognition"
    Change.value = value
    with pytest.raises((ValueError, ModelError)) as refused:
        settings.apply_changes(params.defaults(), [Change])
    assert "\n" not in str(refused.value)


def test_path_with_a_nul_is_refused_with_one_line():
    """Found by test_fuzz (parameter validation): a face.models.* path "~\\x00" raised
    ValueError ("embedded null byte", from the user lookup) instead of a refusal."""
    from facerec_server import params
    for value in ("~\x00", "/tmp/a\x00b.dat", "~nouser\x00/x"):
        reason = params.BY_NAME["face.models.shape_predictor"].validate(value)
        assert reason and "NUL" in reason and "\n" not in reason, (value, reason)
