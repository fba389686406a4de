"""config/security/policy.xml: well-formed, valid against the sros2 policy schema's structure,
and granting each node exactly what it really creates on the ROS graph.

The nodes are started by the real `ros2 launch` of bringup.launch.py (parameter files made
from the installed config/, root namespace as the policy's profiles say; skipped, naming what
is missing, without launch/launch_ros/ros2cli); their publishers, subscriptions and
services are read with rclpy graph introspection, and a websocket client connects to the
bridge so that its per-client image topic exists. The encrypted run itself (keystore,
ROS_SECURITY_ENABLE=true, Enforce) needs sros2 and a DDS with security plugins: it is
documented (README, scripts/make_security.sh), not executed here.
"""
import asyncio
import fnmatch
import json
import re
import ssl
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest

from facerec_msgs.srv import ListFaces
from launchutil import (CONFIG, RosLaunch, bridge_tls, check_installed_files_are_current,
                        free_port, params_copy, require_ros2_tools, wait_for_service,
                        wait_port)
from rosutil import REPO, jpeg

POLICY = CONFIG / "security" / "policy.xml"
NODE_ENCLAVES = {"facerec_camera": "/facerec/camera", "facerec_server": "/facerec/server",
                 "facerec_bridge": "/facerec/bridge"}
KINDS = {"topics": ("topic", {"publish", "subscribe"}),
         "services": ("service", {"request", "reply"}),
         "actions": ("action", {"call", "execute"})}
NAME = re.compile(r"^(/|~/?)?[A-Za-z_*][A-Za-z0-9_*]*(/[A-Za-z_*][A-Za-z0-9_*]*)*$")


def resolve(name: str, ns: str, node: str) -> str:
    """A policy name as sros2's permissions.xsl resolves it ('/', '~' or relative to ns)."""
    ns = ns if ns.endswith("/") else ns + "/"
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        return ns + node + name[1:]
    return ns + name


def grants(enclave_path: str) -> dict:
    """{permission: set of resolved names} of one enclave, e.g. {"publish": {...}}."""
    root = ElementTree.parse(POLICY).getroot()
    [enclave] = [e for e in root.iter("enclave") if e.get("path") == enclave_path]
    result = {}
    for profile in enclave.iter("profile"):
        for group in profile:
            child, permissions = KINDS[group.tag]
            for permission in permissions:
                if group.get(permission) == "ALLOW":
                    result.setdefault(permission, set()).update(
                        resolve(e.text.strip(), profile.get("ns"), profile.get("node"))
                        for e in group.findall(child))
    return result


def test_policy_is_well_formed_and_follows_the_sros2_schema():
    """A structural check of sros2's policy.xsd (version 0.2.0: policy/enclaves/enclave/
    profiles/profile/{topics,services,actions}) - lxml/xmlschema are not installed here."""
    root = ElementTree.parse(POLICY).getroot()
    assert root.tag == "policy" and root.get("version") == "0.2.0"
    assert [c.tag for c in root] == ["enclaves"]
    paths = []
    for enclave in root[0]:
        assert enclave.tag == "enclave" and set(enclave.attrib) == {"path"}
        paths.append(enclave.get("path"))
        assert re.match(r"^(/[a-z_]+)+$", enclave.get("path"))
        assert [c.tag for c in enclave] == ["profiles"]
        profiles = list(enclave[0])
        assert profiles and all(p.tag == "profile" for p in profiles)
        for profile in profiles:
            assert set(profile.attrib) == {"ns", "node"}
            assert profile.get("ns").startswith("/") and profile.get("node")
            assert len(profile), "an empty profile grants nothing"
            for group in profile:
                assert group.tag in KINDS, group.tag
                child, permissions = KINDS[group.tag]
                assert group.attrib and set(group.attrib) <= permissions, group.attrib
                assert set(group.attrib.values()) <= {"ALLOW", "DENY"}
                assert len(group) and all(e.tag == child for e in group)
                for element in group:
                    text = (element.text or "").strip()
                    assert NAME.match(text), f"bad {child} name {text!r}"
                    assert not text.startswith(("rt/", "rq/", "rr/")), \
                        "write ROS names, not DDS topic names"
                    assert "*" not in text or "clients/*/" in text or "_ros2cli_*" in text \
                        or re.fullmatch(r"humans/faces/\*/(roi|cropped|aligned)", text), \
                        f"wildcard {text!r} broader than needed"
    assert len(paths) == len(set(paths))
    assert set(NODE_ENCLAVES.values()) <= set(paths)
    assert not [e for e in root.iter() if e.get("publish") == "DENY"
                or e.get("subscribe") == "DENY"], "least privilege needs no DENY rules"


