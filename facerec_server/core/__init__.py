"""ROS-free recognition core: plain classes and functions, numpy in, dataclasses out.

Nothing in this package imports rclpy; the ROS nodes are thin adapters around it.
"""
