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
    return k


cdef inline int ext_congestion(const CConsumer *c, const SendCtx *x, uint8_t *el, int k) noexcept nogil:
    """Append the element the subscriber's bandwidth estimation needs: the transport's next transport-wide
    seq (its own numbering per subscriber transport, bwe.pxi; one-byte form, 2 bytes) if it negotiated
    transport-cc, else our send time as abs-send-time (3 bytes) for its REMB."""
    cdef uint32_t v
    if c.out_ext.transport_cc and c.transport.bwe.hist != NULL:
        el[k] = <uint8_t>((c.out_ext.transport_cc << 4) | 1)
        wr16(el + k + 1, <uint16_t>c.transport.bwe.next_seq)
        return k + 3
    if c.out_ext.abs_send_time:
        v = abs_send_time(x.run_us)
        el[k] = <uint8_t>((c.out_ext.abs_send_time << 4) | 2)
        el[k + 1] = <uint8_t>(v >> 16)
        el[k + 2] = <uint8_t>(v >> 8)
        el[k + 3] = <uint8_t>v
        return k + 4
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


cdef inline void vp8_track(CConsumer *c, const RtpLayout *l) noexcept nogil:
    """Picture ID and TL0PICIDX continuity for the subscriber across layer and producer switches (each
    encoding numbers its own; a jump back would make the receiver take new pictures for old ones): the
    first picture after a switch continues right after the last one numbered, through the consumer's
    offsets; this keeps the offsets and the newest values out (vp8_write writes them)."""
    cdef int32_t pid, tl0, ahead
    if c.vp8_resync:
        c.vp8_resync = 0
        if l.vp8_picid >= 0 and c.last_out_pid >= 0:
            c.pid_offset = (c.last_out_pid + 1 - l.vp8_picid) & 0x7fff
        if l.vp8_tl0 >= 0 and c.last_out_tl0 >= 0:
            c.tl0_offset = (c.last_out_tl0 + 1 - l.vp8_tl0) & 0xff
    if l.vp8_picid >= 0:
        pid = (l.vp8_picid + c.pid_offset) & 0x7fff
        ahead = (pid - c.last_out_pid) & 0x7fff
        if c.last_out_pid < 0 or 0 < ahead < 0x4000:
            c.last_out_pid = pid
    if l.vp8_tl0 >= 0:
        tl0 = (l.vp8_tl0 + c.tl0_offset) & 0xff
        ahead = (tl0 - c.last_out_tl0) & 0xff
        if c.last_out_tl0 < 0 or 0 < ahead < 0x80:
            c.last_out_tl0 = tl0


cdef inline void vp8_write(uint8_t *payload, const RtpLayout *l, int32_t po, int32_t to) noexcept nogil:
    """A VP8 copy's picture ID and TL0PICIDX with offsets po / to; the field keeps its size (7 or 15 bits)."""
    cdef int32_t pid
    if l.vp8_picid >= 0:
        pid = (l.vp8_picid + po) & 0x7fff
        if l.vp8_picid_bits == 15:
            payload[l.vp8_picid_off] = <uint8_t>(0x80 | (pid >> 8))
            payload[l.vp8_picid_off + 1] = <uint8_t>pid
        else:
            payload[l.vp8_picid_off] = <uint8_t>(pid & 0x7f)
    if l.vp8_tl0 >= 0:
        payload[l.vp8_tl0_off] = <uint8_t>((l.vp8_tl0 + to) & 0xff)


cdef inline void sent_record(CConsumer *c, const uint8_t *buf, int64_t out_seq, int64_t out_ts, int64_t in_seq,
                             int enc) noexcept nogil:
    """What goes out under out_seq, for NACKs and the pacer (only this packet is ever sent under it)."""
    cdef SentEntry *e = &c.sent[out_seq & (c.sent_len - 1)]
    e.out_seq = out_seq
    e.in_seq = in_seq
    e.out_ts = out_ts
    e.enc = enc
    e.rtx_ns = 0
    e.pid_offset = c.pid_offset
    e.tl0_offset = c.tl0_offset
    c.last_out_marker = (buf[1] & 0x80) != 0


cdef enum:
    COPY_FRESH = 0             # first sending, now
    COPY_RTX = 1               # a retransmission
    COPY_PACED = 2             # first sending of a copy the pacer held (numbered and recorded when queued)


