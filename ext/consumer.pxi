# The consumer send path: one copy of a packet rewritten for a consumer (SSRC, seq, timestamp, payload
# type), protected with its transport's SRTP context into the next slot of the open send run; fresh
# packets are numbered first (seq.pxi consumer_number); NACKed ones are resent from the producer's
# history under the output seq they were sent with.

cdef int protect_copy(SendCtx *x, CConsumer *c, const uint8_t *buf, int length, int64_t out_seq,
                      int64_t out_ts, int64_t in_seq, int enc, int is_rtx) noexcept nogil:
    """Rewrite + protect one copy into the next slot of the open run (ctx_run_start; ctx_run_end turns
    the run into messages). Returns 1 if a slot was used."""
    cdef uint8_t *out
    cdef int n
    cdef SentEntry *e
    ctx_run_room(x)
    out = x.sbuf + x.nsend * SLOT
    memcpy(out, buf, length)
    rtp_set_header(out, c.payload_type, <uint16_t>out_seq, <uint32_t>out_ts, c.ssrc)
    n = length
    if c.transport.tx != NULL:
        n = srtp_protect(c.transport.tx, out, length, SLOT)
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
                            int64_t in_seq, int64_t in_ts, int64_t now) noexcept nogil:
    cdef int64_t out_seq, out_ts
    if not c.transport.bound:
        c.drops[DROP_UNKNOWN_SOURCE] += 1
        return
    if consumer_number(c, enc, in_seq, in_ts, now, &out_seq, &out_ts):
        protect_copy(x, c, buf, length, out_seq, out_ts, in_seq, c.enc_cur, 0)


cdef void send_rtx(Core *w, CConsumer *c, const uint8_t *buf, int length, int64_t out_seq,
                    int64_t out_ts, int64_t in_seq, int enc) noexcept nogil:
    cdef SendCtx *x = w.tx
    if not c.transport.bound:
        c.drops[DROP_UNKNOWN_SOURCE] += 1
        return
    ctx_run_start(x, &c.transport.addr)
    protect_copy(x, c, buf, length, out_seq, out_ts, in_seq, enc, 1)
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
