"""A consumer switched to another producer at that producer's next key frame (switch_producer at_keyframe,
the lecture's move between a publisher's stream and the MCU's composite): the old producer feeds it until
the key frame, then only the new one, with one continuous numbering; what closes meanwhile leaves nothing
behind. Real UDP sockets on 127.0.0.1, SRTP both ways."""
import pytest

from enx_media._native import _core
from rtp_util import FANOUT, GCM, Peer, pump_for, rtp, vp8

A, B, OUT = 0xA100, 0xB100, 0xC100


def seqs(pkts):
    return [_core.parse_rtp(p)["sequence_number"] for p in pkts]


def bodies(pkts):
    return [_core.parse_rtp(p)["payload"][2:] for p in pkts]


class Two:
    """Publishers a and b (VP8, one packet per frame) and a subscriber fed from a."""

    def __init__(self, worker):
        self.w = worker
        self.a, self.b, self.sub = Peer(worker, GCM), Peer(worker, GCM), Peer(worker, GCM)
        self.pa = worker.create_producer(self.a.transport, A, "vp8")
        self.pb = worker.create_producer(self.b.transport, B, "vp8")
        self.c = worker.create_consumer(self.sub.transport, self.pa, OUT, 96)
        self.pump = pump_for(worker)
        self.i = 0

    def frame(self, a=True, b=True, key_b=False, key_a=False):
        """One frame from each publisher (b's first when both: the switch point is mid-batch)."""
        if b:
            self.b.send_rtp(rtp(5000 + self.i, 777000 + 3000 * self.i, B, payload=vp8(b"b%d" % self.i, key=key_b)))
        if a:
            self.a.send_rtp(rtp(100 + self.i, 1000 + 3000 * self.i, A, payload=vp8(b"a%d" % self.i, key=key_a)))
        self.i += 1

    def got(self, n):
        return self.sub.recv_all(n, self.pump)

    def close(self):
        for p in (self.a, self.b, self.sub):
            p.close()


@FANOUT
def test_the_old_producer_feeds_it_until_the_new_ones_key_frame(worker):
    t = Two(worker)
    t.frame(b=False, key_a=True)
    got = t.got(1)
    worker.switch_producer(t.c, t.pb, at_keyframe=True)
    assert t.c.switching and t.c.producer is t.pb
    pli = t.b.recv_all(1, t.pump, rtcp=True)
    assert [(x["type"], x["media_ssrc"]) for x in _core.parse_rtcp(pli[0])] == [("pli", B)]
    for _ in range(3):                     # b has no key frame yet: still a
        t.frame()
    got += t.got(3)
    t.frame(key_b=True)                    # b4 (key) arrives before a4: b from here on, a no more
    for _ in range(3):
        t.frame()
    got += t.got(4)
    assert t.sub.recv_all(1, t.pump, deadline=0.2) == []
    assert bodies(got) == [b"a0", b"a1", b"a2", b"a3", b"b4", b"b5", b"b6", b"b7"]
    assert seqs(got) == list(range(100, 108))                 # one numbering through the switch
    ts = [_core.parse_rtp(x)["timestamp"] for x in got]
    assert all(0 < y - x < 90000 for x, y in zip(ts, ts[1:]))
    assert not t.c.switching
    assert (t.pa.stats["consumers"], t.pb.stats["consumers"]) == (0, 1)   # settled: a's list lets go
    worker.close_producer(t.pa)            # nothing of a is left in the consumer
    t.frame(a=False)
    assert bodies(t.got(1)) == [b"b8"]
    t.close()


def test_switching_back_before_the_key_frame_cancels_it(worker):
    t = Two(worker)
    t.frame(b=False, key_a=True)
    t.got(1)
    worker.switch_producer(t.c, t.pb, at_keyframe=True)
    worker.switch_producer(t.c, t.pa, at_keyframe=True)
    assert not t.c.switching and t.c.producer is t.pa and t.pb.stats["consumers"] == 0
    t.frame(key_b=True)
    assert bodies(t.got(2)) == [b"a1"]
    t.close()


def test_the_old_producer_closing_while_it_waits_hands_it_over_at_once(worker):
    t = Two(worker)
    t.frame(b=False, key_a=True)
    got = t.got(1)
    worker.switch_producer(t.c, t.pb, at_keyframe=True)
    worker.close_producer(t.pa)            # the consumer is b's now: not closed with a
    assert not t.c.switching and t.c.producer is t.pb
    t.frame(a=False)                       # not a key frame: a decoder cannot start on it
    t.frame(a=False, key_b=True)
    got += t.got(2)
    assert bodies(got) == [b"a0", b"b2"] and seqs(got) == [100, 101]
    assert t.c.stats["drops"]["layer"] == 1
    t.close()


def test_the_new_producer_closing_while_it_waits_closes_the_consumer(worker):
    t = Two(worker)
    t.frame(b=False, key_a=True)
    assert bodies(t.got(1)) == [b"a0"]
    worker.switch_producer(t.c, t.pb, at_keyframe=True)
    worker.close_producer(t.pb)            # the consumer was b's from the call on
    assert t.pa.stats["consumers"] == 0
    t.frame(b=False)
    assert t.got(1) == []
    with pytest.raises(ValueError):
        worker.switch_producer(t.c, t.pa)
    t.close()


def test_closing_the_consumer_while_it_waits_leaves_both_producers_clean(worker):
    t = Two(worker)
    t.frame(b=False, key_a=True)
    t.got(1)
    worker.switch_producer(t.c, t.pb, at_keyframe=True)
    worker.close_consumer(t.c)
    assert (t.pa.stats["consumers"], t.pb.stats["consumers"]) == (0, 0)
    t.frame(key_b=True)
    assert t.got(1) == []
    t.close()


def test_a_direct_producer_is_asked_for_its_key_frame_and_audio_switches_at_once(worker):
    t = Two(worker)
    t.frame(b=False, key_a=True)
    t.got(1)
    mcu = worker.create_direct_producer("vp8", ssrc=0xD100)
    events = []
    worker.on_event = events.append
    worker.switch_producer(t.c, mcu, at_keyframe=True)
    worker.poll_once(0)                    # drains without waiting for a datagram: the event is queued
    assert _core.MediaEvent("keyframe_requested", 0, mcu.id, 0xD100) in events
    worker.feed(mcu, [rtp(1, 90, 0xD100, payload=vp8(b"m0", key=False))])    # not a key frame: still a
    t.frame(b=False)
    got = t.got(1)
    worker.feed(mcu, [rtp(2, 3090, 0xD100, payload=vp8(b"m1", key=True))])
    t.frame(b=False)
    got += t.got(2)
    assert bodies(got) == [b"a1", b"m1"]
    # audio has no key frames: at_keyframe changes over at once
    oa = worker.create_producer(t.a.transport, 0xA200, "opus")
    ob = worker.create_producer(t.b.transport, 0xB200, "opus")
    ca = worker.create_consumer(t.sub.transport, oa, 0xC200, 111, clock_rate=48000)
    worker.switch_producer(ca, ob, at_keyframe=True)
    assert not ca.switching and oa.stats["consumers"] == 0
    t.close()
