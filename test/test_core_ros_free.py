"""The recognition core, dlibnet, eval, the bridge's network code and the camera's capture
code import with rclpy made unavailable (what the README promises)."""
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
ROS_FREE = ["facerec_server/core", "facerec_server/core/gallery",
            "facerec_server/dlibnet", "facerec_server/eval",
            "facerec_server/bridge", "facerec_server/enroll_cli.py",
            "facerec_server/params.py", "facerec_camera/sources.py", "facerec_camera/encode.py",
            "facerec_camera/rate.py", "facerec_camera/pipeline.py", "facerec_camera/ws_client.py"]


def _modules():
    names = []
    for entry in ROS_FREE:
        path = REPO / entry
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        for file in files:
            parts = file.relative_to(REPO).with_suffix("").parts
            names.append(".".join(p for p in parts if p != "__init__") if parts[-1] != "__init__"
                         else ".".join(parts[:-1]))
    return names


def test_ros_free_modules_import_without_rclpy():
    modules = _modules()
    assert len(modules) > 25
    code = ("import sys\n"
            "for name in ('rclpy', 'sensor_msgs', 'facerec_msgs', 'std_msgs'):\n"
            "    sys.modules[name] = None  # any import of them raises ImportError\n"
            "import importlib\n"
            f"for module in {modules!r}:\n"
            "    importlib.import_module(module)\n"
            "print('ok', len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")
