"""Secure websocket bridge for devices without ROS (iot-facerecognition protocol).

ROS-free: :mod:`.protocol` (pure), :mod:`.server` (asyncio + websockets),
:mod:`.processing` (processor contract and core adapter), :mod:`.certs` (test certificates).
"""
from .processing import FrameFailed, PipelineProcessor, UndecodableFrame
from .protocol import ClientSettings, Command, ProtocolError
from .server import BridgeConfig, BridgeConfigError, BridgeServer, BridgeThread

__all__ = [
    "BridgeConfig", "BridgeConfigError", "BridgeServer", "BridgeThread", "ClientSettings",
    "Command", "FrameFailed", "PipelineProcessor", "ProtocolError", "UndecodableFrame",
]
