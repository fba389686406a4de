"""The two packages are found and built by colcon exactly as the README tells ROS users."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
INSTALL = REPO / "install"


def _colcon(*args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, "-m", "colcon"] + list(args), cwd=str(cwd),
                          capture_output=True, text=True, timeout=timeout)


def test_colcon_discovers_both_packages_with_the_documented_paths():
    result = _colcon("list", "--names-only", "--base-paths", str(REPO), str(REPO / "facerec_msgs"))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["facerec", "facerec_msgs"]


def test_colcon_alone_does_not_crawl_into_the_nested_package():
    """Why the README names both paths: the root package.xml stops colcon's crawl."""
    result = _colcon("list", "--names-only", "--base-paths", str(REPO))
    assert result.stdout.split() == ["facerec"]


def test_setup_installed_both_packages():
    index = INSTALL / "share" / "ament_index" / "resource_index" / "packages"
    per_package = [INSTALL / name / "share" / "ament_index" / "resource_index" / "packages" / name
                   for name in ("facerec", "facerec_msgs")]
    found = [p for p in per_package if p.is_file()] + [p for p in
                                                       (index / "facerec", index / "facerec_msgs")
                                                       if p.is_file()]
    names = sorted({p.name for p in found})
    assert names == ["facerec", "facerec_msgs"], f"install/ lacks a package: {found}"
    scripts = INSTALL / "facerec" / "lib" / "facerec"
    for exe in ("facerec_server", "facerec_camera"):
        assert (scripts / exe).is_file(), f"{exe} entry point not installed in {scripts}"
    for folder in ("launch", "config"):
        assert (INSTALL / "facerec" / "share" / "facerec" / folder).is_dir()


def test_clean_build_of_both_packages(tmp_path):
    """A from-scratch colcon build in a temporary workspace (the same command setup runs)."""
    env_python = sys.executable
    result = _colcon("--log-base", str(tmp_path / "log"), "build",
                     "--base-paths", str(REPO), str(REPO / "facerec_msgs"),
                     "--build-base", str(tmp_path / "build"),
                     "--install-base", str(tmp_path / "install"),
                     "--cmake-args", f"-DPython3_EXECUTABLE={env_python}", "-DBUILD_TESTING=OFF",
                     cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 packages finished" in result.stdout
    generated = list((tmp_path / "install" / "facerec_msgs").rglob("_face_array.py"))
    assert generated, "facerec_msgs Python code was not generated"
    check = subprocess.run(
        [sys.executable, "-c", "import facerec_msgs.msg as m; print(m.FaceArray().source == '')"],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(generated[0].parents[2])] + os.environ.get("PYTHONPATH", "").split(os.pathsep))),
        capture_output=True, text=True)
    assert check.stdout.strip() == "True", check.stderr