def test_make_security_script_checks_for_sros2():
    """The helper refuses to run without `ros2 security` (as here) and says why."""
    result = subprocess.run(["bash", str(REPO / "scripts" / "make_security.sh"), "/nonexistent"],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert result.returncode == 1
    assert "ros2 security" in result.stderr


@pytest.fixture(scope="module")
def graph_by_node(tmp_path_factory, ros_context):
    """{node: {"publish"|"subscribe"|"reply"|"request": names}} read from the live graph of
    `ros2 launch facerec bringup.launch.py use_bridge:=true` (root namespace, as the policy)."""
    require_ros2_tools()
    check_installed_files_are_current()
    from rosutil import Graph
    tmp = tmp_path_factory.mktemp("policy")
    graph = Graph(ros_context, "policy")
    tls = bridge_tls(tmp)
    port = free_port()
    launch = RosLaunch("bringup.launch.py", {
        "source": "pattern", "use_bridge": "true",
        "server_params_file": params_copy("server.yaml", tmp, {
            "gallery.path": str(tmp / "g.db"), "workers": 1}),
        "camera_params_file": params_copy("camera.yaml", tmp, {
            "fps": 2.0, "width": 160, "height": 120}),
        "bridge_params_file": params_copy("bridge.yaml", tmp, dict(tls["overrides"], **{
            "bridge.port": port, "workers": 1, "gallery.path": str(tmp / "g.db")}))},
        tmp=tmp, name="bringup")
    viewer = None
    try:
        wait_for_service(graph, ListFaces, "/facerec_server/list_faces", launch, timeout=180)
        wait_port(port, launch, timeout=180)
        viewer = _CamerasPageViewer(port, tls)  # the bridge subscribes to annotated frames
        result = asyncio.run(_read_graph_with_a_bridge_client(graph, port, tls))
        code = launch.stop(60)
    finally:
        if viewer is not None:
            viewer.stop()
        graph.close()
        launch.close()
    assert code == 0, launch.describe()
    return result


class _CamerasPageViewer:
    """Asks the bridge's web API for the Cameras page once a second (as the open page does),
    so the bridge keeps its subscriptions to the servers' annotated frames."""

    def __init__(self, port, tls):
        import http.client
        import threading
        context = ssl.create_default_context()
        tls["ca"].configure_trust(context)
        self._stop = threading.Event()

        def poll():
            while not self._stop.wait(1.0):
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                   timeout=10)
                try:
                    conn.request("GET", "/api/cameras",
                                 headers={"Authorization": f"Bearer {tls['token']}"})
                    conn.getresponse().read()
                except (OSError, http.client.HTTPException):  # the launch is ending
                    pass
                finally:
                    conn.close()
        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(15)


async def _read_graph_with_a_bridge_client(graph, port, tls):
    from websockets.asyncio.client import connect
    context = ssl.create_default_context()
    tls["ca"].configure_trust(context)
    import cv2
    import numpy as np
    frame = jpeg(np.full((120, 160, 3), 128, np.uint8))
    assert cv2 is not None
    async with connect(f"wss://127.0.0.1:{port}", ssl=context,
                       additional_headers={"Authorization": f"Bearer {tls['token']}"}) as ws:
        assert json.loads(await ws.recv()) == {"command": 9}
        await ws.send('{"command":1,"context":"Policy Cam"}')
        await ws.recv()
        await ws.send(frame)
        await asyncio.wait_for(ws.recv(), 60)
        return _introspect(graph)


def _introspect(graph, settle: float = 20.0):
    """Wait until the graph stops changing (discovery), then read it per node."""
    import time
    node = graph.node
    previous, stable_since = None, time.monotonic()
    deadline = time.monotonic() + settle * 3
    while time.monotonic() < deadline:
        current = {}
        for name in NODE_ENCLAVES:
            try:
                current[name] = {
                    "publish": {t for t, _ in node.get_publisher_names_and_types_by_node(
                        name, "/")},
                    "subscribe": {t for t, _ in node.get_subscriber_names_and_types_by_node(
                        name, "/")},
                    "reply": {s for s, _ in node.get_service_names_and_types_by_node(
                        name, "/")},
                    "request": {s for s, _ in node.get_client_names_and_types_by_node(
                        name, "/")},
                }
            except Exception:  # node not discovered yet
                current = None
                break
        if current is not None and current == previous:
            bridge = current["facerec_bridge"]
            if time.monotonic() - stable_since > 2.0 \
                    and any("/clients/" in t for t in bridge["publish"]) \
                    and any(t.endswith("/annotated/compressed") for t in bridge["subscribe"]):
                return current
        else:
            previous, stable_since = current, time.monotonic()
        time.sleep(0.25)
    raise AssertionError(f"graph did not settle: {previous}")


# REP-155 per-face topics exist only while a face is tracked (none in the launched scene);
# test_per_face_patterns_cover_the_topics_of_a_face checks what they match.
PER_FACE = {f"/humans/faces/*/{part}" for part in ("roi", "cropped", "aligned")}


