"""Shared pytest fixtures: real face images that come from package registries.

* ``astronaut``: scikit-image's ``skimage/data/astronaut.png`` (PyPI wheel), one real face.
* ``messi``: Debian opencv-doc's ``examples/data/messi5.jpg``, one small real face
  (HOG finds it at upsample 1). ``make setup`` installs opencv-doc when run as root.

Images are returned as BGR uint8 arrays (OpenCV order). A missing image is an error, not a
skip: the tests that use these faces must run.
"""
import logging
import os

import cv2
import pytest

from facerec_server.tools.registry_faces import astronaut_path, messi_path  # noqa: F401


def _read(path) -> "cv2.Mat":
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"could not read {path}"
    return image


@pytest.fixture(scope="session")
def astronaut():
    return _read(astronaut_path())


@pytest.fixture(scope="session")
def messi():
    return _read(messi_path())


# --- ROS 2: keep DDS on this machine and give each run its own domain ---------------------
# Done at import time so that rclpy in this process and every child process inherit it.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # Jazzy and later
# The project's transport settings (frames up to 8 MB), as the launch files and the demo use.
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "fastdds.xml")
os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
# launch_testing's pytest plugin (loaded in every run once it is installed) imports
# launch.logging, which makes every logger created afterwards a LaunchLogger that does not
# propagate: caplog would see nothing from the project's loggers. Plain loggers again
# (launch's own loggers get their handlers explicitly and keep working).
logging.setLoggerClass(logging.Logger)


@pytest.fixture(autouse=True)
def _plain_loggers():
    """A launch run inside a test (launch_testing) sets the class again: undo it each time."""
    logging.setLoggerClass(logging.Logger)
    yield
    logging.setLoggerClass(logging.Logger)


if not os.environ.get("ROS_LOG_DIR") and not os.environ.get("ROS_HOME"):
    # ROS log files of the test processes, the nodes they start and the launch_testing
    # launches go to a temporary folder, not the user's ~/.ros/log.
    import tempfile
    os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="facerec-test-ros-log-")
if os.environ.get("ROS_DISTRO", "") in ("humble", "iron"):
    os.environ["ROS_LOCALHOST_ONLY"] = "1"  # the pre-Jazzy spelling


@pytest.fixture(scope="session")
def ros_context():
    """rclpy initialised once for the whole test session (explicit init/shutdown: Humble-safe)."""
    import rclpy
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture
def graph(ros_context):
    """A helper node in this process, spun in a background thread (see rosutil.Graph)."""
    from rosutil import Graph
    helper = Graph(ros_context)
    yield helper
    helper.close()


@pytest.fixture(scope="module")
def module_graph(ros_context):
    """Like ``graph``, shared by the tests of one module (they share one server there)."""
    from rosutil import Graph
    helper = Graph(ros_context, "module_graph")
    yield helper
    helper.close()


# --- websocket bridge: certificates and tokens ---------------------------------------------
BRIDGE_TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """For the websocket bridge's tests (test_bridge*.py): server pair and client trust from
    one CA; client certificates from a client CA and from a rogue CA."""
    import ssl

    import trustme
    folder = tmp_path_factory.mktemp("tls")
    ca, client_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: str(folder / name) for name in
             ("server.pem", "server.key", "client-ca.pem", "tokens")}
    server.cert_chain_pems[0].write_to_path(paths["server.pem"])
    server.private_key_pem.write_to_path(paths["server.key"])
    client_ca.cert_pem.write_to_path(paths["client-ca.pem"])
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    with open(paths["tokens"], "w") as handle:
        handle.write(f"# test tokens\nother-token-0123456789\nrobot1:{BRIDGE_TOKEN}\n\n")
    paths["ca.pem"] = str(folder / "ca.pem")

    def client_context(cert_from=None):
        context = ssl.create_default_context()
        ca.configure_trust(context)
        if cert_from is not None:
            cert_from.issue_cert("cam-mtls").configure_cert(context)
        return context

    return {"ca": ca, "paths": paths, "client_context": client_context,
            "client_ca": client_ca, "rogue_ca": rogue_ca}


# --- PostgreSQL: one real server for the session (see pgutil.py) -------------------------
@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server in a temporary folder (skips with the reason when impossible)."""
    from pgutil import server_or_skip
    server = server_or_skip()
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(postgres_server):
    """URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
