"""The worker on real UDP sockets (127.0.0.1 only): SRTP in, fan-out, SRTP out, NACK, PLI, RR, drops."""
import socket

from enx_media._native import _core
from rtp_util import CM, GCM, GCM256, PLAIN, Peer, pair, pump_for, rtp, udp, unknown_ssrc, vp8


def test_fanout_srtp_continuous_mapping(worker):
    prod = Peer(worker, GCM)
    producer = worker.create_producer(prod.transport, 0xAAAA0001, "vp8")
    specs = [GCM, CM, GCM256, GCM]
    cons = [Peer(worker, s) for s in specs]
    consumers = [worker.create_consumer(c.transport, producer, 0xC0000000 + i, 100 + i)
                 for i, c in enumerate(cons)]
    n = 120
    base_seq, base_ts = 65500, 4294967000   # both wrap during the stream
    for i in range(n):
        prod.send_rtp(rtp(base_seq + i, base_ts + 3000 * i, 0xAAAA0001, payload=vp8(bytes([i]) * 900)))
        if i % 20 == 19:
            worker.poll_once(5)
    for i, c in enumerate(cons):
        got = c.recv_all(n, pump_for(worker))
        assert len(got) == n
        for k, pkt in enumerate(got):
            h = _core.parse_rtp(pkt)
            assert h["ssrc"] == 0xC0000000 + i
            assert h["payload_type"] == 100 + i
            assert h["sequence_number"] == (base_seq + k) & 0xffff
            assert h["timestamp"] == (base_ts + 3000 * k) & 0xffffffff
            assert h["payload"][2:] == bytes([k]) * 900
        assert consumers[i].stats["packets_out"] == n
    assert producer.stats["packets_in"] == n
    assert prod.transport.stats["packets_in"] == n
    for c in cons + [prod]:
        c.close()


def test_nack_retransmits_and_pli_is_forwarded_rate_limited(worker):
    prod, producer, sub, consumer = pair(worker, 0xBB01, 0xBB02, 97, pub=CM)
    for i in range(10):
        prod.send_rtp(rtp(1000 + i, 90000 + i * 3000, 0xBB01, payload=vp8(bytes([i]))))
    got = sub.recv_all(10, pump_for(worker), lose=(3, 5))
    assert len(got) == 8
    # the subscriber lost 1003 and 1005: NACK them (plus 2000, never sent: counted, not sent)
    sub.send_rtcp(_core.write_nack(0x1111, 0xBB02, [1003, 1005, 2000]))
    rtx = sub.recv_all(2, pump_for(worker))
    assert [_core.parse_rtp(p)["sequence_number"] for p in rtx] == [1003, 1005]
    assert [_core.parse_rtp(p)["payload"] for p in rtx] == [vp8(b"\x03"), vp8(b"\x05")]
    st = consumer.stats
    assert st["retransmits"] == 2 and st["drops"]["nack_not_held"] == 1
    # PLI from the subscriber reaches the publisher once; a second within 500 ms is held back
    sub.send_rtcp(_core.write_pli(0x1111, 0xBB02))
    fb = prod.recv_all(1, pump_for(worker), rtcp=True)
    assert len(fb) == 1
    pkt = _core.parse_rtcp(fb[0])[0]
    assert pkt["type"] == "pli" and pkt["media_ssrc"] == 0xBB01
    sub.send_rtcp(_core.write_fir(0x1111, 0xBB02, 1))
    assert prod.recv_all(1, pump_for(worker), rtcp=True, deadline=0.3) == []
    assert producer.stats["pli_forwarded"] == 1 and producer.stats["pli_rate_limited"] == 1
    # receiver report about the consumer's stream is kept
    sub.send_rtcp(_core.write_rr(0x1111, [{"ssrc": 0xBB02, "fraction_lost": 64, "packets_lost": 2,
                                            "highest_seq": 1009, "jitter": 12}]))
    for _ in range(20):
        worker.poll_once(5)
        if consumer.stats["receiver_reports"]:
            break
    st = consumer.stats
    assert st["receiver_reports"] == 1 and st["fraction_lost"] == 0.25 and st["jitter"] == 12
    prod.close()
    sub.close()


def test_restart_and_switch_keep_sequence_continuous(worker):
    a, b = Peer(worker, GCM), Peer(worker, GCM)
    pa = worker.create_producer(a.transport, 0xA1, "opus")
    pb = worker.create_producer(b.transport, 0xB1, "opus")
    sub = Peer(worker, GCM)
    c = worker.create_consumer(sub.transport, pa, 0xC1, 111, clock_rate=48000)
    for i in range(5):
        a.send_rtp(rtp(100 + i, 960 * i, 0xA1, payload=b"\x01" * 50))
    got = sub.recv_all(5, pump_for(worker))
    # publisher restarts with new numbering
    for i in range(5):
        a.send_rtp(rtp(40000 + i, 7777777 + 960 * i, 0xA1, payload=b"\x02" * 50))
    got += sub.recv_all(5, pump_for(worker))
    worker.switch_producer(c, pb)
    for i in range(5):
        b.send_rtp(rtp(9000 + i, 123 + 960 * i, 0xB1, payload=b"\x03" * 50))
    got += sub.recv_all(5, pump_for(worker))
    seqs = [_core.parse_rtp(p)["sequence_number"] for p in got]
    assert seqs == list(range(100, 115))
    ts = [_core.parse_rtp(p)["timestamp"] for p in got]
    assert all(0 < y - x < 2 ** 31 for x, y in zip(ts, ts[1:]))   # monotonic through both switches
    assert pa.stats["restarts"] == 1
    for p in (a, b, sub):
        p.close()


