"""Everything on one machine: camera.launch.py and server.launch.py together.

    ros2 launch facerec bringup.launch.py                        # camera 0 -> server
    ros2 launch facerec bringup.launch.py source:=pattern rviz:=true
    ros2 launch facerec bringup.launch.py namespace:=robot1 source:=/path/video.mp4
    ros2 launch facerec bringup.launch.py use_security:=true

On two machines (robot and workstation, same ROS_DOMAIN_ID) start camera.launch.py on the
robot and server.launch.py on the workstation instead, with the same namespace.
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, GroupAction, IncludeLaunchDescription,
                            OpaqueFunction)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from facerec_camera.transport import DEFAULT_MAX_BANDWIDTH
from facerec_server.launch_support import BOOLEAN, LOG_LEVELS, PACKAGE, missing_files


def _include(share, launch_file, arguments):
    """Include launch/<launch_file> with exactly ``arguments`` (name: this file's argument)."""
    return GroupAction(scoped=True, actions=[IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", launch_file])),
        launch_arguments=[(name, LaunchConfiguration(ours))
                          for name, ours in arguments.items()])])


def _both(context):
    """Camera and server, once every parameter file named exists (else nothing starts)."""
    files = ["camera_params_file", "server_params_file"]
    if LaunchConfiguration("use_bridge").perform(context) == "true":
        files.append("bridge_params_file")
    failed = missing_files(context, files)
    if failed:
        return failed
    share = FindPackageShare(PACKAGE)
    common = {"namespace": "namespace", "log_level": "log_level",
              "use_security": "use_security"}
    return [
        _include(share, "camera.launch.py", dict(
            common, source="source", params_file="camera_params_file",
            enclave="camera_enclave", max_bandwidth="max_bandwidth")),
        _include(share, "server.launch.py", dict(
            common, params_file="server_params_file", gallery="gallery", use_bridge="use_bridge",
            bridge_params_file="bridge_params_file", rviz="rviz",
            enclave="server_enclave", bridge_enclave="bridge_enclave")),
    ]


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="namespace of both nodes and of the camera topic (e.g. robot1)"),
        DeclareLaunchArgument(
            "source", default_value="",
            description="what the camera captures: camera index (0), /dev/videoN, picamera, "
                        "pattern, an image folder, an image or a video file; empty = the "
                        "camera_params_file value"),
        DeclareLaunchArgument(
            "camera_params_file",
            default_value=PathJoinSubstitution([share, "config", "camera.yaml"]),
            description="parameter file of facerec_camera"),
        DeclareLaunchArgument(
            "server_params_file",
            default_value=PathJoinSubstitution([share, "config", "server.yaml"]),
            description="parameter file of facerec_server"),
        DeclareLaunchArgument(
            "gallery", default_value="",
            description="gallery.path of the server: an SQLite file or a postgresql:// URL; "
                        "empty = the server parameter file's"),
        DeclareLaunchArgument(
            "use_bridge", default_value="false", choices=BOOLEAN,
            description="also start facerec_bridge (wss:// bridge for devices without ROS)"),
        DeclareLaunchArgument(
            "bridge_params_file",
            default_value=PathJoinSubstitution([share, "config", "bridge.yaml"]),
            description="parameter file of facerec_bridge (set bridge.certfile/keyfile)"),
        DeclareLaunchArgument(
            "rviz", default_value="false", choices=BOOLEAN,
            description="start rviz2 showing /facerec_server/annotated"),
        DeclareLaunchArgument(
            "max_bandwidth", default_value=f"{DEFAULT_MAX_BANDWIDTH:g}",
            description="Mbit/s the camera may send (Fast DDS flow controller; 0 = no limit: "
                        "fine on one machine). Not used when FASTDDS_DEFAULT_PROFILES_FILE "
                        "is set"),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=LOG_LEVELS,
            description="log level of the nodes"),
        DeclareLaunchArgument(
            "use_security", default_value="false", choices=BOOLEAN,
            description="run with SROS2 security: passes --enclave to each node (see "
                        "scripts/make_security.sh)"),
        DeclareLaunchArgument(
            "camera_enclave", default_value="/facerec/camera",
            description="SROS2 enclave of the camera node"),
        DeclareLaunchArgument(
            "server_enclave", default_value="/facerec/server",
            description="SROS2 enclave of the server node"),
        DeclareLaunchArgument(
            "bridge_enclave", default_value="/facerec/bridge",
            description="SROS2 enclave of the bridge node"),
        OpaqueFunction(function=_both),
    ])
