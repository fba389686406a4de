"""Linters as tests (as ros2/examples do with ament_flake8)."""
import pathlib
import subprocess
import sys
import xml.dom.minidom

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_flake8_clean():
    targets = [str(REPO / d) for d in ("facerec_server", "facerec_camera", "test", "bench",
                                       "launch", "scripts", "setup.py")
               if (REPO / d).exists()]
    result = subprocess.run([sys.executable, "-m", "flake8", "--config", str(REPO / "setup.cfg")]
                            + targets, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_manifests_are_well_formed():
    for manifest in (REPO / "package.xml", REPO / "facerec_msgs" / "package.xml"):
        doc = xml.dom.minidom.parse(str(manifest))
        assert doc.documentElement.getAttribute("format") == "3", manifest
