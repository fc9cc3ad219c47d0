# RTP fixed header, CSRCs, padding and header extensions (RFC 3550 §5.1, RFC 8285).
# Parsers return a status (0 = ok, negative = named drop reason) and never raise per packet.

cdef enum:
    RTP_MAX_CSRC = 15

# status codes shared by the parsers (also used as drop-reason indexes, see stats.pxi)
cdef enum:
    ST_OK = 0
    ST_TRUNCATED = -1
    ST_BAD_VERSION = -2
    ST_BAD_PADDING = -3
    ST_BAD_EXTENSION = -4
    ST_BAD_LENGTH = -5
    ST_NOT_FOUND = -6

cdef struct RtpHeader:
    int padding
    int extension
    int csrc_count
    int marker
    int payload_type
    uint16_t seq
    uint32_t timestamp
    uint32_t ssrc
    uint32_t csrc[RTP_MAX_CSRC]
    uint16_t ext_profile
    int ext_offset        # offset of the extension data (after profile/length)
    int ext_len           # bytes of extension data
    int header_len        # fixed header + CSRCs + extension = payload offset
    int payload_len
    int padding_len

cdef struct ExtIds:
    # negotiated header extension IDs (0 = not negotiated), RFC 8285 §4
    int mid
    int rid
    int rrid
    int abs_send_time
    int transport_cc
    int audio_level

cdef struct RtpLayout:
    # what a consumer's rewrite needs of a parsed packet, found once per packet (not once per copy)
    int hdr_end           # end of the fixed header + CSRCs: where an extension block starts
    int body_off          # payload start (after the extension block); payload + padding run to the end
    int audio_level       # the publisher's RFC 6464 audio-level byte, -1 if the packet has none
    # VP8 (payload.pxi vp8_layout): picture ID and TL0PICIDX, which a consumer rewrites to stay continuous
    # across layer switches; offsets from the payload start, -1 when absent
    int vp8_picid
    int vp8_picid_bits
    int vp8_picid_off
    int vp8_tl0
    int vp8_tl0_off

cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t rd24(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 16) | (<uint32_t>p[1] << 8) | p[2]

cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xff

cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff


cdef int rtp_parse(const uint8_t *buf, int length, RtpHeader *h) noexcept nogil:
    cdef int off, i, ext_words
    if length < 12:
        return ST_TRUNCATED
    if (buf[0] >> 6) != 2:
        return ST_BAD_VERSION
    h.padding = (buf[0] >> 5) & 1
    h.extension = (buf[0] >> 4) & 1
    h.csrc_count = buf[0] & 0x0f
    h.marker = buf[1] >> 7
    h.payload_type = buf[1] & 0x7f
    h.seq = rd16(buf + 2)
    h.timestamp = rd32(buf + 4)
    h.ssrc = rd32(buf + 8)
    off = 12
    if length < off + 4 * h.csrc_count:
        return ST_TRUNCATED
    for i in range(h.csrc_count):
        h.csrc[i] = rd32(buf + off)
        off += 4
    h.ext_profile = 0
    h.ext_offset = 0
    h.ext_len = 0
    if h.extension:
        if length < off + 4:
            return ST_TRUNCATED
        h.ext_profile = rd16(buf + off)
        ext_words = rd16(buf + off + 2)
        off += 4
        if length < off + 4 * ext_words:
            return ST_TRUNCATED
        h.ext_offset = off
        h.ext_len = 4 * ext_words
        off += h.ext_len
    h.header_len = off
    h.padding_len = 0
    if h.padding:
        # RFC 3550 §5.1: last octet counts the padding, itself included
        if length <= off or buf[length - 1] == 0 or buf[length - 1] > length - off:
            return ST_BAD_PADDING
        h.padding_len = buf[length - 1]
    h.payload_len = length - off - h.padding_len
    return ST_OK


