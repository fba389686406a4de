"""facerec camera side: capture frames, encode them as JPEG and send them to the server.

The modules ``sources``, ``encode``, ``rate`` and ``pipeline`` need only OpenCV and numpy
(no ROS), so they run on small devices such as a Raspberry Pi Zero. ``camera_node`` is the
thin rclpy node that publishes ``sensor_msgs/CompressedImage``; import it explicitly.
This file must not import rclpy.
"""
