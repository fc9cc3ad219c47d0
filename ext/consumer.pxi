# The consumer send path: one copy of a packet rewritten for a consumer (header extensions as the
# subscriber negotiated them, SSRC, seq, timestamp, payload type), protected with its transport's SRTP context into the next slot of the open send run; fresh
# packets are numbered first (seq.pxi consumer_number); NACKed ones are resent from the producer's
# history under the output seq they were sent with.

cdef inline int ext_elements(const CConsumer *c, const RtpLayout *l, uint8_t *el) noexcept nogil:
    """The subscriber's extension elements for one copy (one-byte form): only what it negotiated, with its
    IDs. Publisher extensions it did not negotiate are dropped; rid/repaired-rid and abs-send-time are
    dropped too (its one SSRC per consumer needs no rid; abs-send-time would be the publisher's)."""
    cdef int k = c.ext_pre_len
    memcpy(el, c.ext_pre, k)               # mid: the subscriber's own m-line's (ext_prefix)
    if l.audio_level >= 0 and c.out_ext.audio_level:
        el[k] = <uint8_t>(c.out_ext.audio_level << 4)    # length 1 (L = 0)
        el[k + 1] = <uint8_t>l.audio_level
        k += 2
    # TRANSPORT_CC: the transport-wide seq towards a subscriber must be numbered per subscriber transport
    # (its own sequence, fed to its own feedback and bandwidth estimator): the next issue writes it here.
    return k


cdef int ext_prefix(uint8_t *pre, const ExtIds *ids, const uint8_t *mid, int mid_len) noexcept nogil:
    """The mid element written on EVERY copy, not only the first ones as Chromium does for its own
    streams: a receiver that routes by MID (RFC 8843 §9.2; browsers do, aiortc 1.16 routes by the
    offer's a=ssrc and the payload type only) can route an SSRC whichever packet it sees first, also
    when a renegotiation brings several at once. 1 + len bytes; 0 without a mid."""
    if ids.mid <= 0 or mid_len <= 0:
        return 0
    pre[0] = <uint8_t>((ids.mid << 4) | (mid_len - 1))
    memcpy(pre + 1, mid, mid_len)
    return 1 + mid_len


cdef int protect_copy(SendCtx *x, CConsumer *c, const uint8_t *buf, int length, const RtpLayout *l,
                      int64_t out_seq, int64_t out_ts, int64_t in_seq, int enc, int is_rtx) noexcept nogil:
    """Rewrite (extension block, SSRC, seq, timestamp, payload type) + protect one copy into the next
    slot of the open run (ctx_run_start; ctx_run_end turns the run into messages). Returns 1 if a slot
    was used."""
    cdef uint8_t *out
    cdef uint8_t el[NAME_LEN + 8]
    cdef int n
    cdef SentEntry *e
    ctx_run_room(x)
    out = x.sbuf + x.nsend * SLOT
    # room for the SRTP tag after it when the transport protects
    n = rtp_write_ext(out, SLOT if c.transport.tx == NULL else SLOT - SRTP_MAX_TRAILER, buf, length, l, el,
                      ext_elements(c, l, el))
    if n < 0:
        c.drops[drop_reason(n)] += 1
        return 0
    rtp_set_header(out, c.payload_type, <uint16_t>out_seq, <uint32_t>out_ts, c.ssrc)
    if c.transport.tx != NULL:
        n = srtp_protect(c.transport.tx, out, n, SLOT)
        if n < 0:
            c.drops[drop_reason(n)] += 1
            return 0
    x.siov[x.nsend].iov_len = n
    x.nsend += 1
    x.packets_out += 1
    x.bytes_out += n
    c.c.packets_out += 1
    c.c.bytes_out += n
    c.transport.c.packets_out += 1
    c.transport.c.bytes_out += n
    if is_rtx:
        c.retransmits += 1
    else:
        # what went out under out_seq, for NACKs (only this packet is ever sent again under it)
        e = &c.sent[out_seq & (SENT_RING - 1)]
        e.out_seq = out_seq
        e.in_seq = in_seq
        e.out_ts = out_ts
        e.enc = enc
        e.rtx_ns = 0
    return 1


cdef inline void send_fresh(SendCtx *x, CConsumer *c, const CEncoding *enc, const uint8_t *buf, int length,
                            const RtpLayout *l, int64_t in_seq, int64_t in_ts, int64_t now) noexcept nogil:
    cdef int64_t out_seq, out_ts
    if not c.transport.bound:
        c.drops[DROP_UNKNOWN_SOURCE] += 1
        return
    if consumer_number(c, enc, in_seq, in_ts, now, &out_seq, &out_ts):
        protect_copy(x, c, buf, length, l, out_seq, out_ts, in_seq, c.enc_cur, 0)


