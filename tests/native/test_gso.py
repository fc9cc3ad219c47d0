"""UDP GSO in the worker's send path (127.0.0.1 only): a receive batch's packets of one producer go to
each consumer as one sendmsg with UDP_SEGMENT; the consumer must still see separate, correct datagrams."""
import os
import socket
import time
from functools import partial

import pytest

import rtp_util
from enx_media._native import _core
from rtp_util import CM, GCM, rtp, vp8

SO_NO_CHECK = 11   # Linux: a UDP socket without TX checksums may not use GSO (udp_send_skb: -EINVAL)


# recv() waits up to 1 s for each datagram
Peer = partial(rtp_util.Peer, timeout=1.0)
pair = partial(rtp_util.pair, timeout=1.0)


def send_burst(w, prod, packets):
    """All packets reach the worker's socket before one drain, so they share a receive batch."""
    for p in packets:
        prod.send_rtp(p)
    time.sleep(0.05)
    w.drain(1)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def w(request):
    """A worker; with 2 fan-out threads its transports alternate between the caller's and a helper's."""
    return _core.NativeWorker("127.0.0.1", 0, fanout_threads=request.param)


def frame(i, size):
    """A VP8 payload of `size` bytes tagged with i."""
    return vp8(bytes([i & 0xff]) * (size - 2))


