# RTCP in and out of the worker. In: SR (the producer's clock), RR (the consumer's loss, jitter, RTT),
# NACK (retransmit from the history), PLI/FIR (to the producer, rate-limited), REMB and transport-cc.
# Out: upstream PLI and NACK, transport-cc feedback, sender reports of our consumers; every packet is
# written by a writer of rtcp.pxi (transport-cc by its ring's tcc_build in twcc.pxi) and goes out through
# rtcp_send.


cdef int rtcp_send(Core *w, CTransport *t, uint8_t *b, int n) noexcept nogil:
    """Protect the RTCP packet written at b (the slot of core_slot) and queue it to t; 1 if queued.
    Nothing goes to an unbound transport; a protect failure is counted on the transport."""
    if not t.bound or n <= 0:
        return 0
    if t.tx != NULL:
        n = srtcp_protect(t.tx, b, n, SLOT)
        if n < 0:
            t.drops[drop_reason(n)] += 1
            return 0
    core_queue(w, n, &t.addr)
    t.c.packets_out += 1
    t.c.bytes_out += n
    return 1


cdef int64_t remb_unlisted_bps(CTransport *t, const uint8_t *ssrcs, int n, int64_t now_us) noexcept nogil:
    """The rate t sent, since its last REMB, on the consumers this REMB does not name (0 at the first)."""
    cdef uint64_t total = 0
    cdef int64_t rate = 0, dt
    cdef int i, k, listed
    cdef CConsumer *c
    for i in range(t.consumers.n):
        c = <CConsumer *>t.consumers.items[i]
        listed = 0
        for k in range(n):
            if rd32(ssrcs + 4 * k) == c.ssrc:
                listed = 1
                break
        if not listed:
            total += c.c.bytes_out
    dt = now_us - t.remb_unlisted_us
    if t.remb_unlisted_us and dt > 0 and total >= t.remb_unlisted_bytes:
        rate = <int64_t>((total - t.remb_unlisted_bytes) * 8 * 1000000 // <uint64_t>dt)
    t.remb_unlisted_bytes = total
    t.remb_unlisted_us = now_us
    return rate


cdef void rtcp_nack(Core *w, CConsumer *c, const uint8_t *fci, int n, int64_t now) noexcept nogil:
    cdef int i, b
    cdef uint16_t pid, blp
    for i in range(0, n - 3, 4):
        pid = rd16(fci + i)
        blp = rd16(fci + i + 2)
        consumer_retransmit(w, c, pid, now)
        for b in range(16):
            if blp & (1 << b):
                consumer_retransmit(w, c, <uint16_t>(pid + b + 1), now)


cdef void rtcp_report(Core *w, CTransport *t, const uint8_t *blk, uint64_t ntp) noexcept nogil:
    cdef RtcpReport r
    cdef CConsumer *c
    cdef uint32_t mid, rtt
    rtcp_read_report(blk, &r)
    c = <CConsumer *>map_get(&w.consumers, r.ssrc)
    if c == NULL or c.transport != t:
        return
    c.rr_fraction_lost = r.fraction_lost
    c.rr_packets_lost = r.packets_lost
    c.rr_jitter = r.jitter
    c.rr_highest_seq = r.highest_seq
    c.rr_count += 1
    bwe_report_loss(&t.bwe, r.fraction_lost, now_ns() // 1000)
    if r.lsr != 0 and r.lsr == c.sr_ntp_mid:
        # RFC 3550 §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s
        mid = <uint32_t>(ntp >> 16)
        rtt = mid - r.lsr - r.dlsr
        if rtt < (<uint32_t>1 << 31):
            c.rtt_ms = rtt * 1000.0 / 65536.0
            t.rtt_ms = c.rtt_ms


cdef void rtcp_receive(Core *w, CTransport *t, uint8_t *buf, int length, int64_t now) noexcept nogil:
    cdef int st, off = 0, count, pt, blen, i, n
    cdef const uint8_t *p
    cdef const uint8_t *b
    cdef CConsumer *c
    cdef CEncoding *enc
    cdef uint64_t ntp = 0, bitrate, decreases = t.bwe.decreases
    if t.rx != NULL:
        st = srtcp_unprotect(t.rx, buf, length)
        if st < 0:
            t.drops[drop_reason(st)] += 1
            w.drops[drop_reason(st)] += 1
            return
        length = st
    st = rtcp_check_compound(buf, length)
    if st != ST_OK:
        t.drops[drop_reason(st)] += 1
        w.drops[drop_reason(st)] += 1
        return
    while off < length:
        p = buf + off
        count = p[0] & 0x1f
        pt = p[1]
        blen = rtcp_body_len(p)
        off += 4 * (rd16(p + 2) + 1)
        b = p + 4
        if pt == RTCP_SR and blen >= 24 + 24 * count:
            enc = <CEncoding *>map_get(&w.producers, rd32(b))
            if enc != NULL and enc.producer.transport == t:
                enc.sr_ntp = (<uint64_t>rd32(b + 4) << 32) | rd32(b + 8)
                enc.sr_rtp_ts = rd32(b + 12)
                enc.sr_count += 1
            if count and ntp == 0:
                ntp = ntp_now()
            for i in range(count):
                rtcp_report(w, t, b + 24 + 24 * i, ntp)
        elif pt == RTCP_RR and blen >= 4 + 24 * count:
            if count and ntp == 0:
                ntp = ntp_now()
            for i in range(count):
                rtcp_report(w, t, b + 4 + 24 * i, ntp)
        elif (pt == RTCP_RTPFB or pt == RTCP_PSFB) and blen >= 8:
            c = <CConsumer *>map_get(&w.consumers, rd32(b + 4))
            if pt == RTCP_PSFB and count == 4 and blen >= 16:
                c = <CConsumer *>map_get(&w.consumers, rd32(b + 8))   # FIR names it in the FCI
            if pt == RTCP_RTPFB and count == 15:
                t.tcc_feedback += 1
                bwe_feedback(&t.bwe, b + 8, blen - 8, now // 1000)
            elif pt == RTCP_PSFB and count == 15 and blen >= 16 and memcmp(b + 8, b"REMB", 4) == 0:
                bitrate = (<uint64_t>(rd24(b + 13) & 0x3ffff)) << (b[13] >> 2)
                t.remb_bitrate = bitrate
                n = b[12]
                if 16 + 4 * n > blen:
                    n = (blen - 16) // 4
                for i in range(n):
                    c = <CConsumer *>map_get(&w.consumers, rd32(b + 16 + 4 * i))
                    if c != NULL and c.transport == t:
                        c.remb_bitrate = bitrate
                bwe_remb(&t.bwe, bitrate, remb_unlisted_bps(t, b + 16, n, now // 1000), now // 1000)
            elif c == NULL or c.transport != t:
                t.drops[DROP_UNKNOWN_SSRC] += 1
            elif pt == RTCP_RTPFB and count == 1:
                rtcp_nack(w, c, b + 8, blen - 8, now)
            elif pt == RTCP_PSFB and (count == 1 or count == 4):
                c.plis += 1
                # the target's key frame: it repairs the current stream and completes a pending switch
                request_keyframe(w, &c.producer.enc[c.enc_target], now)
    if t.bwe.decreases != decreases:
        core_event(w, EV_BANDWIDTH_DOWN, t.id, 0, 0)    # allocation should not wait for its next tick


cdef void send_tcc(Core *w, CTransport *t, int64_t now) noexcept nogil:
    """Report every arrival the transport holds (one or more feedback packets)."""
    cdef uint8_t *b
    cdef int n, rep
    while t.tcc.base < t.tcc.end:
        b = core_slot(w)
        n = tcc_build(t.tcc, b, TCC_MAX_FB, w.rtcp_ssrc, t.tcc_media_ssrc, &rep)
        if n <= 0:
            break
        # unbound (nowhere to send) or refused: those arrivals are forgotten all the same
        if rtcp_send(w, t, b, n):
            t.tcc_feedback_sent += 1
            t.tcc_packets_reported += rep
    t.tcc_last_fb_ns = now


cdef void send_nacks(Core *w, CEncoding *p, int64_t now) noexcept nogil:
    """NACK what is due for encoding p, give up on what expired (then a key frame request lets
    consumers recover)."""
    cdef int64_t seqs[NACK_MAX]
    cdef int64_t retry = NACK_MIN_RETRY_NS
    cdef CTransport *t = p.producer.transport
    cdef int nseq, gave_up
    cdef uint8_t *b
    if t.rtt_ms * 1000000.0 > retry:
        retry = <int64_t>(t.rtt_ms * 1000000.0)
    gave_up = nack_due(p.nack, &p.nnack, now, retry, seqs, &nseq)
    if nseq and t.bound:
        b = core_slot(w)
        if rtcp_send(w, t, b, rtcp_write_nack(b, w.rtcp_ssrc, p.ssrc, seqs, nseq)):
            p.nacks_sent += 1
            p.nack_seqs_requested += nseq
    if gave_up:
        p.nack_gave_up += gave_up
        if p.producer.codec == CODEC_VP8 or p.producer.codec == CODEC_H264:
            request_keyframe(w, p, now)


cdef void feedback_due(Core *w, int64_t now, int force_tcc) noexcept nogil:
    """Upstream feedback of the draining thread: key frame requests whose window closed, NACKs due,
    transport-cc every TCC_INTERVAL_NS; downstream, the copies pacers hold, then the padding of running
    bandwidth probes."""
    cdef int i, due
    cdef CTransport *t
    cdef CEncoding *p
    i = 0
    while i < w.pli_encodings.n:
        p = <CEncoding *>w.pli_encodings.items[i]
        if now - p.last_pli_ns >= PLI_INTERVAL_NS:
            p.pli_listed = 0
            plist_del(&w.pli_encodings, p)      # the last item moves to i
            request_keyframe(w, p, now)
        else:
            i += 1
    i = 0
    while i < w.nack_encodings.n:
        p = <CEncoding *>w.nack_encodings.items[i]
        send_nacks(w, p, now)
        if p.nnack == 0:
            p.nack_listed = 0
            plist_del(&w.nack_encodings, p)    # the last item moves to i
        else:
            i += 1
    for i in range(w.tcc_transports.n):
        t = <CTransport *>w.tcc_transports.items[i]
        if t.tcc.base < t.tcc.end and (force_tcc or now - t.tcc_last_fb_ns >= TCC_INTERVAL_NS):
            send_tcc(w, t, now)
    pace_due(w, now)
    i = 0
    while i < w.probing.n:
        t = <CTransport *>w.probing.items[i]
        due = bwe_probe_due(&t.bwe, now // 1000, t.c.bytes_out)
        if due > 0:
            send_padding(w, t, due)
        if t.bwe.probe_target == 0:
            t.probe_listed = 0
            plist_del(&w.probing, t)           # the last item moves to i
        else:
            i += 1


cdef int request_keyframe(Core *w, CEncoding *p, int64_t now) noexcept nogil:
    """PLI to the sender of encoding p, at most one per PLI_INTERVAL_NS; 1 if sent now. A request inside
    the window is not lost: it is sent the moment the window closes (feedback_due), or a subscriber
    that joins just after another would wait for the encoder's next periodic key frame."""
    cdef uint8_t *b
    cdef CTransport *t = p.producer.transport
    if not p.bound:
        return 0                         # no SSRC to name yet: its first packets start with a key frame
    if now - p.last_pli_ns < PLI_INTERVAL_NS:
        p.pli_limited += 1
        w.drops[DROP_PLI_RATE_LIMITED] += 1
        if not p.pli_listed and plist_add(&w.pli_encodings, p) == 0:
            p.pli_listed = 1
        return 0
    if t == NULL:
        # a Python-fed producer: its encoder is Python's, so the request goes up as an event
        p.last_pli_ns = now
        p.pli_forwarded += 1
        core_event(w, EV_KEYFRAME_REQUESTED, 0, p.producer.id, p.ssrc)
        return 1
    if not t.bound:
        return 0
    p.last_pli_ns = now
    b = core_slot(w)
    if not rtcp_send(w, t, b, rtcp_write_pli(b, w.rtcp_ssrc, p.ssrc)):
        return 0
    p.pli_forwarded += 1
    core_event(w, EV_KEYFRAME_REQUESTED, t.id, p.producer.id, p.ssrc)
    return 1


cdef void feedback_tcc_all(Core *w) noexcept nogil:
    cdef int i
    cdef CTransport *t
    cdef int64_t now = now_ns()
    for i in range(w.tcc_transports.n):
        t = <CTransport *>w.tcc_transports.items[i]
        if t.tcc.base < t.tcc.end:
            send_tcc(w, t, now)


cdef void send_sender_reports(Core *w) noexcept nogil:
    """One SR per consumer that has sent (RFC 3550 §6.4.1), so receivers' RRs carry LSR/DLSR for RTT."""
    cdef size_t i
    cdef CConsumer *c
    cdef uint8_t *b
    cdef uint64_t ntp
    cdef int64_t now, ts
    for i in range(w.consumers.cap):
        c = <CConsumer *>w.consumers.vals[i]
        if c == NULL or not c.have_out:
            continue
        b = core_slot(w)
        ntp = ntp_now()
        now = now_ns()
        # the RTP time of "now" on the consumer's clock: the last packet's, advanced by the time since
        ts = c.last_out_ts + (now - c.last_out_ns) * c.clock_rate // 1000000000
        if rtcp_send(w, c.transport, b, rtcp_write_sr(b, c.ssrc, ntp, <uint32_t>ts,
                                                      <uint32_t>c.c.packets_out, <uint32_t>c.c.bytes_out)):
            c.sr_ntp_mid = <uint32_t>(ntp >> 16)
