"""Type stub for the compiled packet core (built from ext/_core.pyx and the ext/*.pxi it includes).

Only what Python can see is declared: the ``cdef class`` types with their ``def`` methods, properties
and ``cdef readonly`` attributes, the module-level ``def`` functions and the module constants. C-level
``cdef``/``cpdef`` internals, enums and structs are invisible to Python and are not listed.

Checked against the built module with ``python -m mypy.stubtest enx_media._native._core``
(tests/native/test_stub.py).
"""
from collections.abc import Iterable
from typing import Any, Final, Literal

from typing_extensions import Self, disjoint_base

# Private aliases (stub only; not names of the module).
_Addr = tuple[str, int]                 # (host, port), IPv4 dotted quad
_ExtIds = dict[str, int]                # header extension name -> negotiated ID: "mid", "rid",
                                        # "repaired_rid", "abs_send_time", "transport_cc", "audio_level"
_Stats = dict[str, Any]                 # counters (int), "drops": {reason: count}, nested stats dicts
_Encodings = list[tuple[str, int]] | list[tuple[str, int, int]]   # [(rid, ssrc[, rtx_ssrc])], 0 while not known

# Cython-generated module attributes (a doctest dict, and module-level copies of the pickling helpers
# Cython emits for its extension types); declared so that a plain stubtest run reports nothing missing.
__test__: dict[str, str]
def __reduce_cython__(self: Any) -> Any: ...
def __setstate_cython__(self: Any, __pyx_state: Any) -> Any: ...

# ---------------------------------------------------------------- events (events.pxi)

UNKNOWN_SSRC: Final = "unknown_ssrc"
KEYFRAME_REQUESTED: Final = "keyframe_requested"
PRODUCER_RESTART: Final = "producer_restart"
ENCODING_BOUND: Final = "encoding_bound"
BANDWIDTH_DOWN: Final = "bandwidth_down"
MEDIA_EVENT_KINDS: Final[
    tuple[
        Literal["unknown_ssrc"],
        Literal["keyframe_requested"],
        Literal["producer_restart"],
        Literal["encoding_bound"],
        Literal["bandwidth_down"],
    ]
]

@disjoint_base
class MediaEvent:
    """Something the packet core saw that Python may act on (NativeWorker.drain()'s second list).

    kind is one of MEDIA_EVENT_KINDS ("unknown" for a kind this build does not name); fields the
    kind does not know are 0 or ""."""

    def __init__(
        self,
        kind: str,
        transport_id: int = 0,
        producer_id: int = 0,
        ssrc: int = 0,
        mid: str = "",
        rid: str = "",
        repaired_rid: str = "",
    ) -> None: ...
    @property
    def kind(self) -> str: ...
    @property
    def transport_id(self) -> int: ...
    @property
    def producer_id(self) -> int: ...
    @property
    def ssrc(self) -> int: ...
    @property
    def mid(self) -> str: ...
    @property
    def rid(self) -> str: ...
    @property
    def repaired_rid(self) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    # Cython's pickle support (MediaEvent has only Python-object fields, so it pickles)
    def __reduce_cython__(self) -> tuple[Any, ...]: ...
    def __setstate_cython__(self, __pyx_state: Any) -> None: ...

# ---------------------------------------------------------------- SRTP (srtp.pxi)

PROFILES: Final[dict[str, int]]                     # profile name -> C id; "none" = plain RTP
PROFILE_KEY_SALT: Final[dict[str, tuple[int, int]]]  # profile -> (master key length, master salt length)

@disjoint_base
class SrtpContext:
    """One direction's SRTP+SRTCP session keys. ValueError for an unknown profile or key/salt lengths
    that do not match it; RuntimeError if OpenSSL refuses the keys."""

    def __new__(cls, profile: str, master_key: bytes = b"", master_salt: bytes = b"") -> Self: ...
    @property
    def profile(self) -> str: ...
    # each raises ValueError("SRTP: <reason>") on a packet it refuses
    def protect(self, data: bytes) -> bytes: ...
    def unprotect(self, data: bytes) -> bytes: ...
    def protect_rtcp(self, data: bytes) -> bytes: ...
    def unprotect_rtcp(self, data: bytes) -> bytes: ...
    @property
    def stats(self) -> dict[str, int]:
        """{"auth_fail", "replayed", "streams"}."""