cdef int protect_copy(SendCtx *x, CConsumer *c, const uint8_t *buf, int length, const RtpLayout *l,
                      int64_t out_seq, int64_t out_ts, int64_t in_seq, int enc, int mode) noexcept nogil:
    """Rewrite (extension block, SSRC, seq, timestamp, payload type) + protect one copy into the next
    slot of the open run (ctx_run_start; ctx_run_end turns the run into messages). The transport-wide
    seq / abs-send-time are the moment it goes out (a paced copy's too). Returns 1 if a slot was used."""
    cdef uint8_t *out
    cdef uint8_t el[NAME_LEN + 8]
    cdef int n
    cdef SentEntry *e
    cdef uint8_t *body
    cdef int rtx = mode == COPY_RTX and c.rtx_ssrc != 0
    ctx_run_room(x)
    out = x.sbuf + x.nsend * SLOT
    # room for the SRTP tag after it when the transport protects, and for an RTX packet's OSN
    n = rtp_write_ext(out, (SLOT if c.transport.tx == NULL else SLOT - SRTP_MAX_TRAILER) - 2 * rtx, buf, length,
                      l, el, ext_congestion(c, x, el, ext_elements(c, l, el)))
    if n < 0:
        c.drops[drop_reason(n)] += 1
        return 0
    e = &c.sent[out_seq & (c.sent_len - 1)]
    body = out + n - (length - l.body_off)
    if l.vp8_picid >= 0 or l.vp8_tl0 >= 0:
        if mode == COPY_FRESH:
            vp8_track(c, l)
            vp8_write(body, l, c.pid_offset, c.tl0_offset)
        else:
            vp8_write(body, l, e.pid_offset, e.tl0_offset)
    if rtx:
        # RFC 4588 §4: the original seq (OSN) ahead of the original payload, on the RTX SSRC with its own
        # numbering; timestamp, marker and padding as the original's
        memmove(body + 2, body, length - l.body_off)
        wr16(body, <uint16_t>out_seq)
        n += 2
        rtp_set_header(out, c.rtx_payload_type, c.rtx_seq, <uint32_t>out_ts, c.rtx_ssrc)
        c.rtx_seq += 1
    else:
        rtp_set_header(out, c.payload_type, <uint16_t>out_seq, <uint32_t>out_ts, c.ssrc)
    if c.transport.tx != NULL:
        if rtx:
            n = srtp_protect_written(c.transport.tx, &c.tx_rtx_stream, out, n, SLOT, <int>(body - out),
                                     c.rtx_ssrc, <uint16_t>(c.rtx_seq - 1))
        else:
            n = srtp_protect_written(c.transport.tx, &c.tx_stream, out, n, SLOT, <int>(body - out),
                                     c.ssrc, <uint16_t>out_seq)
        if n < 0:
            c.drops[drop_reason(n)] += 1
            return 0
    x.siov[x.nsend].iov_len = n
    x.nsend += 1
    x.packets_out += 1
    x.bytes_out += n
    if c.out_ext.transport_cc and c.transport.bwe.hist != NULL:
        bwe_sent(&c.transport.bwe, x.run_us, n)
    if c.transport.pace != NULL:
        c.transport.pace.tokens -= n
    c.c.packets_out += 1
    c.c.bytes_out += n
    c.transport.c.packets_out += 1
    c.transport.c.bytes_out += n
    if mode == COPY_RTX:
        c.retransmits += 1
        x.retransmits += 1
        x.rtx_out += rtx
    elif mode == COPY_FRESH:
        sent_record(c, buf, out_seq, out_ts, in_seq, enc)
    return 1


cdef inline void send_fresh(SendCtx *x, CConsumer *c, const CEncoding *enc, const uint8_t *buf, int length,
                            const RtpLayout *l, int64_t in_seq, int64_t in_ts, int64_t now) noexcept nogil:
    cdef int64_t out_seq, out_ts
    if not c.transport.bound:
        c.drops[DROP_UNKNOWN_SOURCE] += 1
        return
    if not consumer_number(c, enc, in_seq, in_ts, now, &out_seq, &out_ts):
        return
    if pace_hold(x, c):
        # the pacer sends it later, from the producer's history, as numbered now
        if l.vp8_picid >= 0 or l.vp8_tl0 >= 0:
            vp8_track(c, l)
        sent_record(c, buf, out_seq, out_ts, in_seq, c.enc_cur)
        pace_push(x, c, out_seq, length)
    else:
        protect_copy(x, c, buf, length, l, out_seq, out_ts, in_seq, c.enc_cur, COPY_FRESH)