def test_per_face_patterns_cover_the_topics_of_a_face():
    from facerec_server import ecosystem
    granted = grants(NODE_ENCLAVES["facerec_server"])["publish"]
    assert PER_FACE <= granted
    face = ecosystem.face_id(12)
    for part in ("roi", "cropped", "aligned"):
        topic = f"/humans/faces/{face}/{part}"
        assert [p for p in PER_FACE if fnmatch.fnmatchcase(topic, p)] == [
            f"/humans/faces/*/{part}"]
    assert not any(fnmatch.fnmatchcase(t, p) for p in PER_FACE
                   for t in ("/humans/faces/tracked", "/humans/candidate_matches"))


@pytest.mark.parametrize("node", sorted(NODE_ENCLAVES))
def test_policy_grants_exactly_what_the_node_uses(graph_by_node, node):
    used = graph_by_node[node]
    allowed = grants(NODE_ENCLAVES[node])
    for permission in ("publish", "subscribe", "reply", "request"):
        names = used[permission]
        granted = allowed.get(permission, set())
        exact = {g for g in granted if "*" not in g}
        patterns = granted - exact
        uncovered = sorted(n for n in names if n not in exact
                           and not any(fnmatch.fnmatchcase(n, p) for p in patterns))
        assert not uncovered, f"{node} needs {permission} on {uncovered}: the policy denies it"
        unused = sorted(exact - names)
        assert not unused, f"policy lets {node} {permission} {unused}, which it never does"
        for pattern in patterns - PER_FACE:
            matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            assert matched, f"{node}: pattern {pattern} matches nothing the node {permission}s"


def test_bridge_client_topic_pattern_is_narrow(graph_by_node):
    [pattern] = [g for g in grants("/facerec/bridge")["publish"] if "*" in g]
    assert pattern == "/facerec_bridge/clients/*/image/compressed"
    # the client asked to be "Policy Cam"; its token's name ("robot") is its ROS name
    assert "/facerec_bridge/clients/robot/image/compressed" in \
        graph_by_node["facerec_bridge"]["publish"]
    for other in ("/facerec_server/faces", "/camera/image/compressed", "/rosout"):
        assert not fnmatch.fnmatchcase(other, pattern)


def test_operator_and_viewer_only_reach_what_the_nodes_offer():
    """Client enclaves: every service they call and topic they read exists in a node grant."""
    served = set().union(*(grants(e).get("reply", set()) for e in NODE_ENCLAVES.values()))
    published = set().union(*(grants(e).get("publish", set()) for e in NODE_ENCLAVES.values()))
    operator = grants("/facerec/operator")
    assert operator["request"] <= served, sorted(operator["request"] - served)
    assert {"/facerec_server/enroll", "/facerec_server/set_parameters"} <= operator["request"]
    assert operator["subscribe"] <= published, sorted(operator["subscribe"] - published)
    viewer = grants("/facerec/viewer")
    import yaml
    rviz = yaml.safe_load((CONFIG / "facerec.rviz").read_text())
    [display] = rviz["Visualization Manager"]["Displays"]
    assert display["Topic"]["Value"] in viewer["subscribe"] & published


def test_namespace_rewrite_keeps_absolute_names():
    """scripts/make_security.sh NAMESPACE rewrites every profile's ns: relative names follow."""
    text = POLICY.read_text()
    script = (REPO / "scripts" / "make_security.sh").read_text()
    assert 's|<profile ns=\\"/\\" |<profile ns=\\"$NAMESPACE\\" |' in script
    rewritten = text.replace('<profile ns="/" ', '<profile ns="/robot1" ')
    assert rewritten.count('<profile ns="/robot1" ') == text.count("<profile ")
    root = ElementTree.fromstring(rewritten)
    profile = next(p for p in root.iter("profile") if p.get("node") == "facerec_server")
    names = {resolve(t.text.strip(), profile.get("ns"), profile.get("node"))
             for t in profile.iter("topic")}
    assert "/robot1/facerec_server/faces" in names and "/robot1/camera/image/compressed" in names
    assert "/rosout" in names and "/diagnostics" in names


def test_operator_grants_what_a_ros2cli_node_creates_for_itself(graph):
    """ros2cli's nodes (_ros2cli_<pid>) are plain rclpy nodes: the operator enclave must let
    them serve their own parameter services and publish /rosout and /parameter_events."""
    import time
    import rclpy
    name = "_ros2cli_4242"
    cli = rclpy.create_node(name, context=graph.node.context)
    try:
        deadline = time.monotonic() + 20
        services = set()
        while time.monotonic() < deadline:
            try:
                services = {s for s, _ in graph.node.get_service_names_and_types_by_node(
                    name, "/")}
                publishers = {t for t, _ in graph.node.get_publisher_names_and_types_by_node(
                    name, "/")}
            except Exception:  # not discovered yet
                services = set()
            if len(services) >= 7 and publishers:
                break
            time.sleep(0.2)
        operator = grants("/facerec/operator")
        for service in services:
            assert any(fnmatch.fnmatchcase(service, p) for p in operator["reply"]), service
        assert len(operator["reply"]) == len(services), sorted(services)
        assert publishers <= operator["publish"], publishers
    finally:
        cli.destroy_node()
