"""Key-frame requests to a publisher: one PLI per encoding per 500 ms, and a request that falls inside
that window is sent when it closes (once, however many came), so a subscriber that joins just after
another does not wait for the encoder's next periodic key frame. Real UDP sockets with SRTP."""
import time

from enx_media._native import _core
from rtp_util import GCM, Peer, pump_for, rtp, vp8


def plis(peer, worker, until, deadline):
    return peer.recv_until(pump_for(worker), until, deadline=deadline,
                           parse=lambda d: [(time.monotonic(), x["media_ssrc"]) for x in _core.parse_rtcp(d)
                                            if x["type"] == "pli"])


def test_a_request_inside_the_window_goes_out_when_it_closes(worker):
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, 0xC1, "vp8")
    pub.send_rtp(rtp(1, 0, 0xC1, payload=vp8(b"k", key=True)))
    worker.poll_once(20)
    t0 = time.monotonic()
    assert worker.request_keyframe(p) is True
    assert worker.request_keyframe(p) is False          # inside the window: deferred, not sent now
    assert worker.request_keyframe(p) is False          # ... and not queued twice
    got = plis(pub, worker, lambda g: len(g) >= 2, deadline=1.5)
    assert [ssrc for _, ssrc in got] == [0xC1, 0xC1]
    assert got[1][0] - t0 >= 0.45, got[1][0] - t0      # not before the window closed
    assert plis(pub, worker, lambda g: False, deadline=0.7) == []   # nothing more was pending
    assert p.stats["pli_forwarded"] == 2
    pub.close()


def test_a_closed_producer_forgets_its_deferred_request(worker):
    pub = Peer(worker, GCM)
    p = worker.create_producer(pub.transport, 0xC2, "vp8")
    pub.send_rtp(rtp(1, 0, 0xC2, payload=vp8(b"k", key=True)))
    worker.poll_once(20)
    assert worker.request_keyframe(p) and not worker.request_keyframe(p)
    plis(pub, worker, lambda g: len(g) >= 1, deadline=0.3)
    worker.close_producer(p)
    assert plis(pub, worker, lambda g: False, deadline=0.8) == []
    pub.close()
