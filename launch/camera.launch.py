"""Robot side: the facerec_camera node publishing JPEG frames.

    ros2 launch facerec camera.launch.py                       # camera 0, config/camera.yaml
    ros2 launch facerec camera.launch.py namespace:=robot1 source:=/dev/video2
    ros2 launch facerec camera.launch.py use_security:=true    # SROS2, enclave /facerec/camera

Frames go to ``<namespace>/camera/image/compressed`` (the ``topic`` parameter is relative),
reliable with depth 1, which is what ``facerec_server`` subscribes to by default in the
same namespace. No absolute names: several cameras run side by side under namespaces.

Transport: unless FASTDDS_DEFAULT_PROFILES_FILE is set in your environment, the camera gets
config/fastdds_link.xml with its flow controller paced to ``max_bandwidth`` Mbit/s (8 by
default: below a 10 Mbit/s link; 0 = no limit), see facerec_camera.transport.
The camera is a required node: if it exits the launch ends, with a non-zero code when the
camera failed (see facerec_server/launch_support.py).
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from facerec_camera.transport import DEFAULT_MAX_BANDWIDTH, profile_env
from facerec_server.launch_support import (BOOLEAN, LOG_LEVELS, PACKAGE, missing_files,
                                           node_options, ros_arguments)


def _camera(context):
    def get(name):
        return LaunchConfiguration(name).perform(context)

    failed = missing_files(context, ["params_file"])
    if failed:
        return failed
    parameters = [LaunchConfiguration("params_file")]
    if get("source"):  # the argument wins over the parameter file
        parameters.append({"source": get("source")})
    return [Node(
        package=PACKAGE, executable="facerec_camera", name="facerec_camera",
        namespace=LaunchConfiguration("namespace"), parameters=parameters,
        ros_arguments=ros_arguments(get("log_level"), get("use_security"), get("enclave")),
        **node_options(profile_env(get_package_share_directory(PACKAGE),
                                   float(get("max_bandwidth")))))]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="namespace of the camera node and its topic (e.g. robot1); the "
                        "server must be started with the same namespace"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config",
                                                "camera.yaml"]),
            description="parameter file of facerec_camera"),
        DeclareLaunchArgument(
            "source", default_value="",
            description="what to capture, overriding the parameter file: camera index (0), "
                        "/dev/videoN, picamera, pattern, an image folder, an image or a "
                        "video file; empty = the params_file value"),
        DeclareLaunchArgument(
            "max_bandwidth", default_value=f"{DEFAULT_MAX_BANDWIDTH:g}",
            description="Mbit/s the camera may send (Fast DDS flow controller of "
                        "config/fastdds_link.xml; 0 = no limit): keep it below the link's "
                        "rate. Not used when FASTDDS_DEFAULT_PROFILES_FILE is set"),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=LOG_LEVELS,
            description="log level of the node"),
        DeclareLaunchArgument(
            "use_security", default_value="false", choices=BOOLEAN,
            description="run with SROS2 security: passes --enclave (needs "
                        "ROS_SECURITY_KEYSTORE, ROS_SECURITY_ENABLE=true, "
                        "ROS_SECURITY_STRATEGY=Enforce; see scripts/make_security.sh)"),
        DeclareLaunchArgument(
            "enclave", default_value="/facerec/camera",
            description="SROS2 enclave of the camera node (config/security/policy.xml)"),
        OpaqueFunction(function=_camera),
    ])