def split_keying_material(
    material: bytes, profile: str, is_server: bool
) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """((local_key, local_salt), (remote_key, remote_salt)) for this side (RFC 5764 §4.2)."""

def keying_material_length(profile: str) -> int: ...

# ---------------------------------------------------------------- drop reasons (stats.pxi)

DROP_REASONS: Final[list[str]]      # the names used as keys of every stats()["drops"] dict

# ---------------------------------------------------------------- entities (entities.pxi)

@disjoint_base
class Transport:
    """A remote peer's 5-tuple and its SRTP keys (rx: theirs, tx: ours); made by
    NativeWorker.create_transport."""

    @property
    def id(self) -> int: ...
    @property
    def rx(self) -> SrtpContext | None:
        """None for profile "none"."""
    @property
    def tx(self) -> SrtpContext | None:
        """None for profile "none"."""
    @property
    def profile(self) -> str: ...
    @property
    def worker_ref(self) -> object: ...
    @property
    def tx_ssrcs(self) -> set[int]:
        """Consumer SSRCs ever sent with tx (never reused: SRTP nonces)."""
    @property
    def last_consent(self) -> float | None:
        """time.monotonic() of the last consent check the core answered (None: none yet)."""
    @property
    def bwe(self) -> _Stats:
        """The downlink estimator: estimate_bps, acked_bps, limited, state, probing, probes_ok, ..."""
    @property
    def stats(self) -> _Stats: ...

@disjoint_base
class Producer:
    """One incoming track (one mid): up to 3 encodings (rid -> SSRC); made by
    NativeWorker.create_producer / create_direct_producer."""

    @property
    def transport(self) -> Transport | None:
        """None for a Python-fed (direct) producer."""
    @property
    def codec(self) -> str: ...
    @property
    def mid(self) -> str: ...
    @property
    def ssrc(self) -> int:
        """The first encoding's SSRC (0 while not known yet)."""
    @property
    def id(self) -> int: ...
    @property
    def encodings(self) -> list[dict[str, Any]]:
        """[{"index": int, "rid": str, "ssrc": int (0: not known yet), "stats": dict}]."""
    @property
    def stats(self) -> _Stats: ...