cdef int copy_from_history(SendCtx *x, CConsumer *c, const uint8_t *buf, int length, int64_t out_seq,
                           int64_t out_ts, int64_t in_seq, int enc, int mode) noexcept nogil:
    """A copy of a packet the producer's history holds (a retransmission, or a copy the pacer held) into
    the open run, as it was numbered when first sent or queued."""
    cdef RtpHeader h
    cdef RtpLayout l
    cdef Vp8Desc vp8
    if rtp_parse(buf, length, &h) != ST_OK:     # it parsed when it came in; the history keeps the bytes
        return 0
    rtp_layout(buf, &h, &c.producer.ext, &l)
    if c.producer.codec == CODEC_VP8 and vp8_parse(buf + h.header_len, h.payload_len, &vp8) == ST_OK:
        vp8_layout(&vp8, &l)
    return protect_copy(x, c, buf, length, &l, out_seq, out_ts, in_seq, enc, mode)


cdef void send_rtx(Core *w, CConsumer *c, const uint8_t *buf, int length, int64_t out_seq,
                    int64_t out_ts, int64_t in_seq, int enc) noexcept nogil:
    if not c.transport.bound:
        c.drops[DROP_UNKNOWN_SOURCE] += 1
        return
    ctx_run_start(w.tx, &c.transport.addr)
    copy_from_history(w.tx, c, buf, length, out_seq, out_ts, in_seq, enc, COPY_RTX)
    ctx_run_end(w.tx)


cdef inline void consumer_unrepairable(Core *w, CConsumer *c, int64_t now) noexcept nogil:
    """A video packet the subscriber lost cannot be resent: without a key frame its decoder waits until
    it gives up by itself (aiortc: its jitter buffer's 512 packets, seconds). Ask the encoding it gets for
    one (the per-encoding PLI limit keeps this to 2 a second)."""
    if c.producer.codec == CODEC_VP8 or c.producer.codec == CODEC_H264:
        c.unrepairable += 1
        request_keyframe(w, &c.producer.enc[c.enc_cur], now)


cdef void consumer_retransmit(Core *w, CConsumer *c, uint16_t out16, int64_t now) noexcept nogil:
    """Resend what went out under output seq out16, if it is still held: the same packet with the
    same header (same SRTP index, same plaintext: same ciphertext). At most once per seq per
    max(20 ms, RTT), within the consumer's retransmission byte budget; nothing while paused."""
    cdef CEncoding *enc
    cdef SentEntry *e
    cdef int64_t out_seq, in_seq, gap, d, add, rate, burst
    cdef int slot, length
    c.nacks += 1
    if c.paused:
        c.drops[DROP_PAUSED] += 1
        return
    out_seq = ext_seq16(c.last_out_seq, out16)
    e = &c.sent[out_seq & (c.sent_len - 1)]
    if not c.have_out or e.out_seq != out_seq or out_seq < c.rtx_floor:
        c.drops[DROP_NACK_NOT_HELD] += 1
        w.drops[DROP_NACK_NOT_HELD] += 1
        if c.have_out and c.last_out_seq - c.sent_len < out_seq <= c.last_out_seq:
            consumer_unrepairable(w, c, now)   # recent and ours (not a seq never sent)
        return
    in_seq = e.in_seq
    if in_seq < 0:
        c.drops[DROP_NACK_PADDING] += 1     # a probe's padding packet: lost, and nothing was in it
        return
    enc = &c.producer.enc[e.enc]        # the history of the encoding it was sent from
    slot = <int>(((in_seq % HIST_SLOTS) + HIST_SLOTS) % HIST_SLOTS)
    if enc.hist_seq[slot] != in_seq:
        c.drops[DROP_NACK_NOT_HELD] += 1
        w.drops[DROP_NACK_NOT_HELD] += 1
        consumer_unrepairable(w, c, now)
        return
    gap = RTX_MIN_GAP_NS
    if c.rtt_ms * 1000000.0 > gap:
        gap = <int64_t>(c.rtt_ms * 1000000.0)
    if e.rtx_ns != 0 and now - e.rtx_ns < gap:
        c.drops[DROP_NACK_TOO_SOON] += 1
        w.drops[DROP_NACK_TOO_SOON] += 1
        return
    length = enc.hist_len[slot]
    # On a link the estimator found limited, retransmissions get at most RTX_SHARE of its estimate: resent
    # into a full queue they are lost again and NACKed again (a storm that crowds out the fresh packets).
    rate = RTX_RATE_BYTES
    if c.transport.bwe.limited and c.transport.bwe.estimate * RTX_SHARE // 800 < rate:
        rate = c.transport.bwe.estimate * RTX_SHARE // 800
    burst = RTX_BURST_BYTES if rate == RTX_RATE_BYTES else rate
    d = now - c.rtx_budget_ns
    if c.rtx_budget_ns == 0 or d >= 1000000000:
        c.rtx_budget = burst
        c.rtx_budget_ns = now
    elif d > 0:
        add = d * rate // 1000000000
        if add > 0:
            c.rtx_budget += add
            if c.rtx_budget > burst:
                c.rtx_budget = burst
            c.rtx_budget_ns = now
    if c.rtx_budget < length:
        c.drops[DROP_NACK_BUDGET] += 1
        w.drops[DROP_NACK_BUDGET] += 1
        consumer_unrepairable(w, c, now)
        return
    c.rtx_budget -= length
    e.rtx_ns = now
    send_rtx(w, c, enc.hist + slot * HIST_SLOT, length, out_seq, e.out_ts, in_seq, e.enc)


