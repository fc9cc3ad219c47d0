# Ingest: the producer side of an RTP packet (unprotect, transport-cc arrival, producer lookup, extended
# numbering, upstream NACK gaps, key frame detection, the NACK history ring), then it waits in the fan-out
# queue (fanout.pxi) with the batch's other packets.

cdef int ingest_rtp(Core *w, CTransport *t, uint8_t *buf, int length, int64_t now) noexcept nogil:
    """Producer side of one RTP packet (unprotect, numbering, key frame, NACK history); the packet
    then waits in pend[] so that the batch's packets of one producer fan out together (GSO).
    Returns 1 if it was queued for fan-out."""
    cdef RtpHeader h
    cdef CProducer *p
    cdef Vp8Desc vp8
    cdef Pending *e
    cdef int st, i, key = 0, tid = -1, slot, lost
    cdef int64_t seq, ts
    cdef uint32_t twseq
    if t.rx != NULL:
        st = srtp_unprotect(t.rx, buf, length)
        if st < 0:
            t.drops[drop_reason(st)] += 1
            w.drops[drop_reason(st)] += 1
            return 0
        length = st
    st = rtp_parse(buf, length, &h)
    if st != ST_OK:
        t.drops[drop_reason(st)] += 1
        w.drops[drop_reason(st)] += 1
        return 0
    if t.tcc != NULL and rtp_ext_uint(buf, &h, t.ext.transport_cc, 2, &twseq) == ST_OK:
        # every packet counts for the sender's estimate, probes on an unknown (RTX) SSRC too
        if tcc_record(t.tcc, <uint16_t>twseq, now // 1000) == TCC_FULL:
            send_tcc(w, t, now)
            tcc_record(t.tcc, <uint16_t>twseq, now // 1000)
    p = <CProducer *>map_get(&w.producers, h.ssrc)
    if p == NULL:
        t.drops[DROP_UNKNOWN_SSRC] += 1
        w.drops[DROP_UNKNOWN_SSRC] += 1
        event_names_from(core_event(w, EV_UNKNOWN_SSRC, t.id, 0, h.ssrc), buf, &h, &t.ext)
        return 0
    if p.transport != t:
        t.drops[DROP_SSRC_WRONG_TRANSPORT] += 1
        w.drops[DROP_SSRC_WRONG_TRANSPORT] += 1
        return 0
    p.c.packets_in += 1
    p.c.bytes_in += length
    t.tcc_media_ssrc = p.ssrc
    if not p.have_seq:
        p.have_seq = 1
        p.ext_seq = (<int64_t>1 << 32) + h.seq
        p.ext_ts = (<int64_t>1 << 40) + h.timestamp
        seq = p.ext_seq
        ts = p.ext_ts
    else:
        seq = ext_seq16(p.ext_seq, h.seq)
        ts = ext_ts32(p.ext_ts, h.timestamp)
        if seq - p.ext_seq > 3000 or p.ext_seq - seq > 3000:
            # the source restarted with new numbering: what is queued goes out with the old mapping,
            # then consumers continue from where they were
            fanout_pending(w, now)
            p.restarts += 1
            p.ext_seq = seq
            p.ext_ts = ts
            for i in range(p.consumers.n):
                consumer_resync(<CConsumer *>p.consumers.items[i])
            for i in range(HIST_SLOTS):
                p.hist_seq[i] = -1
            p.nnack = 0
            core_event(w, EV_PRODUCER_RESTART, t.id, p.id, h.ssrc)
        elif seq > p.ext_seq:
            if seq > p.ext_seq + 1 and nack_enabled(p.codec):
                # a gap: NACKed at the end of this batch unless reordering fills it first
                lost = nack_add_gap(p.nack, &p.nnack, p.ext_seq + 1, seq, now)
                if lost:
                    p.nack_gave_up += lost
                    request_keyframe(w, p, now)
                if p.nnack and not p.nack_listed and plist_add(&w.nack_producers, p) == 0:
                    p.nack_listed = 1
            p.ext_seq = seq
            p.ext_ts = ts
        elif seq < p.ext_seq and p.nnack:
            # late (reordered or a retransmission on the same SSRC): forwarded below like any
            # packet, with the consumers' mapped seq (out = in + offset)
            if nack_arrived(p.nack, &p.nnack, seq) > 0:
                p.nack_recovered += 1
    if p.codec == CODEC_VP8:
        if vp8_parse(buf + h.header_len, h.payload_len, &vp8) == ST_OK:
            key = vp8.keyframe
            tid = vp8.tid
    elif p.codec == CODEC_H264:
        key = h264_keyframe(buf + h.header_len, h.payload_len) == 1
    if key:
        p.keyframes += 1
    slot = <int>(seq % HIST_SLOTS)
    if length <= HIST_SLOT and p.hist_seq[slot] != seq:
        # the first copy of a seq stays: a NACK resends exactly the bytes sent under that number
        memcpy(p.hist + slot * HIST_SLOT, buf, length)
        p.hist_len[slot] = length
        p.hist_seq[slot] = seq
    e = &w.fan.pend[w.fan.npend]
    w.fan.npend += 1
    e.p = p
    e.buf = buf
    e.length = length
    e.seq = seq
    e.ts = ts
    e.key = key
    e.tid = tid
    e.in_order = seq == p.ext_seq
    e.empty = h.payload_len == 0
    return 1
