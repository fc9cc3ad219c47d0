# RTCP compound packets (RFC 3550 §6), feedback (RFC 4585 §6), FIR (RFC 5104 §4.3.1),
# REMB (draft-alvestrand-rmcat-remb) and transport-cc (draft-holmer-rmcat-transport-wide-cc-extensions).

cdef enum:
    RTCP_SR = 200
    RTCP_RR = 201
    RTCP_SDES = 202
    RTCP_BYE = 203
    RTCP_APP = 204
    RTCP_RTPFB = 205
    RTCP_PSFB = 206

cdef struct RtcpReport:
    # one report block (RFC 3550 §6.4.1)
    uint32_t ssrc
    uint8_t fraction_lost
    int32_t packets_lost
    uint32_t highest_seq
    uint32_t jitter
    uint32_t lsr
    uint32_t dlsr


cdef inline int rtcp_is_rtcp(const uint8_t *buf, int length) noexcept nogil:
    # RFC 5761 §4: RTCP packet types 200-206 land in 64-95 once the marker bit is masked
    return length >= 2 and 192 <= buf[1] <= 223


cdef int rtcp_check_compound(const uint8_t *buf, int length) noexcept nogil:
    """Validate every packet header of a compound packet: version 2, lengths that tile it exactly."""
    cdef int off = 0, plen, pad
    if length < 4:
        return ST_TRUNCATED
    while off < length:
        if length - off < 4:
            return ST_TRUNCATED
        if (buf[off] >> 6) != 2:
            return ST_BAD_VERSION
        plen = 4 * (rd16(buf + off + 2) + 1)
        if off + plen > length:
            return ST_TRUNCATED
        if (buf[off] >> 5) & 1:
            pad = buf[off + plen - 1]
            if pad == 0 or pad > plen - 4:
                return ST_BAD_PADDING
        off += plen
    return ST_OK


cdef int rtcp_body_len(const uint8_t *p) noexcept nogil:
    """Bytes of one packet after its 4-byte header, padding removed."""
    cdef int plen = 4 * (rd16(p + 2) + 1)
    if (p[0] >> 5) & 1:
        plen -= p[plen - 1]
    return plen - 4


cdef inline void rtcp_read_report(const uint8_t *p, RtcpReport *r) noexcept nogil:
    cdef uint32_t lost = rd24(p + 5)
    r.ssrc = rd32(p)
    r.fraction_lost = p[4]
    # cumulative lost is a signed 24-bit value (RFC 3550 §6.4.1)
    if lost & 0x800000:
        lost |= <uint32_t>0xff000000
    r.packets_lost = <int32_t>lost
    r.highest_seq = rd32(p + 8)
    r.jitter = rd32(p + 12)
    r.lsr = rd32(p + 16)
    r.dlsr = rd32(p + 20)


