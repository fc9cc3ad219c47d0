"""A Python client for an enx-media node, on aiortc: join with a token, publish tracks, receive the
others' tracks, chat, floor control.

    client = RoomClient("ws://127.0.0.1:8080/signaling", token)
    await client.join()
    await client.publish([VideoStreamTrack(), AudioStreamTrack()])
    await client.subscribe()                 # follow every stream, now and later
    track = await client.wait_track(stream_id)
    await client.leave()

Two peer connections, like the node's two transports: one sendonly to publish, one that receives the
node's offers. No STUN server is configured: the node announces a host candidate and is ICE-lite.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _server_validators() -> dict[Any, Draft202012Validator]:   # keyed by the schema's "type" consts
    import jsonschema

    schema = json.loads((Path(__file__).parent / "signaling.schema.json").read_text())
    out = {}
    for name, sub in schema["$defs"].items():
        if name.startswith("server_"):
            out[sub["properties"]["type"]["const"]] = jsonschema.Draft202012Validator({**sub, "$defs": schema["$defs"]})
    return out


def schema_problems(message: Any) -> list[str]:
    """What is wrong with a node-to-client message according to api/signaling.schema.json."""
    if not isinstance(message, dict):
        return ["not an object"]
    validator = _server_validators().get(message.get("type"))
    if validator is None:
        return [f"unknown message type {message.get('type')!r}"]
    return [f"{message.get('type')}: {'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(message)]


class SignalingError(Exception):
    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(f"{message.get('code')} {message.get('error')}: {message.get('desc')}")
        self.code = message.get("code")
        self.reason = message.get("error")
        self.message = message


class SignalingClosed(ConnectionError):
    """The node closed the signaling connection (or it was lost): `code` and `reason` are the WebSocket
    close frame's (4001 removed by a moderator, 4000 session ended, ...; None if lost without one)."""

    def __init__(self, code: int | None, reason: str):
        super().__init__(f"signaling connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


_CLOSED = {"type": "__closed__"}   # queued after the last event: every later wait raises SignalingClosed


def use_loopback_candidates() -> None:
    """Make aioice gather 127.0.0.1 host candidates (it leaves loopback out by default), and only those,
    so every media packet of a test stays on loopback."""
    import aioice.ice

    def loopback_only(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_only


class RoomClient:
    def __init__(self, url: str, token: str, *, loopback: bool = True, timeout: float = 20.0,
                 validate: bool = False, media_address: tuple[str, int] | None = None) -> None:
        """media_address: send media there instead of to the candidate the node announces (a relay or a
        NAT that forwards to the node's media port; tests put a bandwidth shaper there)."""
        self.url = url
        self.media_address = media_address
        self.validate = validate
        self.protocol_errors: list[str] = []   # with validate=True: messages that broke the schema
        self.token = token
        self.timeout = timeout
        if loopback:
            use_loopback_candidates()
        self.ws: ClientConnection | None = None
        self.joined: dict[str, Any] | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._backlog: list[dict[str, Any]] = []
        self.received: dict[str, MediaStreamTrack] = {}     # stream_id -> remote track
        self.stream_info: dict[str, dict[str, Any]] = {}
        self.participants: dict[str, dict[str, Any]] = {}           # participant_id -> info, as this client sees them
        self.publish_pcs: list[RTCPeerConnection] = []
        self.subscribe_pc: RTCPeerConnection | None = None
        self._ids = itertools.count(1)
        self._waiters: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._track_waiters: dict[str, asyncio.Future[MediaStreamTrack]] = {}
        # keyed by mid; a transceiver's mid is None until negotiated, and looking None up finds nothing
        self._mid_to_stream: dict[str | None, str] = {}
        self._offer_lock = asyncio.Lock()
        self.closed = asyncio.Event()

    @property
    def participant_id(self) -> str | None:
        return self.joined["participant_id"] if self.joined else None

    # -- signaling plumbing -------------------------------------------------------------------------
    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=2 ** 20)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for text in self._socket():
                msg = json.loads(text)
                if self.validate:
                    self.protocol_errors += schema_problems(msg)
                waiter = self._waiters.pop(msg.get("id"), None) if "id" in msg else None
                if waiter is not None and not waiter.done():
                    if msg.get("type") == "error":
                        waiter.set_exception(SignalingError(msg))
                    else:
                        waiter.set_result(msg)
                    continue
                if msg.get("type") == "offer":
                    # what it carries is known now, in message order (a stream-removed after it wins);
                    # mids are never reused, so an offer still being applied keeps its mapping
                    for s in msg.get("streams", []):
                        self._mid_to_stream[s["mid"]] = s["stream_id"]
                        self.stream_info[s["stream_id"]] = s
                    asyncio.ensure_future(self._on_offer(msg))
                elif msg.get("type") == "stream-switched":
                    # the same m-line (and track) carries another stream from now on
                    new = msg["stream"]["stream_id"]
                    self._mid_to_stream[msg["mid"]] = new
                    self.stream_info[new] = msg["stream"]
                    track = self.received.pop(msg["from"], None)
                    if track is not None:
                        self._track_arrived(new, track)
                elif msg.get("type") == "stream-added":
                    self.stream_info[msg["stream"]["stream_id"]] = msg["stream"]
                elif msg.get("type") == "stream-removed":
                    self.stream_info.pop(msg["stream_id"], None)
                elif msg.get("type") == "participant-joined":
                    self.participants[msg["participant"]["participant_id"]] = msg["participant"]
                elif msg.get("type") == "participant-left":
                    self.participants.pop(msg["participant_id"], None)
                self.events.put_nowait(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self.events.put_nowait(_CLOSED)
            for w in list(self._waiters.values()) + list(self._track_waiters.values()):
                if not w.done():
                    w.set_exception(self.closed_error())

    def _socket(self) -> ClientConnection:
        if self.ws is None:
            raise ConnectionError("not connected: call join() (or connect()) first")
        return self.ws

    def closed_error(self) -> SignalingClosed:
        return SignalingClosed(getattr(self.ws, "close_code", None), getattr(self.ws, "close_reason", "") or "")

    async def request(self, msg_type: str, **fields: Any) -> dict[str, Any]:
        request_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = fut
        await self._socket().send(json.dumps({"type": msg_type, "id": request_id, **fields}))
        return await asyncio.wait_for(fut, self.timeout)

    async def send_raw(self, text: str) -> None:
        await self._socket().send(text)

    async def next_event(self, msg_type: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """The oldest unread event of that type (any type when None). Events of other types stay
        queued for later calls, in order. Raises SignalingClosed once the connection is closed and no
        such event is left, asyncio.TimeoutError if none comes in time."""
        for i, msg in enumerate(self._backlog):
            if msg_type is None or msg.get("type") == msg_type:
                return self._backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            msg = await asyncio.wait_for(self.events.get(), max(deadline - loop.time(), 0.001))
            if msg is _CLOSED:
                self.events.put_nowait(_CLOSED)
                raise self.closed_error()
            if msg_type is None or msg.get("type") == msg_type:
                return msg
            self._backlog.append(msg)

    # -- room actions --------------------------------------------------------------------------------
    async def join(self) -> dict[str, Any]:
        if self.ws is None:
            await self.connect()
        self.joined = await self.request("join", token=self.token)
        for info in self.joined.get("participants", []):
            self.participants.setdefault(info["participant_id"], info)
        for s in self.joined.get("streams", []):
            self.stream_info[s["stream_id"]] = s
        return self.joined

    def _config(self) -> RTCConfiguration:
        """No STUN server (aiortc would otherwise default to a public one), and max-bundle: the node
        bundles every m-line. With aiortc 1.16's default (balanced), an offer whose first version holds two
        m-lines of a kind puts the second on the first one's own transport, marks it bundled, then stops
        that transport when BUNDLE moves the first one over: the second m-line never receives."""
        return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    async def publish(self, tracks: list[MediaStreamTrack], source: str = "camera") -> RTCPeerConnection:
        """Publish tracks on a publish transport of their own; source "screen" marks its video as a screen
        share (announced so, and served before cameras when a subscriber's bandwidth is short)."""
        pc = RTCPeerConnection(self._config())
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        reply = await self.request("publish", sdp=pc.localDescription.sdp,
                                   **({"source": source} if source != "camera" else {}))
        await pc.setRemoteDescription(RTCSessionDescription(self._remote_sdp(reply["sdp"]), "answer"))
        self.publish_pcs.append(pc)
        return pc

    async def subscribe(self, streams: list[str] | None = None) -> None:
        if self.subscribe_pc is None:
            pc = RTCPeerConnection(self._config())

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                mid = next((t.mid for t in pc.getTransceivers() if t.receiver.track is track), None)
                stream_id = self._mid_to_stream.get(mid)
                if stream_id:
                    self._track_arrived(stream_id, track)

            self.subscribe_pc = pc
        await self.request("subscribe", **({} if streams is None else {"streams": streams}))

    def _track_arrived(self, stream_id: str, track: MediaStreamTrack) -> None:
        self.received[stream_id] = track
        fut = self._track_waiters.pop(stream_id, None)
        if fut and not fut.done():
            fut.set_result(track)

    async def _on_offer(self, msg: dict[str, Any]) -> None:
        async with self._offer_lock:
            pc = self.subscribe_pc
            if pc is None:
                return
            await pc.setRemoteDescription(RTCSessionDescription(self._remote_sdp(msg["sdp"]), "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self.request("answer", sdp=pc.localDescription.sdp)

    def _remote_sdp(self, text: str) -> str:
        """The node's SDP with its host candidates pointed at media_address, if one is set."""
        if self.media_address is None:
            return text
        host, port = self.media_address
        lines = []
        for line in text.split("\r\n"):
            if line.startswith("a=candidate:"):
                f = line.split(" ")
                if len(f) > 5:       # foundation component transport priority address port typ ...
                    f[4], f[5] = host, str(port)
                line = " ".join(f)
            lines.append(line)
        return "\r\n".join(lines)

    async def wait_track(self, stream_id: str, timeout: float | None = None) -> MediaStreamTrack:
        if stream_id in self.received:
            return self.received[stream_id]
        if self.closed.is_set():
            raise self.closed_error()
        fut = self._track_waiters.setdefault(stream_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(fut, timeout or self.timeout)

    async def wait_participant(self, user_ref: str, timeout: float | None = None) -> str:
        """The participant id of the user (the user_id its token was issued for), once this client knows
        of it (the join reply or participant-joined; in a lecture the audience sees moderators only)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            for pid, info in list(self.participants.items()):
                if info.get("user_ref") == user_ref:
                    return pid
            if self.closed.is_set():
                raise self.closed_error()
            if loop.time() > deadline:
                raise asyncio.TimeoutError(f"no participant {user_ref!r}")
            await asyncio.sleep(0.05)

    async def wait_user_stream(self, user_ref: str, kind: str, timeout: float | None = None) -> str:
        """The stream_id of that user's live stream of that kind."""
        return await self.wait_stream(await self.wait_participant(user_ref, timeout), kind, timeout)

    async def wait_stream(self, participant_id: str, kind: str, timeout: float | None = None,
                          source: str | None = None) -> str:
        """The stream_id of a participant's live stream of that kind (and source: camera or screen, if
        given), once the node has announced it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            for sid, info in list(self.stream_info.items()):
                if info["participant_id"] == participant_id and info["kind"] == kind and (
                        source is None or info.get("source") == source):
                    return sid
            if self.closed.is_set():
                raise self.closed_error()
            if loop.time() > deadline:
                raise asyncio.TimeoutError(f"no {kind} stream from {participant_id}")
            await asyncio.sleep(0.05)

    async def stream_settings(self, stream_id: str, max_height: int | None = None,
                              max_fps: int | None = None) -> int | None:
        """Ask for a received video stream at most max_height lines high and max_fps frames a second
        (None: the best there is); the node sends the simulcast layer (and VP8 temporal layers) that fit.
        Returns the layer's index (lowest first), None for a stream of one layer."""
        wish = {k: v for k, v in (("max_height", max_height), ("max_fps", max_fps)) if v is not None}
        reply = await self.request("stream-settings", stream_id=stream_id, **wish)
        encoding: int | None = reply.get("encoding")
        return encoding

    async def chat(self, text: str, to: list[str] | None = None) -> dict[str, Any]:
        return await self.request("chat", text=text, **({"to": to} if to else {}))

    async def leave(self) -> None:
        try:
            if self.ws is not None and not self.closed.is_set():
                await self.request("leave")
        except (ConnectionError, asyncio.TimeoutError, websockets.ConnectionClosed):
            pass
        await self.close()

    async def close(self) -> None:
        for pc in self.publish_pcs:
            await pc.close()
        if self.subscribe_pc is not None:
            await self.subscribe_pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