cdef void send_rtx(Core *w, CConsumer *c, const uint8_t *buf, int length, int64_t out_seq,
                    int64_t out_ts, int64_t in_seq, int enc) noexcept nogil:
    cdef SendCtx *x = w.tx
    cdef RtpHeader h
    cdef RtpLayout l
    if not c.transport.bound:
        c.drops[DROP_UNKNOWN_SOURCE] += 1
        return
    if rtp_parse(buf, length, &h) != ST_OK:     # it parsed when it came in; the history keeps the bytes
        return
    rtp_layout(buf, &h, &c.producer.ext, &l)
    ctx_run_start(x, &c.transport.addr)
    protect_copy(x, c, buf, length, &l, out_seq, out_ts, in_seq, enc, 1)
    ctx_run_end(x)


cdef void consumer_retransmit(Core *w, CConsumer *c, uint16_t out16, int64_t now) noexcept nogil:
    """Resend what went out under output seq out16, if it is still held: the same packet with the
    same header (same SRTP index, same plaintext: same ciphertext). At most once per seq per
    max(20 ms, RTT), within the consumer's retransmission byte budget; nothing while paused."""
    cdef CEncoding *enc
    cdef SentEntry *e
    cdef int64_t out_seq, in_seq, gap, d, add
    cdef int slot, length
    c.nacks += 1
    if c.paused:
        c.drops[DROP_PAUSED] += 1
        return
    out_seq = ext_seq16(c.last_out_seq, out16)
    e = &c.sent[out_seq & (SENT_RING - 1)]
    if not c.have_out or e.out_seq != out_seq or out_seq < c.rtx_floor:
        c.drops[DROP_NACK_NOT_HELD] += 1
        w.drops[DROP_NACK_NOT_HELD] += 1
        return
    in_seq = e.in_seq
    enc = &c.producer.enc[e.enc]        # the history of the encoding it was sent from
    slot = <int>(((in_seq % HIST_SLOTS) + HIST_SLOTS) % HIST_SLOTS)
    if enc.hist_seq[slot] != in_seq:
        c.drops[DROP_NACK_NOT_HELD] += 1
        w.drops[DROP_NACK_NOT_HELD] += 1
        return
    gap = RTX_MIN_GAP_NS
    if c.rtt_ms * 1000000.0 > gap:
        gap = <int64_t>(c.rtt_ms * 1000000.0)
    if e.rtx_ns != 0 and now - e.rtx_ns < gap:
        c.drops[DROP_NACK_TOO_SOON] += 1
        w.drops[DROP_NACK_TOO_SOON] += 1
        return
    length = enc.hist_len[slot]
    d = now - c.rtx_budget_ns
    if c.rtx_budget_ns == 0 or d >= 1000000000:
        c.rtx_budget = RTX_BURST_BYTES
        c.rtx_budget_ns = now
    elif d > 0:
        add = d * RTX_RATE_BYTES // 1000000000
        if add > 0:
            c.rtx_budget += add
            if c.rtx_budget > RTX_BURST_BYTES:
                c.rtx_budget = RTX_BURST_BYTES
            c.rtx_budget_ns = now
    if c.rtx_budget < length:
        c.drops[DROP_NACK_BUDGET] += 1
        w.drops[DROP_NACK_BUDGET] += 1
        return
    c.rtx_budget -= length
    e.rtx_ns = now
    send_rtx(w, c, enc.hist + slot * HIST_SLOT, length, out_seq, e.out_ts, in_seq, e.enc)


def rewrite_header_extensions(bytes packet, dict publisher_ids=None, dict subscriber_ids=None, str mid=""):
    """What a consumer with subscriber_ids and mid sends for packet (from a publisher with publisher_ids),
    SSRC/seq/ts aside: the same C code as the packet path (tests compare it with a reference)."""
    cdef RtpHeader h
    cdef RtpLayout l
    cdef CConsumer c
    cdef ExtIds pin = _ext_ids_from(publisher_ids)
    cdef bytes m = mid.encode()
    cdef uint8_t el[NAME_LEN + 8]
    cdef uint8_t out[SLOT]
    cdef int n
    if rtp_parse(<const uint8_t *>packet, len(packet), &h) != ST_OK or len(packet) >= SLOT:
        raise ValueError("RTP: malformed")
    memset(&c, 0, sizeof(CConsumer))
    c.out_ext = _consumer_ext_ids(subscriber_ids, m)
    c.ext_pre_len = ext_prefix(c.ext_pre, &c.out_ext, <const uint8_t *>m, len(m))
    rtp_layout(<const uint8_t *>packet, &h, &pin, &l)
    n = rtp_write_ext(out, SLOT, <const uint8_t *>packet, len(packet), &l, el, ext_elements(&c, &l, el))
    if n < 0:
        raise ValueError("no room")
    return bytes(out[:n])


cdef ExtIds _consumer_ext_ids(dict ext_ids, bytes mid) except *:
    """The subscriber's map, checked for what a consumer writes in the one-byte form (IDs 1-14,
    values of 1-16 bytes: RFC 8285 §4.2)."""
    cdef ExtIds ids = _ext_ids_from(ext_ids)
    if ids.mid and not 1 <= ids.mid <= 14 or ids.audio_level and not 1 <= ids.audio_level <= 14:
        raise ValueError("mid/audio_level extension IDs towards a subscriber must be 1-14 (one-byte form)")
    if len(mid) > 16 or len(mid) >= NAME_LEN:
        raise ValueError("mid longer than 16 bytes")
    return ids