cdef int rtp_find_ext(const uint8_t *buf, const RtpHeader *h, int ext_id,
                      const uint8_t **value, int *value_len) noexcept nogil:
    """Find one element by ID in the RFC 8285 one-byte (0xBEDE, §4.2) or two-byte (0x100X, §4.3) form."""
    cdef const uint8_t *p
    cdef int pos = 0, end, eid, elen
    if not h.extension or ext_id <= 0:
        return ST_NOT_FOUND
    p = buf + h.ext_offset
    end = h.ext_len
    if h.ext_profile == 0xBEDE:
        while pos < end:
            if p[pos] == 0:          # padding byte
                pos += 1
                continue
            eid = p[pos] >> 4
            elen = (p[pos] & 0x0f) + 1
            if eid == 15:            # §4.2: ID 15 stops processing
                return ST_NOT_FOUND
            pos += 1
            if pos + elen > end:
                return ST_BAD_EXTENSION
            if eid == ext_id:
                value[0] = p + pos
                value_len[0] = elen
                return ST_OK
            pos += elen
        return ST_NOT_FOUND
    elif (h.ext_profile & 0xfff0) == 0x1000:
        while pos < end:
            if p[pos] == 0:
                pos += 1
                continue
            if pos + 2 > end:
                return ST_BAD_EXTENSION
            eid = p[pos]
            elen = p[pos + 1]
            pos += 2
            if pos + elen > end:
                return ST_BAD_EXTENSION
            if eid == ext_id:
                value[0] = p + pos
                value_len[0] = elen
                return ST_OK
            pos += elen
        return ST_NOT_FOUND
    return ST_NOT_FOUND


cdef int rtp_ext_string(const uint8_t *buf, const RtpHeader *h, int ext_id,
                        char *out, int out_cap) noexcept nogil:
    """Copy a string element (mid, rid, repaired-rid: RFC 8843 §15, RFC 8852) NUL-terminated."""
    cdef const uint8_t *v
    cdef int n, st
    st = rtp_find_ext(buf, h, ext_id, &v, &n)
    if st != ST_OK:
        out[0] = 0
        return st
    if n >= out_cap:
        n = out_cap - 1
    memcpy(out, v, n)
    out[n] = 0
    return n


cdef int rtp_ext_uint(const uint8_t *buf, const RtpHeader *h, int ext_id, int nbytes,
                      uint32_t *out) noexcept nogil:
    """Big-endian integer element: abs-send-time (3 bytes), transport-cc seq (2 bytes)."""
    cdef const uint8_t *v
    cdef int n, st, i
    cdef uint32_t x = 0
    st = rtp_find_ext(buf, h, ext_id, &v, &n)
    if st != ST_OK:
        return st
    if n < nbytes:
        return ST_BAD_EXTENSION
    for i in range(nbytes):
        x = (x << 8) | v[i]
    out[0] = x
    return ST_OK


cdef void rtp_layout(const uint8_t *buf, const RtpHeader *h, const ExtIds *ids, RtpLayout *l) noexcept nogil:
    cdef const uint8_t *v
    cdef int n
    l.hdr_end = 12 + 4 * h.csrc_count
    l.body_off = h.header_len
    l.audio_level = -1
    l.vp8_picid = l.vp8_tl0 = -1
    l.vp8_picid_off = l.vp8_tl0_off = -1
    l.vp8_picid_bits = 0
    if ids.audio_level and rtp_find_ext(buf, h, ids.audio_level, &v, &n) == ST_OK and n >= 1:
        l.audio_level = v[0]


