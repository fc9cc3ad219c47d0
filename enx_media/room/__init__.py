"""The live room: participants, streams, floor, duration, moderation, and the policy behind them."""
from .live import LiveRoom, Participant, RoomManager

__all__ = ["LiveRoom", "Participant", "RoomManager"]
