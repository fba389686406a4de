"""A minimal peer node for checking facerec_msgs across processes.

It republishes every ``facerec_msgs/FaceArray`` received on ``peer/in`` to ``peer/out``
unchanged, and answers ``peer/list_faces`` (``facerec_msgs/srv/ListFaces``) with the names
and sample counts given as ROS parameters ``names`` and ``samples``. Used by the foundation
tests and by ``make demo-exchange``.
"""
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import ListFaces


class MsgPeer(Node):
    """Echo FaceArray messages and serve a fixed ListFaces answer."""

    def __init__(self):
        super().__init__("facerec_msg_peer")
        self.declare_parameter("names", ["alice", "bob"])
        self.declare_parameter("samples", [3, 1])
        self._pub = self.create_publisher(FaceArray, "peer/out", 10)
        self.create_subscription(FaceArray, "peer/in", self.face_array_callback, 10)
        self.create_service(ListFaces, "peer/list_faces", self.list_faces_callback)

    def face_array_callback(self, msg: FaceArray) -> None:
        self._pub.publish(msg)

    def list_faces_callback(self, request, response):
        response.names = list(self.get_parameter("names").value)
        response.samples = [int(n) for n in self.get_parameter("samples").value]
        return response


def main(args=None):
    rclpy.init(args=args)
    node = MsgPeer()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
