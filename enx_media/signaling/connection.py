"""One client's signaling connection, transport-agnostic: frames in through `serve()` (or
`handle_text`), messages out through an outbox with a slow-reader limit. It owns the safeguards every
server carrying the protocol needs (join timeout, error budget before join, binary frames refused,
queued messages flushed before the node closes), and a dispatch table from message type to handler.
Room rules are the room's; this module only speaks the protocol and maps EnxErrors to error messages.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .. import errors as E
from ..limits import Limits
from . import messages as M

if TYPE_CHECKING:
    from ..room.live import LiveRoom, Participant, RoomManager

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 30.0             # a socket that never joins is closed after this long
MAX_ERRORS_BEFORE_JOIN = 20     # ... or after this many refused messages


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


Send = Callable[[dict[str, Any]], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]
Receive = Callable[[], Awaitable["str | bytes | None"]]   # a text frame, a binary frame, None: gone

Handler = Callable[["Connection", "LiveRoom", "Participant", dict[str, Any]], Awaitable["dict[str, Any] | None"]]


class Connection:
    """Rate limits (limits.rate_limits) punish the sender: past its allowance a message is refused with an
    error and reaches nobody. The outbox is fair to the reader: what other participants send it (chats,
    relays) is capped per sender, so a crowd of flooders gets its own messages dropped (counted in
    `dropped_from_peers`), and the reader is dropped as too slow only when it stops reading."""

    def __init__(self, rooms: "RoomManager", send: Send, close: Close, *, join_timeout: float = JOIN_TIMEOUT,
                 limits: Limits | None = None) -> None:
        self.rooms = rooms
        self.limits = limits or Limits()
        self._send = send
        self._close = close
        self.join_timeout = join_timeout
        self.live: LiveRoom | None = None
        self.participant: Participant | None = None
        self.closed = False
        self.errors = 0
        self._buckets: dict[str, TokenBucket] = {}
        self.on_gone: Callable[["Connection"], None] | None = None   # told once the socket is done
        # (message, who sent it: a participant id, or None for the node's own), or (code, reason) to close
        self._outbox: asyncio.Queue[tuple[dict[str, Any], str | None] | tuple[int, str]] = asyncio.Queue()
        self._queued_from: dict[str, int] = {}      # peer messages waiting, by sender
        self._peer_queued = 0
        self.dropped_from_peers = 0
        self._writer = asyncio.get_running_loop().create_task(self._write())

    # -- reading ------------------------------------------------------------------------------------
    async def serve(self, receive: Receive) -> None:
        """Read frames until the peer goes or the node closes; then clean up as a leave."""
        deadline = time.monotonic() + self.join_timeout
        peer_gone = False
        try:
            while not self.closed:
                timeout = None if self.participant is not None else max(0.0, deadline - time.monotonic())
                try:
                    frame = await asyncio.wait_for(receive(), timeout)
                except asyncio.TimeoutError:
                    await self.error(E.Conflict("no join within %d s" % self.join_timeout, reason="join timeout"))
                    await self.close(4008, "join timeout")
                    break
                if frame is None:
                    peer_gone = True
                    break
                if isinstance(frame, str):
                    await self.handle_text(frame)
                else:
                    await self.error(E.InvalidRequest("binary frames are not accepted; send JSON text"))
                # A client with a backlog of frames must not hold the loop: its replies go out as it goes
                # (otherwise they pile up unsent until it looks like a slow reader) and others get a turn.
                await asyncio.sleep(0)
                if self.participant is None and self.errors >= MAX_ERRORS_BEFORE_JOIN and not self.closed:
                    await self.close(4008, "too many errors before join")
            if not peer_gone:
                # The node closes: let queued messages (an error, "removed", "session-ended") go first.
                await self.flushed()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            await self.disconnected()

    async def handle_text(self, text: str) -> None:
        """One incoming frame. Never raises: problems become error messages."""
        request_id = msg_type = None
        try:
            msg, request_id = M.parse(text)
            msg_type = M.validate(msg)
            reply = await self._dispatch(msg_type, msg)
            if reply is not None:
                if request_id is not None:
                    reply["id"] = request_id
                await self.send(reply)
        except E.EnxError as exc:
            await self.error(exc, request_id)
            if self.participant is None and msg_type == "join":
                await self.close(4003, exc.reason)  # a refused join ends the connection
        except Exception:  # noqa: BLE001 - never let one message kill the connection or the room
            log.exception("signaling handler failed")
            await self.error(E.EnxError("the node failed to handle this message", reason="internal error",
                                        code=1500), request_id)

    async def _dispatch(self, msg_type: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        bucket = self._buckets.get(msg_type)
        if bucket is None:
            bucket = self._buckets[msg_type] = TokenBucket(*self.limits.rate(msg_type))
        if not bucket.take():
            raise E.RateLimited(f"too many {msg_type} messages: at most {bucket.rate:g} a second "
                                f"(bursts of {bucket.burst:g})")
        if msg_type == "ping":
            return M.pong(time.time())
        if msg_type == "join":
            if self.participant is not None:
                raise E.Conflict("already joined")
            return await self._join(msg)
        if self.live is None or self.participant is None:
            raise E.Conflict("send join first")
        return await HANDLERS[msg_type](self, self.live, self.participant, msg)

    async def _join(self, msg: dict[str, Any]) -> dict[str, Any]:
        live, p = self.rooms.join(self, msg["token"], msg.get("room_id"))
        self.live, self.participant = live, p
        await live.announce_join(p)
        return M.joined(live, p, live.visible_to(p))

    # -- writing ------------------------------------------------------------------------------------
    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item[0], int):  # (code, reason): close after everything queued before it
                try:
                    await self._close(*item)
                except Exception:  # noqa: BLE001 - already gone
                    pass
                return
            message, sender = item
            if sender is not None:
                self._peer_queued -= 1
                self._queued_from[sender] -= 1
                if not self._queued_from[sender]:
                    del self._queued_from[sender]
            try:
                await self._send(message)
            except Exception:  # noqa: BLE001 - a vanished peer; its disconnect handler cleans up
                log.debug("send failed", exc_info=True)
                return

    async def send(self, message: dict[str, Any], sender: str | None = None) -> None:
        """Queue a message; `sender` is the participant it comes from (chat, relay), None for the node's."""
        if self.closed:
            return
        if sender is not None:
            if (self._queued_from.get(sender, 0) >= self.limits.outbox_per_sender
                    or self._peer_queued >= self.limits.outbox_limit):
                self.dropped_from_peers += 1    # that sender's share of this reader is full: its loss
                return
            self._queued_from[sender] = self._queued_from.get(sender, 0) + 1
            self._peer_queued += 1
        elif self._outbox.qsize() - self._peer_queued >= self.limits.outbox_limit:
            # Its writer is stuck on a socket nobody reads: stop it, free the seat now, close the socket.
            log.warning("dropping a client that does not read its messages")
            self.closed = True
            self._writer.cancel()
            asyncio.ensure_future(self._drop_slow())
            return
        self._outbox.put_nowait((message, sender))

    async def _drop_slow(self) -> None:
        try:
            await asyncio.wait_for(self._close(4009, "too slow"), 2)
        except Exception:  # noqa: BLE001 - the socket may be wedged; leaving matters more
            pass
        await self.disconnected()

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait((code, reason))

    async def flushed(self, timeout: float = 5.0) -> None:
        """Wait until the writer has sent (or given up on) everything queued."""
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._writer.cancel()

    async def error(self, exc: E.EnxError, request_id: Any = None, **extra: Any) -> None:
        self.errors += 1
        await self.send(M.error(exc, request_id, **extra))

    async def disconnected(self) -> None:
        """The socket is gone (left, closed, or vanished): clean up as a leave."""
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait((1001, "gone"))
        if self.live is not None and self.participant is not None:
            await self.live.leave(self.participant, "disconnected")
        self._writer.cancel()
        if self.on_gone is not None:
            self.on_gone(self)
            self.on_gone = None


