# Transport-wide congestion control feedback, receiver side (draft-holmer-rmcat-transport-wide-cc-
# extensions-01 §3.1): each transport records the transport-wide sequence number and arrival time of the
# RTP packets it receives, and the worker reports them back (RTPFB FMT=15) so the sender's bandwidth
# estimator can work. No Python object per packet: a preallocated ring per transport.

cdef enum:
    TCC_RING = 1024              # arrivals held per transport until reported
    TCC_MAX_FB = 1200            # one feedback packet stays below this (bytes of RTCP)
    TCC_INTERVAL_NS = 50000000   # feedback at most every 50 ms from the drain
    TCC_OK = 0
    TCC_FULL = 1                 # report what is held first, then record again
    TCC_TOO_OLD = 2              # a late packet older than what the ring can cover: not reported

cdef struct TccRing:
    int64_t arrival[TCC_RING]    # µs (CLOCK_MONOTONIC) by ext seq % TCC_RING; -1 = not received
    int have
    int64_t last                 # highest extended seq seen: the unwrap reference
    int64_t base                 # first unreported extended seq
    int64_t end                  # one past the highest unreported received seq (end == base: none)
    uint8_t fb_count             # feedback packet count (wraps at 256)
    uint64_t too_old


cdef void tcc_init(TccRing *r) noexcept nogil:
    cdef int i
    for i in range(TCC_RING):
        r.arrival[i] = -1
    r.have = 0
    r.last = r.base = r.end = 0
    r.fb_count = 0
    r.too_old = 0


cdef inline int tcc_slot(int64_t seq) noexcept nogil:
    return <int>(seq & (TCC_RING - 1))


cdef int tcc_record(TccRing *r, uint16_t seq16, int64_t arrival_us) noexcept nogil:
    """Keep one arrival. Invariant: only slots of received seqs in [base, end) are not -1."""
    cdef int64_t seq
    if not r.have:
        r.have = 1
        seq = (<int64_t>1 << 32) + seq16
        r.last = seq
        r.base = r.end = seq
    else:
        seq = ext_seq16(r.last, seq16)
        if seq > r.last:
            r.last = seq
    if r.base == r.end:
        r.base = seq
        r.end = seq + 1
    elif seq >= r.end:
        if seq - r.base >= TCC_RING:
            return TCC_FULL
        r.end = seq + 1
    elif seq < r.base:
        # reordered behind what was reported: report it again from there (the sender's adapter
        # ignores the repeated statuses of packets it already has feedback for)
        if r.end - seq > TCC_RING:
            r.too_old += 1
            return TCC_TOO_OLD
        r.base = seq
    elif r.arrival[tcc_slot(seq)] >= 0:
        return TCC_OK              # a duplicate keeps its first arrival
    r.arrival[tcc_slot(seq)] = arrival_us
    return TCC_OK


