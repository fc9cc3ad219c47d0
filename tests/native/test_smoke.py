"""Touch every cdef class and module-level function so a broken build fails loudly (STYLE.md)."""
from enx_media._native import _core
import enx_media.sfu as sfu


def test_every_class_and_function():
    ctx = _core.SrtpContext("AEAD_AES_128_GCM", b"\x01" * 16, b"\x02" * 12)
    assert ctx.profile == "AEAD_AES_128_GCM" and ctx.stats["streams"] == 0
    w = _core.NativeWorker("127.0.0.1", 0)
    assert w.local_address[1] > 0 and w.fileno() >= 0
    t = w.create_transport("none")
    assert isinstance(t, _core.Transport) and t.stats["packets_in"] == 0
    w.bind_transport(t, "127.0.0.1", 9)
    p = w.create_producer(t, 1, "opus")
    assert isinstance(p, _core.Producer) and p.stats["consumers"] == 0
    c = w.create_consumer(t, p, 2, 111, 48000)
    assert isinstance(c, _core.Consumer) and p.stats["consumers"] == 1 and c.stats["packets_out"] == 0
    assert p.encodings[0]["ssrc"] == 1 and (c.encoding, c.target_encoding) == (0, 0)
    w.set_target_encoding(c, 0)
    sim = w.create_producer(t, codec="vp8", mid="v", encodings=[("q", 0), ("h", 3)])
    assert [e["ssrc"] for e in sim.encodings] == [0, 3]
    d = w.create_direct_producer("opus", ssrc=9)
    assert isinstance(d, _core.Producer) and d.transport is None and w.feed(d, []) == 0
    w.close_producer(d)
    assert w.drain() == ([], []) and w.wait(0) is False
    w.send_transport_feedback()
    w.run_timers()
    assert t.stats["tcc_feedback_sent"] == 0 and p.stats["nacks_sent"] == 0 and p.stats["nack_gave_up"] == 0
    assert w.latency_histogram() == {}
    ev = _core.MediaEvent(_core.UNKNOWN_SSRC, 1, 0, 5, "0")
    assert ev.kind == "unknown_ssrc" and ev.ssrc == 5 and ev == _core.MediaEvent("unknown_ssrc", 1, 0, 5, "0")
    w.close_transport(t)
    assert w.stats["consumers"] == 0 and w.stats["producers"] == 0 and w.stats["transports"] == 0
    for fn in ("parse_rtp", "write_rtp", "pack_header_extensions", "parse_rtcp", "write_sr", "write_rr",
               "write_nack", "write_pli", "write_fir", "write_remb", "parse_vp8_descriptor", "is_keyframe",
               "split_keying_material", "keying_material_length", "raw_sendmmsg_baseline",
               "build_transport_feedback", "rewrite_header_extensions"):
        assert callable(getattr(_core, fn))
    assert sfu.Worker and sfu.MediaEvent is _core.MediaEvent and sfu.Router and sfu.Producer and sfu.Consumer