cdef void send_padding(Core *w, CTransport *t, int budget) noexcept nogil:
    """About `budget` bytes of padding-only packets (RFC 3550 §5.1: P bit, no payload) to t for a probe, on
    one of its video consumers whose last packet ended a frame (paused too, when no other is): fresh output seqs (the numbering skips
    them for what follows), that frame's timestamp, the consumer's extensions, so that libwebrtc takes
    them as padding and aiortc as an empty part of the frame they follow. Never on audio (an empty Opus
    packet stops aiortc's decoder), never in the middle of a frame. At most 32 packets per call."""
    cdef CConsumer *c = NULL
    cdef CConsumer *k
    cdef SendCtx *x = w.tx
    cdef uint8_t el[NAME_LEN + 8]
    cdef uint8_t *out
    cdef int i, ne, n, blk, sent = 0
    cdef int64_t seq
    if not t.bound or (t.pace != NULL and t.pace.n > 0):
        return          # padding only on an idle link: media the pacer holds goes first
    for i in range(t.consumers.n):
        k = <CConsumer *>t.consumers.items[i]
        if ((k.producer.codec == CODEC_VP8 or k.producer.codec == CODEC_H264) and k.have_out and not k.resync
                and k.last_out_marker):
            # a flowing one first; else a paused one: a subscriber whose only video is paused for bandwidth
            # gets it back only through a probe (what gets through is audio alone otherwise)
            if c == NULL or (c.paused and not k.paused):
                c = k
            if not c.paused:
                break
    if c == NULL:
        return
    ctx_run_start(x, &t.addr)
    while budget > 0 and sent < 32:
        ctx_run_room(x)
        out = x.sbuf + x.nsend * SLOT
        seq = c.last_out_seq + 1
        ne = ext_congestion(c, x, el, c.ext_pre_len)
        memcpy(el, c.ext_pre, c.ext_pre_len)
        blk = 4 + ((ne + 3) & ~3) if ne else 0
        out[0] = 0xA0 | (0x10 if ne else 0)           # V=2, P=1, X
        rtp_set_header(out, c.payload_type, <uint16_t>seq, <uint32_t>c.last_out_ts, c.ssrc)
        out[1] &= 0x7f                                  # no marker: not a frame's end
        if ne:
            out[12] = 0xBE
            out[13] = 0xDE
            wr16(out + 14, <uint16_t>((blk - 4) // 4))
            memset(out + 16, 0, blk - 4)
            memcpy(out + 16, el, ne)
        n = 12 + blk
        memset(out + n, 0, BWE_PAD_MAX - 1)
        out[n + BWE_PAD_MAX - 1] = BWE_PAD_MAX
        n += BWE_PAD_MAX
        if t.tx != NULL:
            n = srtp_protect(t.tx, out, n, SLOT)
            if n < 0:
                c.drops[drop_reason(n)] += 1
                break
        # the number is used: what follows continues after it; a NACK for it finds a padding entry
        c.last_out_seq = seq
        c.seq_offset += 1
        c.sent[seq & (c.sent_len - 1)].out_seq = seq
        c.sent[seq & (c.sent_len - 1)].in_seq = -1
        x.siov[x.nsend].iov_len = n
        x.nsend += 1
        x.packets_out += 1
        x.bytes_out += n
        if c.out_ext.transport_cc and t.bwe.hist != NULL:
            bwe_sent(&t.bwe, x.run_us, n)
        t.c.packets_out += 1
        t.c.bytes_out += n
        t.bwe.padding_packets += 1
        t.bwe.padding_bytes += n
        budget -= n
        sent += 1
    ctx_run_end(x)


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
    for v in (ids.mid, ids.audio_level, ids.transport_cc, ids.abs_send_time):
        if v and not 1 <= v <= 14:
            raise ValueError("extension IDs towards a subscriber must be 1-14 (one-byte form)")
    if len(mid) > 16 or len(mid) >= NAME_LEN:
        raise ValueError("mid longer than 16 bytes")
    return ids