cdef inline int64_t tcc_ticks(int64_t us) noexcept nogil:
    # receive deltas are multiples of 250 µs, rounded to the nearest (as libwebrtc does)
    if us >= 0:
        return (us + 125) // 250
    return -((-us + 125) // 250)


cdef int tcc_build(TccRing *r, uint8_t *out, int max_size, uint32_t sender, uint32_t media,
                   int *reported) noexcept nogil:
    """Write one feedback packet for the pending range from base (as much as fits max_size bytes or
    int16 deltas allow), forget those entries. Returns its length (0: nothing pending)."""
    cdef uint8_t sym[TCC_RING]
    cdef int16_t dl[TCC_RING]
    cdef int n = 0, nd = 0, db = 0, i, j, k, rl, pos, one_bit, size, est
    cdef int64_t seq, a, first = -1, ref, cur, d
    cdef uint16_t chunk
    reported[0] = 0
    if r.base >= r.end:
        return 0
    seq = r.base
    while seq < r.end:
        a = r.arrival[tcc_slot(seq)]
        if a >= 0:
            first = a
            break
        seq += 1
    if first < 0:                 # cannot happen (end - 1 is received); keep the ring sane anyway
        r.base = r.end
        return 0
    ref = first // 64000
    cur = ref * 64000
    seq = r.base
    while seq < r.end and n < TCC_RING:
        a = r.arrival[tcc_slot(seq)]
        size = 0
        if a >= 0:
            d = tcc_ticks(a - cur)
            if d < -32768 or d > 32767:
                break             # the next packet starts over with its own reference time
            size = 1 if 0 <= d <= 255 else 2
        est = 20 + 2 * ((n + 1 + 6) // 7) + db + size + 3
        if est > max_size and n > 0:
            break
        if a >= 0:
            sym[n] = <uint8_t>size
            dl[nd] = <int16_t>d
            nd += 1
            db += size
            cur += d * 250
        else:
            sym[n] = 0
        n += 1
        seq += 1
    # header (RFC 4585 §6.1) + FCI (draft §3.1)
    wr32(out + 4, sender)
    wr32(out + 8, media)
    wr16(out + 12, <uint16_t>r.base)
    wr16(out + 14, <uint16_t>n)
    out[16] = (ref >> 16) & 0xff
    out[17] = (ref >> 8) & 0xff
    out[18] = ref & 0xff
    out[19] = r.fb_count
    r.fb_count += 1
    pos = 20
    i = 0
    while i < n:
        rl = 1
        while i + rl < n and sym[i + rl] == sym[i] and rl < 8191:
            rl += 1
        if rl >= 14 or i + rl == n:
            # run-length chunk (§3.1.3): T=0, S (2 bits), run length (13 bits)
            chunk = (<uint16_t>sym[i] << 13) | rl
            i += rl
        else:
            k = n - i if n - i < 14 else 14
            one_bit = 1
            for j in range(k):
                if sym[i + j] > 1:
                    one_bit = 0
                    break
            if one_bit:
                # status vector chunk (§3.1.4), S=0: 14 one-bit symbols (received / not received)
                chunk = 0x8000
                for j in range(k):
                    chunk |= <uint16_t>sym[i + j] << (13 - j)
            else:
                # S=1: 7 two-bit symbols
                k = n - i if n - i < 7 else 7
                chunk = 0xC000
                for j in range(k):
                    chunk |= <uint16_t>sym[i + j] << (2 * (6 - j))
            i += k
        wr16(out + pos, chunk)
        pos += 2
    j = 0
    for i in range(n):
        if sym[i] == 1:
            out[pos] = <uint8_t>dl[j]
            pos += 1
            j += 1
        elif sym[i] == 2:
            wr16(out + pos, <uint16_t>dl[j])
            pos += 2
            j += 1
    # RFC 3550 §6.4.1 padding: zeros, then the count in the last octet, P bit set
    k = (4 - pos % 4) % 4
    for i in range(k):
        out[pos + i] = 0
    if k:
        out[pos + k - 1] = <uint8_t>k
    pos += k
    rtcp_header(out, 15, RTCP_RTPFB, pos)
    if k:
        out[0] |= 0x20
    for seq in range(r.base, r.base + n):
        r.arrival[tcc_slot(seq)] = -1
    r.base += n
    reported[0] = nd
    return pos


def build_transport_feedback(list packets, unsigned int sender_ssrc=1, unsigned int media_ssrc=0,
                             int max_size=TCC_MAX_FB, int fb_count=0):
    """Feedback packets for [(transport-wide seq (16 bits), arrival µs)] in arrival order, built as a
    transport does (tests, tools). A full ring is reported before recording on."""
    cdef TccRing *r = <TccRing *>malloc(sizeof(TccRing))
    cdef uint8_t buf[SLOT]
    cdef int n, rep, st
    if r == NULL:
        raise MemoryError()
    if not 64 <= max_size <= SLOT - 64:
        free(r)
        raise ValueError("max_size out of range")
    out = []
    try:
        tcc_init(r)
        r.fb_count = fb_count & 0xff
        for seq, arr in packets:
            st = tcc_record(r, seq & 0xffff, arr)
            if st == TCC_FULL:
                while True:
                    n = tcc_build(r, buf, max_size, sender_ssrc, media_ssrc, &rep)
                    if n <= 0:
                        break
                    out.append(bytes(buf[:n]))
                tcc_record(r, seq & 0xffff, arr)
        while True:
            n = tcc_build(r, buf, max_size, sender_ssrc, media_ssrc, &rep)
            if n <= 0:
                break
            out.append(bytes(buf[:n]))
    finally:
        free(r)
    return out
