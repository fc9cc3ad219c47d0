"""Padding-only RTP packets (a sender's bandwidth probes) are not fanned out, and the consumer's
numbering has no hole where they were."""
import time

from enx_media._native import _core
from rtp_util import udp


def test_padding_only_packets_are_dropped_without_a_gap():
    w = _core.NativeWorker("127.0.0.1", 0)
    pub, sink = udp(0.5), udp(0.5)
    tp = w.create_transport("none")
    w.bind_transport(tp, *pub.getsockname())
    ts = w.create_transport("none")
    w.bind_transport(ts, *sink.getsockname())
    producer = w.create_producer(tp, 4242, "opus")
    consumer = w.create_consumer(ts, producer, 5151, 111, 48000, False)
    packets = [
        _core.write_rtp(payload_type=111, sequence_number=10, timestamp=960, ssrc=4242, payload=b"\xfc" + bytes(40)),
        # padding only: P bit set, the last byte counts the padding, no payload at all (RFC 3550 §5.1)
        bytes([0xA0, 111]) + (11).to_bytes(2, "big") + (960).to_bytes(4, "big") + (4242).to_bytes(4, "big")
        + bytes(199) + bytes([200]),
        _core.write_rtp(payload_type=111, sequence_number=12, timestamp=1920, ssrc=4242, payload=b"\xfc" + bytes(40)),
    ]
    assert _core.parse_rtp(packets[1])["payload"] == b""
    for p in packets:
        pub.sendto(p, w.local_address)
    time.sleep(0.05)
    w.drain(4)
    got = [_core.parse_rtp(sink.recv(2048)) for _ in range(2)]
    assert [g["sequence_number"] for g in got] == [got[0]["sequence_number"], got[0]["sequence_number"] + 1]
    assert all(g["payload"] for g in got)
    assert consumer.stats["drops"] == {"padding_only": 1}
    for s in (pub, sink):
        s.close()