# -- the dispatch table: message type -> handler(connection, live room, participant, message) -----------
async def _leave(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> None:
    await live.leave(p, "left")
    reply = M.ok("leave")
    if "id" in msg:
        reply["id"] = msg["id"]
    await conn.send(reply)
    await conn.close(1000, "left")
    return None


async def _publish(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    return M.answer(await live.publish(p, msg["sdp"], msg.get("source", "camera")))


async def _subscribe(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    await live.subscribe(p, msg.get("streams"))
    return M.ok("subscribe")   # the offer (if there is anything to receive yet) is a message of its own


async def _answer(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    await live.answer(p, msg["sdp"])
    return M.ok("answer")


async def _unpublish(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    return M.ok("unpublish", streams=await live.unpublish(p, msg.get("streams")))


async def _chat(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    return M.ok("chat", sent=await live.chat(p, msg["text"], msg.get("to")))


def _floor(action: str) -> Handler:
    async def handle(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
        await live.floor(p, action, msg.get("participant_id"))
        return M.ok(f"floor-{action}")
    return handle


async def _mute(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    streams = await live.set_muted(p, msg["participant_id"], msg.get("kind", "all"), msg.get("muted", True))
    return M.ok("mute", streams=streams)


async def _remove(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    await live.remove(p, msg["participant_id"], msg.get("reason", ""))
    return M.ok("remove")


async def _stream_settings(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    encoding = live.stream_settings(p, msg["stream_id"], msg.get("max_height"), msg.get("max_fps"))
    return M.ok("stream-settings", **({} if encoding is None else {"encoding": encoding}))


async def _readmit(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    live.readmit(msg["user_ref"], by=p)
    return M.ok("readmit")


async def _record(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    return M.ok("record", recording_id=live.record(p, msg["action"]))


async def _layout(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    live.set_layout(p, msg["layout"])
    return M.ok("layout")


async def _relay(conn: Connection, live: "LiveRoom", p: "Participant", msg: dict[str, Any]) -> dict[str, Any]:
    await live.relay(p, msg["to"], msg["payload"])
    return M.ok("relay")


HANDLERS: dict[str, Handler] = {
    "leave": _leave, "publish": _publish, "subscribe": _subscribe, "answer": _answer, "unpublish": _unpublish,
    "chat": _chat, "mute": _mute, "remove": _remove, "readmit": _readmit, "relay": _relay,
    "stream-settings": _stream_settings, "layout": _layout, "record": _record,
    **{f"floor-{a}": _floor(a) for a in ("request", "grant", "revoke", "release")},
}
