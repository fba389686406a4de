"""The capture/encode side works without ROS (e.g. on a Pi Zero): rclpy hidden in a subprocess."""
import subprocess
import sys
import textwrap

from rosutil import REPO

SCRIPT = textwrap.dedent("""
    import importlib.abc
    import sys


    class HideRos(importlib.abc.MetaPathFinder):
        BLOCKED = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "builtin_interfaces")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} hidden: no ROS on this device")
            return None


    for name in list(sys.modules):
        if name.split(".")[0] in HideRos.BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, HideRos())
    try:
        import rclpy  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("rclpy still importable")

    import time

    import cv2
    import numpy as np

    import facerec_camera
    from facerec_camera import encode, pipeline, rate, sources

    source = sources.open_source("pattern", width=160, height=120).open()
    encoder = encode.FrameEncoder(jpeg_quality=60, resize=0.5)
    keeper = rate.RateKeeper(200.0)
    sizes = []
    for _ in range(5):
        keeper.wait()
        data = encoder.encode(source.read())
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        sizes.append(image.shape)
    assert sizes == [(60, 80, 3)] * 5, sizes

    delivered = []
    loop = pipeline.CaptureLoop(source, encode.FrameEncoder(), 100.0,
                                lambda data, frame: delivered.append(data))
    loop.start()
    deadline = time.monotonic() + 10
    while len(delivered) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.stop()
    source.close()
    assert len(delivered) >= 5 and all(sources.is_jpeg(d) for d in delivered)

    try:
        import facerec_camera.camera_node  # noqa: F401
    except ImportError as exc:
        print("camera_node needs ROS:", exc)
    else:
        raise SystemExit("camera_node imported without rclpy?")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HideRos.BLOCKED)
    assert not loaded, loaded
    print("LIGHT OK", len(delivered))
""")


def test_capture_and_encode_without_ros():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=str(REPO),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LIGHT OK" in result.stdout
    assert "camera_node needs ROS" in result.stdout