cdef inline int rtp_write_ext(uint8_t *out, int cap, const uint8_t *buf, int length, const RtpLayout *l,
                              const uint8_t *elems, int elems_len) noexcept nogil:
    """Copy packet buf into out with its header extension block replaced by elems: elements already in
    the RFC 8285 §4.2 one-byte form, padded here to 32 bits; elems_len 0: no block, X bit clear. CSRCs,
    payload and padding (the P bit and its count byte stay valid: they are at the end) are kept.
    Returns the new length, or ST_NO_ROOM if it would not fit cap bytes."""
    cdef int blk = 0, body = length - l.body_off, pos
    if elems_len == 0 and l.body_off == l.hdr_end:
        # no block in, none out: the copy as it came (the common case of a consumer without extensions)
        if length > cap:
            return ST_NO_ROOM
        memcpy(out, buf, length)
        return length
    if elems_len:
        blk = 4 + ((elems_len + 3) & ~3)
    if l.hdr_end + blk + body > cap:
        return ST_NO_ROOM
    memcpy(out, buf, l.hdr_end)
    if elems_len:
        out[0] |= 0x10
        out[l.hdr_end] = 0xBE
        out[l.hdr_end + 1] = 0xDE
        wr16(out + l.hdr_end + 2, <uint16_t>((blk - 4) // 4))
        memcpy(out + l.hdr_end + 4, elems, elems_len)
        pos = l.hdr_end + 4 + elems_len
        while pos < l.hdr_end + blk:
            out[pos] = 0
            pos += 1
    else:
        out[0] &= 0xef
    memcpy(out + l.hdr_end + blk, buf + l.body_off, body)
    return l.hdr_end + blk + body


cdef inline void rtp_set_header(uint8_t *buf, int payload_type, uint16_t seq, uint32_t ts,
                                uint32_t ssrc) noexcept nogil:
    """Rewrite the fields an SFU consumer changes, keeping the marker bit (RFC 3550 §5.1)."""
    buf[1] = (buf[1] & 0x80) | (payload_type & 0x7f)
    wr16(buf + 2, seq)
    wr32(buf + 4, ts)
    wr32(buf + 8, ssrc)


# ---- Python-facing helpers (tests, tools): one call per packet is fine off the hot path ----

cdef ExtIds _ext_ids_from(object ext_ids):
    cdef ExtIds ids
    memset(&ids, 0, sizeof(ids))
    if ext_ids:
        ids.mid = ext_ids.get("mid", 0)
        ids.rid = ext_ids.get("rid", 0)
        ids.rrid = ext_ids.get("repaired_rid", 0)
        ids.abs_send_time = ext_ids.get("abs_send_time", 0)
        ids.transport_cc = ext_ids.get("transport_cc", 0)
        ids.audio_level = ext_ids.get("audio_level", 0)
    return ids

_STATUS_NAMES = {ST_TRUNCATED: "truncated", ST_BAD_VERSION: "bad version", ST_BAD_PADDING: "bad padding",
                 ST_BAD_EXTENSION: "bad header extension", ST_BAD_LENGTH: "bad length"}


def parse_rtp(bytes data, dict ext_ids=None):
    """Parse one RTP packet into a dict; raises ValueError naming the defect."""
    cdef RtpHeader h
    cdef const uint8_t *buf = <const uint8_t *>data
    cdef const uint8_t *v
    cdef int st, n, pos
    cdef uint32_t x
    cdef char sbuf[256]
    cdef ExtIds ids = _ext_ids_from(ext_ids)
    st = rtp_parse(buf, len(data), &h)
    if st != ST_OK:
        raise ValueError("RTP: " + _STATUS_NAMES.get(st, str(st)))
    exts = {}
    if h.extension and (h.ext_profile == 0xBEDE or (h.ext_profile & 0xfff0) == 0x1000):
        # enumerate every element so tests can compare with aiortc
        for eid in range(1, 256 if h.ext_profile != 0xBEDE else 15):
            st = rtp_find_ext(buf, &h, eid, &v, &n)
            if st == ST_BAD_EXTENSION:
                raise ValueError("RTP: bad header extension")
            if st == ST_OK:
                exts[eid] = bytes(v[:n])
    out = {
        "version": 2, "padding": h.padding, "extension": h.extension, "marker": h.marker,
        "payload_type": h.payload_type, "sequence_number": h.seq, "timestamp": h.timestamp,
        "ssrc": h.ssrc, "csrc": [h.csrc[i] for i in range(h.csrc_count)],
        "extension_profile": h.ext_profile,
        "extension_value": bytes(buf[h.ext_offset:h.ext_offset + h.ext_len]) if h.extension else b"",
        "extensions": exts,
        "payload": bytes(buf[h.header_len:h.header_len + h.payload_len]),
        "padding_size": h.padding_len,
    }
    if ids.mid and rtp_ext_string(buf, &h, ids.mid, sbuf, 256) >= 0:
        out["mid"] = sbuf.decode("utf-8", "replace")
    if ids.rid and rtp_ext_string(buf, &h, ids.rid, sbuf, 256) >= 0:
        out["rid"] = sbuf.decode("utf-8", "replace")
    if ids.rrid and rtp_ext_string(buf, &h, ids.rrid, sbuf, 256) >= 0:
        out["repaired_rid"] = sbuf.decode("utf-8", "replace")
    if ids.abs_send_time and rtp_ext_uint(buf, &h, ids.abs_send_time, 3, &x) == ST_OK:
        out["abs_send_time"] = x
    if ids.transport_cc and rtp_ext_uint(buf, &h, ids.transport_cc, 2, &x) == ST_OK:
        out["transport_cc"] = x
    if ids.audio_level and rtp_ext_uint(buf, &h, ids.audio_level, 1, &x) == ST_OK:
        # RFC 6464 §3: V flag then level in -dBov
        out["audio_level"] = (-(<int>(x & 0x7f)), bool(x & 0x80))
    return out


def pack_header_extensions(list extensions):
    """RFC 8285 block for [(id, value)]: one-byte form when every element fits, else two-byte.

    Returns (profile, value) padded to a 32-bit boundary."""
    if not extensions:
        return 0, b""
    one_byte = all(0 < i < 15 and 0 < len(v) <= 16 for i, v in extensions)
    out = bytearray()
    if one_byte:
        profile = 0xBEDE
        for i, v in extensions:
            out.append((i << 4) | (len(v) - 1))
            out += v
    else:
        profile = 0x1000
        for i, v in extensions:
            if not 0 < i < 256 or len(v) > 255:
                raise ValueError("header extension id/length out of range")
            out.append(i)
            out.append(len(v))
            out += v
    while len(out) % 4:
        out.append(0)
    return profile, bytes(out)


def write_rtp(*, int payload_type, int sequence_number, unsigned int timestamp, unsigned int ssrc,
              bytes payload=b"", int marker=0, list csrc=None, int extension_profile=0,
              bytes extension_value=None, int padding_size=0):
    """Serialize an RTP packet (RFC 3550 §5.1); extension_value must be a multiple of 4 bytes."""
    csrc = csrc or []
    if len(csrc) > 15 or not 0 <= payload_type < 128 or not 0 <= padding_size < 256:
        raise ValueError("RTP field out of range")
    has_ext = extension_value is not None
    if has_ext and len(extension_value) % 4:
        raise ValueError("extension value must be 32-bit aligned")
    out = bytearray(12)
    out[0] = 0x80 | ((1 if padding_size else 0) << 5) | ((1 if has_ext else 0) << 4) | len(csrc)
    out[1] = ((marker & 1) << 7) | payload_type
    out[2:4] = (sequence_number & 0xffff).to_bytes(2, "big")
    out[4:8] = timestamp.to_bytes(4, "big")
    out[8:12] = ssrc.to_bytes(4, "big")
    for c in csrc:
        out += (<unsigned int>c).to_bytes(4, "big")
    if has_ext:
        out += extension_profile.to_bytes(2, "big") + (len(extension_value) // 4).to_bytes(2, "big")
        out += extension_value
    out += payload
    if padding_size:
        out += b"\x00" * (padding_size - 1) + bytes([padding_size])
    return bytes(out)
