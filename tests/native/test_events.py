"""Typed native events (MediaEvent): every kind the core emits is documented, and carries named fields."""
from enx_media._native import _core
from rtp_util import GCM, Peer, pump_for, rtp


def test_every_kind_is_documented():
    for kind in _core.MEDIA_EVENT_KINDS:
        assert "``%s``" % kind in _core.MediaEvent.__doc__


def _events(worker, n=20):
    got = []
    worker.on_event = got.append
    for _ in range(n):
        worker.poll_once(5)
    return got


def test_keyframe_requested_and_producer_restart_name_the_producer(worker):
    prod = Peer(worker, GCM)
    producer = worker.create_producer(prod.transport, 0x5001, "vp8")
    sub = Peer(worker, GCM)
    worker.create_consumer(sub.transport, producer, 0x5002, 96)
    for i in range(3):
        prod.send_rtp(rtp(100 + i, 3000 * i, 0x5001))
    sub.recv_all(3, pump_for(worker))
    sub.send_rtcp(_core.write_pli(0x1, 0x5002))
    prod.send_rtp(rtp(30000, 99, 0x5001))       # a jump in numbering: the sender restarted
    evs = _events(worker)
    kinds = {e.kind: e for e in evs}
    assert set(kinds) == {_core.KEYFRAME_REQUESTED, _core.PRODUCER_RESTART}, evs
    for e in evs:
        assert isinstance(e, _core.MediaEvent)
        assert (e.transport_id, e.producer_id, e.ssrc) == (prod.transport.id, producer.id, 0x5001)
    prod.close()
    sub.close()
