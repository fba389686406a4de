"""Two-process facerec_msgs exchange over DDS (loopback): the foundation's smoke demo.

Starts ``msg_peer`` as a child process, publishes a FaceArray, prints the echo it gets back,
then calls the peer's ListFaces service. Exit code 0 when both worked.
"""
import os
import subprocess
import sys
import time

import rclpy
from geometry_msgs.msg import Point32

from facerec_msgs.msg import Face, FaceArray
from facerec_msgs.srv import ListFaces


def _loopback_env() -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def _sample() -> FaceArray:
    msg = FaceArray(source="demo/image/compressed", processing_time=0.05)
    msg.header.frame_id = "camera"
    face = Face(name="ada", distance=0.3, confidence=0.75, detection_score=1.2)
    face.roi.x_offset, face.roi.y_offset, face.roi.width, face.roi.height = 40, 30, 80, 80
    face.landmarks = [Point32(x=50.0 + i, y=60.0, z=0.0) for i in range(5)]
    msg.faces = [face]
    return msg


def main() -> int:
    env = _loopback_env()
    os.environ.update(env)
    peer = subprocess.Popen([sys.executable, "-m", "facerec_server.tools.msg_peer"], env=env)
    rclpy.init()
    node = rclpy.create_node("facerec_exchange_demo")
    received = []
    node.create_subscription(FaceArray, "peer/out", received.append, 10)
    pub = node.create_publisher(FaceArray, "peer/in", 10)
    client = node.create_client(ListFaces, "peer/list_faces")
    try:
        msg = _sample()
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            rclpy.spin_once(node, timeout_sec=0.2)
        if not received:
            print("no FaceArray came back from the peer process", file=sys.stderr)
            return 1
        got = received[0]
        faces = [(f.name, round(f.distance, 3), f.roi.x_offset, f.roi.y_offset) for f in got.faces]
        print(f"FaceArray round trip between processes: source={got.source!r} faces={faces}")
        if not client.wait_for_service(timeout_sec=30):
            print("ListFaces service not available", file=sys.stderr)
            return 1
        future = client.call_async(ListFaces.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=30)
        result = future.result()
        print(f"ListFaces from the peer process: {list(zip(result.names, result.samples))}")
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        peer.terminate()
        peer.wait(10)


if __name__ == "__main__":
    sys.exit(main())
