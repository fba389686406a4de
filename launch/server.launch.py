"""Workstation side: facerec_server, optionally the websocket bridge and rviz2.

    ros2 launch facerec server.launch.py                        # config/server.yaml
    ros2 launch facerec server.launch.py namespace:=robot1      # the robot1 camera's frames
    ros2 launch facerec server.launch.py use_bridge:=true bridge_params_file:=my_bridge.yaml
    ros2 launch facerec server.launch.py rviz:=true             # overlay in rviz2
    ros2 launch facerec server.launch.py use_security:=true     # SROS2 enclaves

The server subscribes to ``<namespace>/camera/image/compressed`` (its ``image_topics`` are
relative) and publishes ``<namespace>/facerec_server/{faces,objects,annotated,...}``.
The bridge needs bridge.certfile / bridge.keyfile in its parameter file (TLS always).
Transport: unless FASTDDS_DEFAULT_PROFILES_FILE is set in your environment, the nodes get
config/fastdds.xml (frames up to 8 MB; see facerec_camera.transport).
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from facerec_camera.transport import profile_env

PACKAGE = "facerec"
BOOLEAN = ["true", "false"]
LOG_LEVELS = ["debug", "info", "warn", "error", "fatal"]


def ros_arguments(log_level, use_security, enclave):
    """--ros-args of a node: its log level, and its SROS2 enclave when security is on."""
    args = ["--log-level", log_level]
    if use_security == "true":
        args += ["--enclave", enclave]
    return args


def _nodes(context):
    def get(name):
        return LaunchConfiguration(name).perform(context)

    namespace = LaunchConfiguration("namespace")
    transport = profile_env(get_package_share_directory(PACKAGE))
    nodes = [Node(
        package=PACKAGE, executable="facerec_server", name="facerec_server",
        namespace=namespace, parameters=[LaunchConfiguration("params_file")],
        ros_arguments=ros_arguments(get("log_level"), get("use_security"), get("enclave")),
        additional_env=transport, output="screen", emulate_tty=True)]
    if get("use_bridge") == "true":
        nodes.append(Node(
            package=PACKAGE, executable="facerec_bridge", name="facerec_bridge",
            namespace=namespace, parameters=[LaunchConfiguration("bridge_params_file")],
            ros_arguments=ros_arguments(get("log_level"), get("use_security"),
                                        get("bridge_enclave")),
            additional_env=transport, output="screen", emulate_tty=True))
    if get("rviz") == "true":
        nodes.append(Node(
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
                        "reads (e.g. robot1, as given to camera.launch.py)"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "server.yaml"]),
            description="parameter file of facerec_server"),
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
