"""A transport accepts media from every address that passed an ICE check, and sends to the selected one."""
import time

from enx_media._native import _core
from rtp_util import udp, video


KEY_FRAME = b"\x9d\x01\x2a" + bytes(100)      # after the payload header: a VP8 key frame's start code


def test_media_from_any_accepted_pair_and_cleanup():
    w = _core.NativeWorker("127.0.0.1", 0)
    first, second, sink = udp(1.0), udp(1.0), udp(1.0)
    pub = w.create_transport("none")
    w.bind_transport(pub, *first.getsockname())
    w.accept_from(pub, *second.getsockname())
    sub = w.create_transport("none")
    w.bind_transport(sub, *sink.getsockname())
    producer = w.create_producer(pub, 1111, "vp8")
    w.create_consumer(sub, producer, 2222, 100, 90000, False)
    for seq, sender in ((1, first), (2, second), (3, first), (4, second)):
        sender.sendto(video(seq, 1111, KEY_FRAME), w.local_address)
    time.sleep(0.05)
    w.drain(4)
    got = [_core.parse_rtp(sink.recv(2048))["sequence_number"] for _ in range(4)]
    assert len(set(got)) == 4 and w.stats["drops"].get("unknown_source", 0) == 0

    # Rebinding to the second pair keeps the first accepted; closing forgets both.
    w.bind_transport(pub, *second.getsockname())
    first.sendto(video(5, 1111, KEY_FRAME), w.local_address)
    time.sleep(0.05)
    w.drain(4)
    assert _core.parse_rtp(sink.recv(2048))["sequence_number"] != got[-1]
    w.close_transport(pub)
    first.sendto(video(6, 1111, KEY_FRAME), w.local_address)
    second.sendto(video(7, 1111, KEY_FRAME), w.local_address)
    time.sleep(0.05)
    w.drain(4)
    assert w.stats["drops"]["unknown_source"] == 2
    for s in (first, second, sink):
        s.close()
