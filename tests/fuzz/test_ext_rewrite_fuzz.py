"""The per-consumer header extension rewrite (consumer.pxi ext_elements + rtp.pxi rtp_write_ext) against
an independent Python reference, on random packets: CSRCs, one-byte / two-byte / unknown-profile /
malformed extension blocks, padding."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enx_media._native import _core

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _find(profile, data, want):
    """RFC 8285 element lookup as the spec reads: first element with ID want; None if absent, malformed
    before it, or after the one-byte form's ID 15."""
    if not want:
        return None
    pos = 0
    if profile == 0xBEDE:
        while pos < len(data):
            if data[pos] == 0:
                pos += 1
                continue
            eid, ln = data[pos] >> 4, (data[pos] & 15) + 1
            if eid == 15:
                return None
            pos += 1
            if pos + ln > len(data):
                return None
            if eid == want:
                return data[pos:pos + ln]
            pos += ln
    elif profile & 0xFFF0 == 0x1000:
        while pos < len(data):
            if data[pos] == 0:
                pos += 1
                continue
            if pos + 2 > len(data):
                return None
            eid, ln = data[pos], data[pos + 1]
            pos += 2
            if pos + ln > len(data):
                return None
            if eid == want:
                return data[pos:pos + ln]
            pos += ln
    return None


def reference(pkt, pub, sub, mid):
    cc = pkt[0] & 15
    hdr_end = 12 + 4 * cc
    body = hdr_end
    audio = None
    if pkt[0] & 0x10:
        profile = int.from_bytes(pkt[hdr_end:hdr_end + 2], "big")
        words = int.from_bytes(pkt[hdr_end + 2:hdr_end + 4], "big")
        data = pkt[hdr_end + 4:hdr_end + 4 + 4 * words]
        body = hdr_end + 4 + 4 * words
        v = _find(profile, data, pub.get("audio_level", 0))
        audio = v[0] if v else None
    el = b""
    if sub.get("mid") and mid:
        el += bytes([(sub["mid"] << 4) | (len(mid) - 1)]) + mid.encode()
    if audio is not None and sub.get("audio_level"):
        el += bytes([sub["audio_level"] << 4, audio])
    first = pkt[0] & ~0x10
    block = b""
    if el:
        first |= 0x10
        el += b"\x00" * (-len(el) % 4)
        block = b"\xbe\xde" + (len(el) // 4).to_bytes(2, "big") + el
    return bytes([first]) + pkt[1:hdr_end] + block + pkt[body:]


one_byte = st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=5)
two_byte = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=20)), max_size=5)


@st.composite
def packets(draw):
    kind = draw(st.sampled_from(["none", "one", "two", "raw"]))
    kw = {}
    if kind == "one":
        els = draw(one_byte)
        val = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v + b"\x00" * draw(st.integers(0, 2)) for i, v in els)
        kw = dict(extension_profile=0xBEDE, extension_value=val + b"\x00" * (-len(val) % 4))
    elif kind == "two":
        els = draw(two_byte)
        val = b"".join(bytes([i, len(v)]) + v for i, v in els)
        kw = dict(extension_profile=0x1000 | draw(st.integers(0, 15)), extension_value=val + b"\x00" * (-len(val) % 4))
    elif kind == "raw":
        n = draw(st.integers(0, 6))
        kw = dict(extension_profile=draw(st.sampled_from([0xBEDE, 0x1000, 0x1234])),
                  extension_value=draw(st.binary(min_size=4 * n, max_size=4 * n)))
    return _core.write_rtp(payload_type=96, sequence_number=draw(st.integers(0, 65535)), timestamp=5, ssrc=9,
                           csrc=draw(st.lists(st.integers(0, 2 ** 32 - 1), max_size=4)),
                           payload=draw(st.binary(max_size=40)), padding_size=draw(st.integers(0, 12)),
                           marker=draw(st.integers(0, 1)), **kw)


ids = st.fixed_dictionaries({}, optional={"mid": st.integers(0, 14), "audio_level": st.integers(0, 14),
                                          "rid": st.integers(0, 14), "transport_cc": st.integers(0, 14),
                                          "abs_send_time": st.integers(0, 14)})
pub_ids = st.fixed_dictionaries({}, optional={"audio_level": st.integers(0, 255), "mid": st.integers(0, 255)})
mids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=16)


@FUZZ
@given(packets(), pub_ids, ids, mids)
def test_rewrite_matches_reference(pkt, pub, sub, mid):
    out = _core.rewrite_header_extensions(pkt, pub, sub, mid)
    assert out == reference(pkt, pub, sub, mid)
    h = _core.parse_rtp(out, {"mid": sub.get("mid", 0)})         # a valid packet whose block reads back
    if sub.get("mid") and mid:
        assert h["mid"] == mid
    assert set(h["extensions"]) <= {sub.get("mid"), sub.get("audio_level")}