@disjoint_base
class Consumer:
    """One producer's stream as sent to one transport; made by NativeWorker.create_consumer."""

    @property
    def transport(self) -> Transport: ...
    @property
    def producer(self) -> Producer: ...
    @property
    def ssrc(self) -> int: ...
    @property
    def id(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    def pause(self) -> None: ...
    def resume(self, wait_keyframe: bool = True) -> None: ...
    @property
    def encoding(self) -> int:
        """Index of the producer encoding it forwards now."""
    @property
    def target_encoding(self) -> int: ...
    @property
    def switching(self) -> bool:
        """A switch to its producer waits for that producer's key frame (switch_producer at_keyframe)."""
    @property
    def max_temporal_layer(self) -> int: ...
    @max_temporal_layer.setter
    def max_temporal_layer(self, tid: int) -> None: ...
    @property
    def stats(self) -> _Stats: ...

# ---------------------------------------------------------------- the worker (worker.pxi)

@disjoint_base
class NativeWorker:
    """Owns one UDP socket and the packet path; Python drives it with drain() once per readiness.
    Control methods raise ValueError for a transport/producer/consumer closed or not of this worker."""

    # the arguments go to the C-level __cinit__ (tp_new): they belong to __new__, not __init__
    def __new__(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        buffer_bytes: int = 8388608,
        gso: bool = True,
        fanout_threads: int = 1,
    ) -> Self: ...
    @property
    def local_address(self) -> _Addr: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def create_transport(
        self,
        profile: str = "none",
        rx_key: bytes = b"",
        rx_salt: bytes = b"",
        tx_key: bytes = b"",
        tx_salt: bytes = b"",
        ext_ids: _ExtIds | None = None,
    ) -> Transport: ...
    def bind_transport(self, t: Transport, host: str, port: int) -> None: ...
    def set_ice_credentials(self, t: Transport, local_ufrag: str, local_pwd: str, remote_ufrag: str) -> None: ...
    def accept_from(self, t: Transport, host: str, port: int) -> None: ...
    def close_transport(self, t: Transport | None) -> None: ...
    def create_producer(
        self,
        transport: Transport,
        ssrc: int = 0,
        codec: str = "vp8",
        *,
        mid: str = "",
        encodings: _Encodings | None = None,
        payload_type: int = 0,
        rtx_payload_type: int = 0,
        rtx_ssrc: int = 0,
    ) -> Producer: ...
    def create_direct_producer(
        self,
        codec: str = "vp8",
        ssrc: int = 0,
        *,
        encodings: _Encodings | None = None,
        ext_ids: _ExtIds | None = None,
    ) -> Producer: ...
    def feed(self, producer: Producer, packets: list[bytes]) -> int:
        """Fan out plain RTP datagrams as the direct producer's; returns how many were valid RTP."""
    def tap(self, producer: Producer, on: bool = True) -> None:
        """Keep (or stop keeping) the producer's ingested packets for tap_read()."""
    def tap_read(self, producer: Producer) -> list[tuple[int, bytes]]:
        """(arrival monotonic ns, RTP packet) since the last call, oldest first."""
    def tap_stats(self, producer: Producer) -> dict[str, int]: ...
    def close_producer(self, p: Producer | None) -> None: ...
    def create_consumer(
        self,
        transport: Transport,
        producer: Producer,
        ssrc: int,
        payload_type: int,
        clock_rate: int = 90000,
        wait_keyframe: bool = False,
        ext_ids: _ExtIds | None = None,
        mid: str = "",
        *,
        rtx_ssrc: int = 0,
        rtx_payload_type: int = 0,
    ) -> Consumer: ...
    def close_consumer(self, c: Consumer | None) -> None: ...
    def switch_producer(self, c: Consumer, p: Producer, at_keyframe: bool = False, encoding: int = -1) -> None: ...
    def set_target_encoding(self, c: Consumer, encoding: int) -> None: ...
    def request_keyframe(self, p: Producer, encoding: int = -1) -> bool: ...
    def probe(self, t: Transport, target_bps: int, duration_ms: int = 1000) -> None: ...
    def send_sender_reports(self) -> None: ...
    def send_transport_feedback(self) -> None: ...
    def run_timers(self) -> bool: ...
    @property
    def pace_tick_ms(self) -> int: ...
    def drain(self, max_batches: int = 64) -> tuple[list[tuple[bytes, _Addr]], list[MediaEvent]]:
        """(control, events): control is [(datagram, (host, port))] for STUN/DTLS, events [MediaEvent]."""
    def serve(self, notify_fd: int, stop_fd: int, timer_ms: int = 20) -> None:
        """The packet path on the calling thread until stop_fd is readable; notify_fd (an eventfd) is
        written when take_queues() has something."""
    def take_queues(self) -> tuple[list[tuple[bytes, _Addr]], list[MediaEvent]]: ...
    def wait(self, timeout_ms: int) -> bool: ...
    def send(self, data: bytes, host: str, port: int) -> None: ...
    @property
    def stats(self) -> _Stats: ...
    def latency_histogram(self, reset: bool = False) -> dict[float, int]:
        """{bucket_upper_ms: count}."""
    @property
    def gso(self) -> bool: ...
    @gso.setter
    def gso(self, on: bool) -> None: ...

# ---------------------------------------------------------------- RTP (rtp.pxi)

def parse_rtp(data: bytes, ext_ids: _ExtIds | None = None) -> dict[str, Any]:
    """version, padding, extension, marker, payload_type, sequence_number, timestamp, ssrc,
    csrc (list[int]), extension_profile, extension_value (bytes), extensions ({id: bytes}), payload,
    padding_size; with ext_ids also mid/rid/repaired_rid (str), abs_send_time, transport_cc (int) and
    audio_level ((level_dbov, voice)) where present. ValueError names the defect."""

def pack_header_extensions(extensions: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    """(profile, value) of an RFC 8285 block, padded to 32 bits."""

def write_rtp(
    *,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: bytes = b"",
    marker: int = 0,
    csrc: list[int] | None = None,
    extension_profile: int = 0,
    extension_value: bytes | None = None,
    padding_size: int = 0,
) -> bytes: ...

# ---------------------------------------------------------------- RTCP (rtcp.pxi)

# report blocks: {"ssrc": int, and optional "fraction_lost", "packets_lost", "highest_seq", "jitter",
# "lsr", "dlsr": int}
def write_sr(
    ssrc: int,
    ntp: int,
    rtp_ts: int,
    packets: int,
    octets: int,
    reports: list[dict[str, int]] | None = None,
) -> bytes: ...
def write_rr(ssrc: int, reports: list[dict[str, int]] | None = None) -> bytes: ...
def write_nack(ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes: ...
def write_pli(ssrc: int, media_ssrc: int) -> bytes: ...
def write_fir(ssrc: int, media_ssrc: int, seqnr: int = 0) -> bytes: ...
def write_remb(ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes: ...
def parse_rtcp(data: bytes) -> list[dict[str, Any]]:
    """One dict per packet of the compound, "type" in sr, rr, sdes, bye, nack, transport_cc, rtpfb,
    pli, fir, remb, psfb, unknown; the other keys depend on the type. ValueError if malformed."""

# ---------------------------------------------------------------- payloads (payload.pxi)

def parse_vp8_descriptor(payload: bytes) -> dict[str, Any]:
    """x, n, s, pid, picture_id_bits, header_len (int); picture_id, tl0picidx, tid, keyidx
    (int or None); layer_sync, keyframe."""

def is_keyframe(codec: str, payload: bytes) -> bool: ...
def h264_size(payload: bytes) -> tuple[int, int]: ...

# ---------------------------------------------------------------- transport-cc (twcc.pxi)

def build_transport_feedback(
    packets: list[tuple[int, int]],
    sender_ssrc: int = 1,
    media_ssrc: int = 0,
    max_size: int = 1200,
    fb_count: int = 0,
) -> list[bytes]:
    """Feedback packets for [(transport-wide seq, arrival µs)]."""

# ---------------------------------------------------------------- consumer rewrite (consumer.pxi)

def rewrite_header_extensions(
    packet: bytes,
    publisher_ids: _ExtIds | None = None,
    subscriber_ids: _ExtIds | None = None,
    mid: str = "",
) -> bytes: ...

# ---------------------------------------------------------------- bench helpers (benchtools.pxi)

def sink_count(
    fds: list[int],
    max_seconds: float,
    idle_stop: float,
    sample_every: int = 0,
    poll_interval_us: int = 0,
    gro: bool = False,
) -> tuple[list[int], dict[int, bytes]]:
    """(counts per socket, {socket index: last datagram})."""

def raw_sendmmsg_baseline(fd: int, dests: list[_Addr], payload: bytes, count: int) -> int:
    """How many datagrams were sent."""

# MCU kernels (ext/compositor.pxi, ext/mixer.pxi)
def composite(
    canvas: Any,
    src: Any,
    x: int,
    y: int,
    w: int,
    h: int,
    *,
    border: int = 0,
    border_yuv: tuple[int, int, int] = (235, 128, 128),
    marker: int = 0,
    marker_yuv: tuple[int, int, int] = (81, 90, 240),
    name: str = "",
) -> None: ...
def mix(inputs: Any, full: Any, minus: Any = None) -> None: ...