def test_pause_layer_and_drops(worker):
    prod, producer, sub, c = pair(worker, 0xD1, 0xD2, 96, ext_ids={"mid": 1, "rid": 2})
    c.max_temporal_layer = 0
    # VP8 descriptor with T bit: TID alternates 0, 1; only TID 0 goes out, with consecutive seq numbers
    for i in range(8):
        prod.send_rtp(rtp(500 + i, 3000 * i, 0xD1, payload=vp8(b"\x01" * 100, tid=i % 2)))
    got = sub.recv_all(4, pump_for(worker))
    assert [_core.parse_rtp(p)["sequence_number"] for p in got] == [500, 501, 502, 503]
    assert c.stats["drops"]["layer"] == 4
    c.pause()
    prod.send_rtp(rtp(508, 3000 * 8, 0xD1, payload=vp8(b"\x01", tid=0)))
    assert sub.recv_all(1, pump_for(worker), deadline=0.2) == []
    assert c.stats["drops"]["paused"] == 1
    # unknown SSRC: dropped, one event with the MID/RID read from the header extensions
    events = []
    worker.on_event = events.append
    prod.send_rtp(rtp(1, 1, 0xEEEE, ext=[(1, b"v0"), (2, b"h")]))
    # unknown source address: dropped and counted
    with udp() as stranger:
        stranger.sendto(b"\x80" + b"\x00" * 40, worker.address)
        stranger.sendto(b"\xff" * 20, worker.address)
    for _ in range(20):
        worker.poll_once(5)
    assert (prod.transport.id, 0xEEEE, "v0", "h", "") in [unknown_ssrc(e) for e in events]
    d = worker.stats["drops"]
    assert d["unknown_source"] == 1 and d["unknown_ssrc"] == 1 and d["not_media"] == 1
    prod.close()
    sub.close()


def test_stun_and_dtls_go_up_to_python(worker):
    seen = []
    worker.on_control = lambda data, addr: seen.append((data, addr))
    with udp(1) as s:
        stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"x" * 12
        dtls = b"\x16\xfe\xfd" + b"\x00" * 20
        s.sendto(stun, worker.address)
        s.sendto(dtls, worker.address)
        for _ in range(50):
            worker.poll_once(5)
            if len(seen) == 2:
                break
        assert seen == [(stun, s.getsockname()), (dtls, s.getsockname())]
        worker.send(b"reply", s.getsockname())
        assert s.recv(100) == b"reply"


def test_threaded_worker_forwards_plain_transport(worker):
    src, dst = Peer(worker, PLAIN), Peer(worker, PLAIN, timeout=2)
    p = worker.create_producer(src.transport, 5, "opus")
    worker.create_consumer(dst.transport, p, 6, 111, clock_rate=48000)
    worker.start_thread()
    src.send_rtp(rtp(7, 8, 5, payload=b"opus"))
    h = _core.parse_rtp(dst.sock.recv(2048))
    assert (h["ssrc"], h["sequence_number"], h["timestamp"], h["payload"]) == (6, 7, 8, b"opus")
    src.close()
    dst.close()


def test_raw_baseline_sends():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx, udp(1) as rx:
        assert _core.raw_sendmmsg_baseline(tx.fileno(), [rx.getsockname()], b"z" * 100, 5) == 5
        assert [rx.recv(200) for _ in range(5)] == [b"z" * 100] * 5


def test_worker_counts_auth_failures_and_replays(worker):
    prod, producer, sub, _ = pair(worker, 0xF1, 0xF2, 111, codec="opus", sub=CM, clock_rate=48000)
    good = prod.tx.protect(rtp(10, 0, 0xF1, payload=b"ok"))
    bad = bytearray(prod.tx.protect(rtp(11, 960, 0xF1, payload=b"no")))
    bad[-1] ^= 1
    for d in (good, good, bytes(bad)):
        prod.sock.sendto(d, worker.address)
    got = sub.recv_all(1, pump_for(worker))
    for _ in range(10):
        worker.poll_once(2)
    assert [_core.parse_rtp(p)["payload"] for p in got] == [b"ok"]
    drops = prod.transport.stats["drops"]
    assert drops["replay"] == 1 and drops["auth_fail"] == 1
    assert worker.stats["drops"]["replay"] == 1 and producer.stats["packets_in"] == 1
    prod.close()
    sub.close()


def test_a_nack_past_the_retransmission_budget_asks_the_publisher_for_a_key_frame(worker):
    """What cannot be resent leaves the subscriber's decoder waiting for a key frame (aiortc would wait
    seconds, until its jitter buffer overflows): the node asks the publisher for one at once."""
    prod, producer, sub, consumer = pair(worker, 0xBC01, 0xBC02, 96)
    for i in range(300):
        prod.send_rtp(rtp(5000 + i, 3000 * i, 0xBC01, payload=vp8(b"\x00" * 1100, key=i == 0)))
    got = sub.recv_all(300, pump_for(worker))
    assert len(got) == 300
    before = producer.stats["pli_forwarded"]
    out = [_core.parse_rtp(p)["sequence_number"] for p in got]
    for k in range(0, 300, 17):                      # every packet NACKed: more bytes than the budget holds
        sub.send_rtcp(_core.write_nack(0x1, 0xBC02, out[k:k + 17]))
    plis = prod.recv_until(pump_for(worker), lambda got: got, parse=lambda d: [
        x for x in _core.parse_rtcp(d) if x["type"] == "pli"])
    st = consumer.stats
    assert st["drops"]["nack_budget"] > 0 and st["unrepairable"] == st["drops"]["nack_budget"]
    assert 0 < st["retransmits"] < 300
    assert plis and plis[0]["media_ssrc"] == 0xBC01 and producer.stats["pli_forwarded"] == before + 1
    prod.close()
    sub.close()