def check_stream(peer, raw, base_seq, base_ts, ssrc, sizes):
    assert len(raw) == len(sizes)
    for k, d in enumerate(raw):
        h = _core.parse_rtp(peer.rx.unprotect(d))
        assert h["ssrc"] == ssrc
        assert h["sequence_number"] == (base_seq + k) & 0xffff
        assert h["timestamp"] == (base_ts + 3000 * (k // 3)) & 0xffffffff
        assert h["payload"] == frame(k, sizes[k])


def test_gso_burst_arrives_as_separate_datagrams(w):
    assert w.gso
    prod = Peer(w, GCM)
    producer = w.create_producer(prod.transport, 0xAB01, "vp8")
    subs = [Peer(w, s) for s in (GCM, CM, GCM)]
    consumers = [w.create_consumer(s.transport, producer, 0xC100 + i, 96) for i, s in enumerate(subs)]
    # two frames of equal-size packets whose last is shorter, then one of mixed sizes; seq wraps
    sizes = [1100, 1100, 700, 1100, 1100, 1100, 900, 1100, 400]
    base_seq, base_ts = 65530, 90000
    send_burst(w, prod, [rtp(base_seq + k, base_ts + 3000 * (k // 3), 0xAB01, frame(k, sizes[k]))
                         for k in range(len(sizes))])
    st = w.stats
    # per consumer: [1100 1100 700] [1100 1100 1100 900] [1100 400] -> 3 GSO messages of 3, 4 and 2
    assert st["gso_messages"] == 9 and st["gso_segments"] == 27 and st["gso_fallbacks"] == 0
    assert st["send_calls"] == st["fanout_threads"]     # one sendmmsg per fan-out thread
    raws = []
    for i, s in enumerate(subs):
        raw = s.recv(len(sizes))
        raws.append(raw)
        check_stream(s, raw, base_seq, base_ts, 0xC100 + i, sizes)
        cs = consumers[i].stats
        assert cs["packets_out"] == len(sizes) and cs["bytes_out"] == sum(len(d) for d in raw)
        with pytest.raises(socket.timeout):
            s.sock.settimeout(0.05)
            s.recv(1)
    assert st["packets_out"] == 3 * len(sizes)
    # NACK from the history still works after a GSO send (single datagram, continuous numbering)
    nack = _core.write_nack(0x1234, 0xC100, [(base_seq + 4) & 0xffff])
    subs[0].sock.settimeout(1.0)
    subs[0].send_rtcp(nack)
    time.sleep(0.05)
    w.drain(1)
    again = subs[0].recv(1)[0]       # a replay for the receiver's SRTP window: check it with a fresh one
    assert len(again) == len(raws[0][4])
    h = _core.parse_rtp(again)       # GCM leaves the header in the clear
    assert h["sequence_number"] == (base_seq + 4) & 0xffff and h["ssrc"] == 0xC100
    assert consumers[0].stats["retransmits"] == 1
    for p in subs + [prod]:
        p.close()


def test_gso_refused_falls_back_to_plain_datagrams(w):
    # a socket without UDP checksums makes the kernel refuse UDP_SEGMENT with EINVAL at send time
    s = socket.socket(fileno=os.dup(w.fileno()))
    s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    s.close()
    assert w.gso
    prod = Peer(w, GCM)
    producer = w.create_producer(prod.transport, 0xAB02, "vp8")
    subs = [Peer(w, GCM) for _ in range(2)]
    for i, s in enumerate(subs):
        w.create_consumer(s.transport, producer, 0xC200 + i, 96)
    sizes = [1000] * 6
    send_burst(w, prod, [rtp(100 + k, 3000 * (k // 3), 0xAB02, frame(k, 1000)) for k in range(6)])
    st = w.stats
    # (with 2 threads each may meet the refusal once before the other has switched GSO off)
    assert not w.gso and st["gso"] is False and 1 <= st["gso_fallbacks"] <= st["fanout_threads"]
    for i, s in enumerate(subs):
        check_stream(s, s.recv(6), 100, 0, 0xC200 + i, sizes)
    assert st["packets_out"] == 12 and not st["drops"].get("send_failed")
    # later batches go out plain from the start
    send_burst(w, prod, [rtp(106 + k, 6000 + 3000 * (k // 3), 0xAB02, frame(k, 1000)) for k in range(3)])
    assert w.stats["gso_fallbacks"] == st["gso_fallbacks"] and w.stats["gso_messages"] == st["gso_messages"]
    for s in subs:
        assert len(s.recv(3)) == 3
    for p in subs + [prod]:
        p.close()


def test_gso_off_sends_one_datagram_per_message():
    w = _core.NativeWorker("127.0.0.1", 0, gso=False)
    prod, producer, sub, _ = pair(w, 0xAB03, 0xC300, 96)
    send_burst(w, prod, [rtp(7 + k, 3000 * (k // 3), 0xAB03, frame(k, 800)) for k in range(5)])
    assert w.stats["gso_messages"] == 0 and w.stats["packets_out"] == 5
    check_stream(sub, sub.recv(5), 7, 0, 0xC300, [800] * 5)
    sub.close()
    prod.close()


def test_gso_groups_audio_and_video_of_one_batch_per_destination(w):
    prod = Peer(w, GCM)
    video = w.create_producer(prod.transport, 0xAB04, "vp8")
    audio = w.create_producer(prod.transport, 0xAB05, "opus")
    subs = [Peer(w, GCM) for _ in range(2)]
    for i, s in enumerate(subs):
        w.create_consumer(s.transport, video, 0xC400 + i, 96)
        w.create_consumer(s.transport, audio, 0xC500 + i, 111, 48000)
    opus = _core.write_rtp(payload_type=111, sequence_number=50, timestamp=960, ssrc=0xAB05, payload=b"\xfc" * 60)
    # the audio packet arrives first; the video frame's copies still lead, so that the shorter audio
    # copy can be the last segment of the same GSO message
    send_burst(w, prod, [opus] + [rtp(300 + k, 0, 0xAB04, frame(k, 1000)) for k in range(3)])
    st = w.stats
    assert st["gso_messages"] == 2 and st["gso_segments"] == 8 and st["send_calls"] == st["fanout_threads"]
    for i, s in enumerate(subs):
        got = [_core.parse_rtp(s.rx.unprotect(d)) for d in s.recv(4)]
        assert [(h["ssrc"], h["sequence_number"]) for h in got] == \
            [(0xC400 + i, 300), (0xC400 + i, 301), (0xC400 + i, 302), (0xC500 + i, 50)]
        assert got[3]["payload"] == b"\xfc" * 60 and got[3]["payload_type"] == 111
    for p in subs + [prod]:
        p.close()


def test_bench_sink_counts_datagrams_of_gro_messages(w):
    """bench/lecture_fanout.py --sink-gro: a GSO message queued whole still counts as its datagrams."""
    prod, producer, sub, _ = pair(w, 0xAB06, 0xC600, 96)
    fd = sub.sock.fileno()
    sub.sock.setsockopt(socket.SOL_UDP, 104, 1)   # UDP_GRO before the burst: it is queued as one skb
    send_burst(w, prod, [rtp(10 + k, 0, 0xAB06, frame(k, 900 if k < 4 else 300)) for k in range(5)])
    counts, samples = _core.sink_count([fd], 0.3, 0.1, 1, 1000, True)
    assert w.stats["gso_messages"] == 1
    assert counts == [5]
    h = _core.parse_rtp(sub.rx.unprotect(samples[0]))
    assert h["sequence_number"] == 14 and h["payload"] == frame(4, 300)
    sub.close()
    prod.close()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fanout_threads_keep_every_stream_exact(threads):
    """Several receive batches of video frames and audio to 7 subscribers spread over the fan-out threads:
    every subscriber gets every packet once, in order, decryptable, and the counters add up."""
    w = _core.NativeWorker("127.0.0.1", 0, fanout_threads=threads)
    prod = Peer(w, GCM)
    video = w.create_producer(prod.transport, 0xAB07, "vp8")
    audio = w.create_producer(prod.transport, 0xAB08, "opus")
    subs = [Peer(w, GCM if i % 2 else CM) for i in range(7)]
    vc = [w.create_consumer(s.transport, video, 0xC700 + i, 96) for i, s in enumerate(subs)]
    ac = [w.create_consumer(s.transport, audio, 0xC800 + i, 111, 48000) for i, s in enumerate(subs)]
    frames = 6
    for f in range(frames):
        burst = [rtp(1000 + 3 * f + k, 3000 * f, 0xAB07, frame(3 * f + k, 1100)) for k in range(3)]
        burst.append(_core.write_rtp(payload_type=111, sequence_number=500 + f, timestamp=960 * f, ssrc=0xAB08,
                                     payload=bytes([f]) * 80))
        send_burst(w, prod, burst)
    st = w.stats
    assert st["fanout_threads"] == threads and st["packets_out"] == 7 * 4 * frames
    assert st["gso_segments"] == st["packets_out"] and not st["drops"]
    for i, s in enumerate(subs):
        got = [_core.parse_rtp(s.rx.unprotect(d)) for d in s.recv(4 * frames)]
        v = [h for h in got if h["ssrc"] == 0xC700 + i]
        a = [h for h in got if h["ssrc"] == 0xC800 + i]
        assert [h["sequence_number"] for h in v] == list(range(1000, 1000 + 3 * frames))
        assert [h["payload"] for h in v] == [frame(k, 1100) for k in range(3 * frames)]
        assert [h["sequence_number"] for h in a] == list(range(500, 500 + frames))
        assert vc[i].stats["packets_out"] == 3 * frames and ac[i].stats["packets_out"] == frames
    for p in subs + [prod]:
        p.close()
    del w      # joins the helper threads
