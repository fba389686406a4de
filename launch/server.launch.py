"""Workstation side: facerec_server, optionally the websocket bridge and rviz2.

    ros2 launch facerec server.launch.py                        # config/server.yaml
    ros2 launch facerec server.launch.py namespace:=robot1      # the robot1 camera's frames
    ros2 launch facerec server.launch.py use_bridge:=true bridge_params_file:=my_bridge.yaml
    ros2 launch facerec server.launch.py rviz:=true             # overlay in rviz2
    ros2 launch facerec server.launch.py use_security:=true     # SROS2 enclaves
    # several servers sharing the cameras and one PostgreSQL gallery (one line per machine):
    ros2 launch facerec server.launch.py namespace:=ws1 cameras:=robot1,robot2 \
        gallery:=postgresql://facerec@db-host/facerec
    ros2 launch facerec server.launch.py namespace:=ws2 cameras:=robot3,robot4 \
        gallery:=postgresql://facerec@db-host/facerec

The server subscribes to ``<namespace>/camera/image/compressed`` (its ``image_topics`` are
relative) and publishes ``<namespace>/facerec_server/{faces,objects,annotated,...}``.
With ``cameras`` it subscribes to ``/<camera namespace>/camera/image/compressed`` of each
camera named instead (``source`` in ~/faces tells them apart). The bridge needs
bridge.certfile / bridge.keyfile in its parameter file (TLS always).
Transport: unless FASTDDS_DEFAULT_PROFILES_FILE is set in your environment, the nodes get
config/fastdds.xml (frames up to 8 MB; see facerec_camera.transport).
Server and bridge are required nodes: if one exits the launch ends, with a non-zero code when
it failed (see facerec_server/launch_support.py). rviz2 is optional: without it installed,
rviz:=true warns and the rest runs.
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from facerec_camera.transport import profile_env
from facerec_server.launch_support import (BOOLEAN, LOG_LEVELS, PACKAGE, installed,
                                           missing_files, node_options, ros_arguments, warn)

CAMERA_TOPIC = "camera/image/compressed"  # the camera node's topic, relative to its namespace


def server_parameters(cameras, gallery):
    """Parameter overrides from the ``cameras`` and ``gallery`` arguments ({} = the file's).

    ``cameras``: camera namespaces separated by commas or spaces ("robot1,robot2"); each
    becomes the absolute topic /<namespace>/camera/image/compressed in image_topics.
    """
    values = {}
    names = [name.strip("/") for name in cameras.replace(",", " ").split() if name.strip("/")]
    if names:
        values["image_topics"] = ["/".join(["", name, CAMERA_TOPIC]) for name in names]
    if gallery.strip():
        values["gallery.path"] = gallery.strip()
    return values


def _nodes(context):
    def get(name):
        return LaunchConfiguration(name).perform(context)

    use_bridge = get("use_bridge") == "true"
    failed = missing_files(context, ["params_file"] + (["bridge_params_file"] if use_bridge
                                                       else []))
    if failed:
        return failed
    namespace = LaunchConfiguration("namespace")
    overrides = server_parameters(get("cameras"), get("gallery"))
    transport = profile_env(get_package_share_directory(PACKAGE))
    nodes = [Node(
        package=PACKAGE, executable="facerec_server", name="facerec_server",
        namespace=namespace,
        parameters=[LaunchConfiguration("params_file")] + ([overrides] if overrides else []),
        ros_arguments=ros_arguments(get("log_level"), get("use_security"), get("enclave")),
        **node_options(transport))]
    if use_bridge:
        gallery = [{"gallery.path": overrides["gallery.path"]}] \
            if "gallery.path" in overrides else []
        nodes.append(Node(
            package=PACKAGE, executable="facerec_bridge", name="facerec_bridge",
            namespace=namespace, parameters=[LaunchConfiguration("bridge_params_file")] + gallery,
            ros_arguments=ros_arguments(get("log_level"), get("use_security"),
                                        get("bridge_enclave")),
            **node_options(transport)))
    if get("rviz") == "true" and not installed("rviz2"):
        warn("rviz:=true but rviz2 is not installed (sudo apt install ros-$ROS_DISTRO-rviz2): "
             "running without it (rviz:=false hides this warning)")
    elif get("rviz") == "true":
        nodes.append(Node(  # a viewer: closing it does not stop the launch
            package="rviz2", executable="rviz2", name="rviz2",
            arguments=["-d", LaunchConfiguration("rviz_config")],
            ros_arguments=ros_arguments(get("log_level"), get("use_security"),
                                        get("viewer_enclave")),
            output="screen"))
    return nodes


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="namespace of the server (and bridge) and of the camera topic it "
                        "reads (e.g. robot1, as given to camera.launch.py); with cameras set "
                        "it only names this server (e.g. ws1)"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "server.yaml"]),
            description="parameter file of facerec_server"),
        DeclareLaunchArgument(
            "cameras", default_value="",
            description="camera namespaces this server serves, separated by commas or spaces "
                        "(e.g. robot1,robot2: /robot1/camera/image/compressed and "
                        "/robot2/...); empty = the parameter file's image_topics, relative "
                        "to namespace. Start one server per group of cameras, on any machine"),
        DeclareLaunchArgument(
            "gallery", default_value="",
            description="gallery.path of the server (and bridge): an SQLite file, or a "
                        "postgresql://user@host/database URL that every server shares; "
                        "empty = the parameter file's"),
        DeclareLaunchArgument(
            "use_bridge", default_value="false", choices=BOOLEAN,
            description="also start facerec_bridge, the wss:// bridge for devices without ROS"),
        DeclareLaunchArgument(
            "bridge_params_file",
            default_value=PathJoinSubstitution([share, "config", "bridge.yaml"]),
            description="parameter file of facerec_bridge (set bridge.certfile and "
                        "bridge.keyfile in it)"),
        DeclareLaunchArgument(
            "rviz", default_value="false", choices=BOOLEAN,
            description="start rviz2 showing /facerec_server/annotated (the rviz config "
                        "names that topic: edit it for a namespaced server)"),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=PathJoinSubstitution([share, "config", "facerec.rviz"]),
            description="rviz2 configuration file"),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=LOG_LEVELS,
            description="log level of the nodes"),
        DeclareLaunchArgument(
            "use_security", default_value="false", choices=BOOLEAN,
            description="run with SROS2 security: passes --enclave to each node (needs "
                        "ROS_SECURITY_KEYSTORE, ROS_SECURITY_ENABLE=true, "
                        "ROS_SECURITY_STRATEGY=Enforce; see scripts/make_security.sh)"),
        DeclareLaunchArgument(
            "enclave", default_value="/facerec/server",
            description="SROS2 enclave of the server node (config/security/policy.xml)"),
        DeclareLaunchArgument(
            "bridge_enclave", default_value="/facerec/bridge",
            description="SROS2 enclave of the bridge node (config/security/policy.xml)"),
        DeclareLaunchArgument(
            "viewer_enclave", default_value="/facerec/viewer",
            description="SROS2 enclave of rviz2 (config/security/policy.xml)"),
        OpaqueFunction(function=_nodes),
    ])
