"""facerec server: face and object recognition for ROS 2 (workstation side)."""