cdef inline int rtcp_header(uint8_t *p, int count, int pt, int total_len) noexcept nogil:
    p[0] = 0x80 | (count & 0x1f)
    p[1] = pt
    wr16(p + 2, total_len // 4 - 1)
    return total_len


cdef int rtcp_write_pli(uint8_t *p, uint32_t sender, uint32_t media) noexcept nogil:
    # RFC 4585 §6.3.1: PSFB FMT 1, no FCI
    rtcp_header(p, 1, RTCP_PSFB, 12)
    wr32(p + 4, sender)
    wr32(p + 8, media)
    return 12


cdef int rtcp_write_fir(uint8_t *p, uint32_t sender, uint32_t media, uint8_t seqnr) noexcept nogil:
    # RFC 5104 §4.3.1: media source field is 0, the FCI names the SSRC
    rtcp_header(p, 4, RTCP_PSFB, 20)
    wr32(p + 4, sender)
    wr32(p + 8, 0)
    wr32(p + 12, media)
    p[16] = seqnr
    p[17] = 0
    p[18] = 0
    p[19] = 0
    return 20


cdef int rtcp_write_sr(uint8_t *p, uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts, uint32_t packets,
                       uint32_t octets) noexcept nogil:
    # RFC 3550 §6.4.1: sender info, no report blocks (a send-only stream of ours)
    rtcp_header(p, 0, RTCP_SR, 28)
    wr32(p + 4, ssrc)
    wr32(p + 8, <uint32_t>(ntp >> 32))
    wr32(p + 12, <uint32_t>ntp)
    wr32(p + 16, rtp_ts)
    wr32(p + 20, packets)
    wr32(p + 24, octets)
    return 28


cdef int rtcp_write_nack(uint8_t *p, uint32_t sender, uint32_t media, const int64_t *seqs,
                         int n) noexcept nogil:
    """Generic NACK (RFC 4585 §6.2.1) for ascending extended seqs: PID + bitmask of the 16 after it."""
    cdef int i = 0, pos = 12
    cdef int64_t pid
    cdef uint16_t blp
    wr32(p + 4, sender)
    wr32(p + 8, media)
    while i < n:
        pid = seqs[i]
        blp = 0
        i += 1
        while i < n and seqs[i] - pid <= 16:
            if seqs[i] > pid:
                blp |= <uint16_t>(1 << (seqs[i] - pid - 1))
            i += 1
        wr16(p + pos, <uint16_t>pid)
        wr16(p + pos + 2, blp)
        pos += 4
    rtcp_header(p, 1, RTCP_RTPFB, pos)
    return pos


def _report_block(dict r):
    lost = r.get("packets_lost", 0) & 0xffffff
    return (r["ssrc"].to_bytes(4, "big") + bytes([r.get("fraction_lost", 0)]) + lost.to_bytes(3, "big")
            + r.get("highest_seq", 0).to_bytes(4, "big") + r.get("jitter", 0).to_bytes(4, "big")
            + r.get("lsr", 0).to_bytes(4, "big") + r.get("dlsr", 0).to_bytes(4, "big"))


def _rtcp(int count, int pt, bytes body):
    return bytes([0x80 | count, pt]) + ((len(body) + 4) // 4 - 1).to_bytes(2, "big") + body


def write_sr(unsigned int ssrc, unsigned long long ntp, unsigned int rtp_ts, unsigned int packets,
             unsigned int octets, list reports=None):
    reports = reports or []
    body = (ssrc.to_bytes(4, "big") + ntp.to_bytes(8, "big") + rtp_ts.to_bytes(4, "big")
            + packets.to_bytes(4, "big") + octets.to_bytes(4, "big"))
    return _rtcp(len(reports), RTCP_SR, body + b"".join(_report_block(r) for r in reports))


def write_rr(unsigned int ssrc, list reports=None):
    reports = reports or []
    return _rtcp(len(reports), RTCP_RR, ssrc.to_bytes(4, "big") + b"".join(_report_block(r) for r in reports))


def write_nack(unsigned int ssrc, unsigned int media_ssrc, lost):
    """Generic NACK (RFC 4585 §6.2.1): PID + bitmask of the 16 following losses."""
    fci = bytearray()
    seqs = sorted(set(s & 0xffff for s in lost))
    i = 0
    while i < len(seqs):
        pid = seqs[i]
        blp = 0
        i += 1
        while i < len(seqs) and 0 < ((seqs[i] - pid) & 0xffff) <= 16:
            blp |= 1 << (((seqs[i] - pid) & 0xffff) - 1)
            i += 1
        fci += pid.to_bytes(2, "big") + blp.to_bytes(2, "big")
    return _rtcp(1, RTCP_RTPFB, ssrc.to_bytes(4, "big") + media_ssrc.to_bytes(4, "big") + bytes(fci))


def write_pli(unsigned int ssrc, unsigned int media_ssrc):
    cdef uint8_t b[12]
    rtcp_write_pli(b, ssrc, media_ssrc)
    return bytes(b[:12])


def write_fir(unsigned int ssrc, unsigned int media_ssrc, int seqnr=0):
    cdef uint8_t b[20]
    rtcp_write_fir(b, ssrc, media_ssrc, seqnr & 0xff)
    return bytes(b[:20])


def write_remb(unsigned int ssrc, unsigned long long bitrate, list ssrcs):
    """REMB: 6-bit exponent, 18-bit mantissa."""
    exp = 0
    mant = bitrate
    while mant >= (1 << 18):
        mant >>= 1
        exp += 1
    body = (ssrc.to_bytes(4, "big") + b"\x00\x00\x00\x00" + b"REMB" + bytes([len(ssrcs)])
            + ((exp << 18) | mant).to_bytes(3, "big") + b"".join(s.to_bytes(4, "big") for s in ssrcs))
    return _rtcp(15, RTCP_PSFB, body)


cdef list _nack_lost(const uint8_t *fci, int n):
    cdef int i, b
    cdef uint16_t pid, blp
    lost = []
    for i in range(0, n - 3, 4):
        pid = rd16(fci + i)
        blp = rd16(fci + i + 2)
        lost.append(pid)
        for b in range(16):
            if blp & (1 << b):
                lost.append((pid + b + 1) & 0xffff)
    return lost


cdef tuple _tcc_statuses(const uint8_t *p, int n, int count):
    """Packet chunks and receive deltas of a transport-cc FCI (draft-holmer-rmcat-transport-wide-cc-
    extensions-01 §3.1.1-3.1.5): statuses per packet (0 not received, 1 small delta, 2 large or
    negative delta) and the deltas of the received ones in 250 µs ticks."""
    cdef int pos = 0, i, k, run, sym
    cdef uint16_t chunk
    statuses = []
    while len(statuses) < count:
        if pos + 2 > n:
            raise ValueError("RTCP: transport-cc chunks are truncated")
        chunk = rd16(p + pos)
        pos += 2
        if not chunk & 0x8000:
            sym = (chunk >> 13) & 3
            run = chunk & 0x1fff
            statuses.extend([sym] * min(run, count - len(statuses)))
        elif not chunk & 0x4000:
            for i in range(14):
                if len(statuses) < count:
                    statuses.append((chunk >> (13 - i)) & 1)
        else:
            for i in range(7):
                if len(statuses) < count:
                    statuses.append((chunk >> (2 * (6 - i))) & 3)
    deltas = []
    for sym in statuses:
        if sym == 1:
            if pos + 1 > n:
                raise ValueError("RTCP: transport-cc deltas are truncated")
            deltas.append(p[pos])
            pos += 1
        elif sym == 2:
            if pos + 2 > n:
                raise ValueError("RTCP: transport-cc deltas are truncated")
            deltas.append(<int16_t>rd16(p + pos))
            pos += 2
        elif sym == 3:
            raise ValueError("RTCP: transport-cc status symbol 3 is reserved")
    return statuses, deltas


def parse_rtcp(bytes data):
    """Parse a compound RTCP packet into a list of dicts; raises ValueError on a malformed one."""
    cdef const uint8_t *buf = <const uint8_t *>data
    cdef const uint8_t *p
    cdef const uint8_t *b
    cdef int length = len(data), off = 0, st, count, pt, blen, i, pos, n, base
    cdef RtcpReport r
    st = rtcp_check_compound(buf, length)
    if st != ST_OK:
        raise ValueError("RTCP: " + _STATUS_NAMES.get(st, str(st)))
    out = []
    while off < length:
        p = buf + off
        count = p[0] & 0x1f
        pt = p[1]
        blen = rtcp_body_len(p)
        off += 4 * (rd16(p + 2) + 1)
        b = p + 4
        if pt == RTCP_SR or pt == RTCP_RR:
            base = 24 if pt == RTCP_SR else 4
            if blen < base + 24 * count:
                raise ValueError("RTCP: report length is invalid")
            d = {"type": "sr" if pt == RTCP_SR else "rr", "ssrc": rd32(b)}
            if pt == RTCP_SR:
                d["ntp"] = (<uint64_t>rd32(b + 4) << 32) | rd32(b + 8)
                d["rtp_timestamp"] = rd32(b + 12)
                d["packet_count"] = rd32(b + 16)
                d["octet_count"] = rd32(b + 20)
            reports = []
            for i in range(count):
                rtcp_read_report(b + base + 24 * i, &r)
                reports.append({"ssrc": r.ssrc, "fraction_lost": r.fraction_lost,
                                "packets_lost": r.packets_lost, "highest_seq": r.highest_seq,
                                "jitter": r.jitter, "lsr": r.lsr, "dlsr": r.dlsr})
            d["reports"] = reports
            out.append(d)
        elif pt == RTCP_SDES:
            chunks = []
            pos = 0
            for i in range(count):
                if pos + 4 > blen:
                    raise ValueError("RTCP: SDES chunk is truncated")
                ssrc = rd32(b + pos)
                pos += 4
                items = []
                while pos < blen and b[pos] != 0:
                    if pos + 2 > blen or pos + 2 + b[pos + 1] > blen:
                        raise ValueError("RTCP: SDES item is truncated")
                    items.append((b[pos], bytes(b[pos + 2:pos + 2 + b[pos + 1]])))
                    pos += 2 + b[pos + 1]
                pos = (pos + 4) & ~3    # null item(s) up to the next 32-bit boundary
                chunks.append({"ssrc": ssrc, "items": items})
            out.append({"type": "sdes", "chunks": chunks})
        elif pt == RTCP_BYE:
            if blen < 4 * count:
                raise ValueError("RTCP: BYE length is invalid")
            d = {"type": "bye", "sources": [rd32(b + 4 * i) for i in range(count)], "reason": b""}
            pos = 4 * count
            if pos < blen:
                n = b[pos]
                if pos + 1 + n > blen:
                    raise ValueError("RTCP: BYE reason is truncated")
                d["reason"] = bytes(b[pos + 1:pos + 1 + n])
            out.append(d)
        elif pt == RTCP_RTPFB or pt == RTCP_PSFB:
            if blen < 8:
                raise ValueError("RTCP: feedback length is invalid")
            d = {"type": "rtpfb" if pt == RTCP_RTPFB else "psfb", "fmt": count,
                 "ssrc": rd32(b), "media_ssrc": rd32(b + 4), "fci": bytes(b[8:blen])}
            if pt == RTCP_RTPFB and count == 1:
                d["type"] = "nack"
                d["lost"] = _nack_lost(b + 8, blen - 8)
            elif pt == RTCP_RTPFB and count == 15:
                if blen < 16:
                    raise ValueError("RTCP: transport-cc is truncated")
                d["type"] = "transport_cc"
                d["base_seq"] = rd16(b + 8)
                d["status_count"] = rd16(b + 10)
                d["reference_time"] = rd24(b + 12)
                d["fb_pkt_count"] = b[15]
                d["statuses"], d["deltas"] = _tcc_statuses(b + 16, blen - 16, rd16(b + 10))
            elif pt == RTCP_PSFB and count == 1:
                d["type"] = "pli"
            elif pt == RTCP_PSFB and count == 4:
                if blen < 16:
                    raise ValueError("RTCP: FIR is truncated")
                d["type"] = "fir"
                d["entries"] = [(rd32(b + i), b[i + 4]) for i in range(8, blen - 7, 8)]
            elif pt == RTCP_PSFB and count == 15 and blen >= 16 and memcmp(b + 8, b"REMB", 4) == 0:
                n = b[12]
                if blen < 16 + 4 * n:
                    raise ValueError("RTCP: REMB is truncated")
                d["type"] = "remb"
                d["bitrate"] = (rd24(b + 13) & 0x3ffff) << (b[13] >> 2)
                d["ssrcs"] = [rd32(b + 16 + 4 * i) for i in range(n)]
            out.append(d)
        else:
            out.append({"type": "unknown", "packet_type": pt, "count": count, "body": bytes(b[:blen])})
    return out
