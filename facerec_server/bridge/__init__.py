"""Secure websocket bridge for devices without ROS (iot-facerecognition protocol).

ROS-free: :mod:`.protocol` (pure), :mod:`.config` (settings and the files they name,
checked), :mod:`.server` (asyncio + websockets, authentication), :mod:`.processing`
(processor contract and core adapter), :mod:`.certs` (test certificates).
"""
from .config import BridgeConfig, BridgeConfigError
from .processing import FrameFailed, PipelineProcessor, UndecodableFrame
from .protocol import ClientSettings, Command, ProtocolError
from .server import BridgeServer, BridgeThread

__all__ = [
    "BridgeConfig", "BridgeConfigError", "BridgeServer", "BridgeThread", "ClientSettings",
    "Command", "FrameFailed", "PipelineProcessor", "ProtocolError", "UndecodableFrame",
]
