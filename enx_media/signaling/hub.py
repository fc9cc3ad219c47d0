"""The signaling front of a node: `connect()` / `serve()` make a Connection for each client socket, and
`MessageNotifier` is the room's Notifier written as protocol messages to each recipient's
connection."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterable

from .. import errors as E
from ..limits import Limits
from . import messages as M
from .connection import JOIN_TIMEOUT, Close, Connection, Receive, Send

if TYPE_CHECKING:
    from ..room.live import Participant, RoomManager
    from ..room.media import Subscription
    from ..sfu.router import Producer


# How the node ends a connection for a room's reason (WebSocket close codes in the 4000 range).
CLOSE_CODES = {"session-ended": (4000, "session ended"), "removed": (4001, "removed by a moderator"),
               "removed-by-app": (4002, "removed by the application")}


class MessageNotifier:
    """Implements room.live.Notifier: each notification becomes one message per recipient."""

    @staticmethod
    async def _to(people: Iterable["Participant"], message: dict[str, Any], sender: str | None = None) -> None:
        for p in list(people):
            await p.channel.send(message, sender)

    async def participant_joined(self, to: Iterable["Participant"], p: "Participant") -> None:
        await self._to(to, M.participant_joined(p))

    async def participant_left(self, to: Iterable["Participant"], p: "Participant", reason: str) -> None:
        await self._to(to, M.participant_left(p, reason))

    async def stream_added(self, to: Iterable["Participant"], s: "Producer") -> None:
        await self._to(to, M.stream_added(s))

    async def stream_removed(self, to: Iterable["Participant"], s: "Producer") -> None:
        await self._to(to, M.stream_removed(s))

    async def muted(self, to: Iterable["Participant"], target: "Participant", kind: str, muted: bool, by: "Participant",
                    streams: list[str]) -> None:
        await self._to(to, M.muted(target, kind, muted, by, streams))

    async def floor(self, to: Iterable["Participant"], action: str, target: "Participant", by: "Participant") -> None:
        await self._to(to, M.floor(action, target, by))

    async def chat(self, to: Iterable["Participant"], sender: "Participant", text: str, recipients: list[str] | None,
                   sent: float) -> None:
        await self._to(to, M.chat(sender, text, recipients, sent), sender.participant_id)

    async def session_warning(self, to: Iterable["Participant"], seconds_left: int) -> None:
        await self._to(to, M.session_warning(seconds_left))

    async def session_ended(self, to: Iterable["Participant"], reason: str) -> None:
        await self._to(to, M.session_ended(reason))

    async def removed(self, p: "Participant", by: str, reason: str) -> None:
        await p.channel.send(M.removed(by, reason))

    async def offer(self, p: "Participant", sdp: str, subscriptions: list["Subscription"]) -> None:
        await p.channel.send(M.offer(sdp, subscriptions))

    async def stream_switched(self, p: "Participant", sm: "Subscription", was: str) -> None:
        await p.channel.send(M.stream_switched(sm, was))

    async def transport_closed(self, p: "Participant", direction: str, reason: str) -> None:
        exc = E.Conflict(f"{direction} transport closed: {reason}", reason="transport closed")
        await p.channel.send(M.error(exc, transport=direction))

    async def relay(self, p: "Participant", sender: "Participant", payload: dict[str, Any]) -> None:
        await p.channel.send(M.relay(sender, payload), sender.participant_id)

    async def layers(self, p: "Participant", s: "Producer", active: list[bool]) -> None:
        await p.channel.send(M.layers(s, active))

    async def stream_state(self, p: "Participant", s: "Producer", paused: bool) -> None:
        await p.channel.send(M.stream_state(s, paused))

    async def active_speaker(self, p: "Participant", s: "Producer") -> None:
        await p.channel.send(M.active_speaker(s))

    async def disconnect(self, p: "Participant", why: str) -> None:
        await p.channel.close(*CLOSE_CODES[why])


class SignalingHub:
    def __init__(self, rooms: "RoomManager", limits: Limits | None = None) -> None:
        self.rooms = rooms
        self.limits = limits or Limits()
        self.connections: set[Connection] = set()
        self._dropped_from_peers = 0     # by connections already gone

    def connect(self, send: Send, close: Close, *, join_timeout: float = JOIN_TIMEOUT) -> Connection:
        """A Connection for one client socket: feed it frames with `serve()` or `handle_text()`."""
        conn = Connection(self.rooms, send, close, join_timeout=join_timeout, limits=self.limits)
        self.connections.add(conn)
        conn.on_gone = self._gone
        return conn

    def _gone(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._dropped_from_peers += conn.dropped_from_peers

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.connections),
                "dropped_from_peers": self._dropped_from_peers + sum(c.dropped_from_peers for c in self.connections)}

    async def flushed(self, timeout: float = 2.0) -> None:
        """Wait (at most timeout) until every connection has sent what is queued for it: at shutdown,
        so the session-ended messages and close frames leave before the server drops the sockets."""
        if self.connections:
            await asyncio.wait([asyncio.ensure_future(c.flushed(timeout)) for c in list(self.connections)],
                               timeout=timeout + 0.5)

    async def serve(self, send: Send, close: Close, receive: Receive) -> None:
        """Run one client socket to its end: `receive()` returns a text frame (str), a binary frame
        (bytes) or None when the peer is gone."""
        await self.connect(send, close).serve(receive)
