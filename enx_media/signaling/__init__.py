"""Signaling: the WebSocket protocol between clients and the node (messages, connections, dispatch)."""
from .connection import JOIN_TIMEOUT, Connection
from .hub import MessageNotifier, SignalingHub

__all__ = ["JOIN_TIMEOUT", "Connection", "MessageNotifier", "SignalingHub"]
