# Ingest: the producer side of an RTP packet. From a transport: unprotect, transport-cc arrival, the
# encoding by SSRC (or learned from the mid/rid header extensions: ingest_bind). Then, for any producer
# (ingest_encoding, also the Python-fed one): extended numbering, upstream NACK gaps, key frame
# detection, the encoding's NACK history ring; the packet then waits in the fan-out queue (fanout.pxi)
# with the batch's other packets.


cdef CEncoding *ingest_bind(Core *w, CTransport *t, const uint8_t *buf, const RtpHeader *h,
                            int *repair) noexcept nogil:
    """An SSRC nobody has: if its packet names a mid and rid (RFC 8852; Chromium sends them on each
    stream's first ~20 packets only) matching a not yet bound encoding of a producer of this transport,
    that encoding gets the SSRC, here in the core (no Python round trip before its packets flow). A
    repaired-rid instead makes it that encoding's RTX stream (*repair = 1) if RTX was negotiated."""
    cdef char mid[NAME_LEN]
    cdef char rid[NAME_LEN]
    cdef char rrid[NAME_LEN]
    cdef CProducer *p
    cdef CEncoding *e
    cdef Event *ev
    cdef int i, k
    if rtp_ext_string(buf, h, t.ext.mid, mid, NAME_LEN) <= 0:
        return NULL
    rtp_ext_string(buf, h, t.ext.rid, rid, NAME_LEN)
    repair[0] = 0
    if rtp_ext_string(buf, h, t.ext.rrid, rrid, NAME_LEN) > 0 and rid[0] == 0:
        for i in range(t.producers.n):
            p = <CProducer *>t.producers.items[i]
            if strcmp(p.mid, mid) != 0 or not p.rtx_payload_type:
                continue
            for k in range(p.nenc):
                e = &p.enc[k]
                if e.rtx_ssrc == 0 and strcmp(e.rid, rrid) == 0:
                    if map_put(&w.repairs, h.ssrc, e) != 0:
                        return NULL
                    e.rtx_ssrc = h.ssrc
                    repair[0] = 1
                    return e
        return NULL                    # RTX not negotiated, or of no encoding we receive
    for i in range(t.producers.n):
        p = <CProducer *>t.producers.items[i]
        if strcmp(p.mid, mid) != 0:
            continue
        for k in range(p.nenc):
            e = &p.enc[k]
            if not e.bound and strcmp(e.rid, rid) == 0:
                if map_put(&w.producers, h.ssrc, e) != 0:
                    return NULL
                e.ssrc = h.ssrc
                e.bound = 1
                ev = core_event(w, EV_ENCODING_BOUND, t.id, p.id, h.ssrc)
                if ev != NULL:
                    strcpy(ev.mid, mid)
                    strcpy(ev.rid, rid)
                return e
        return NULL
    return NULL


cdef int ingest_rtp(Core *w, CTransport *t, uint8_t *buf, int length, int64_t now) noexcept nogil:
    """One RTP packet from a transport; returns 1 if it was queued for fan-out."""
    cdef RtpHeader h
    cdef CEncoding *e
    cdef int st
    cdef uint32_t twseq
    cdef int repair = 0
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
    e = <CEncoding *>map_get(&w.producers, h.ssrc)
    if e == NULL:
        e = <CEncoding *>map_get(&w.repairs, h.ssrc)
        repair = e != NULL
    if e == NULL:
        e = ingest_bind(w, t, buf, &h, &repair)
        if e == NULL:
            t.drops[DROP_UNKNOWN_SSRC] += 1
            w.drops[DROP_UNKNOWN_SSRC] += 1
            event_names_from(core_event(w, EV_UNKNOWN_SSRC, t.id, 0, h.ssrc), buf, &h, &t.ext)
            return 0
    if e.producer.transport != t:
        t.drops[DROP_SSRC_WRONG_TRANSPORT] += 1
        w.drops[DROP_SSRC_WRONG_TRANSPORT] += 1
        return 0
    if repair:
        return ingest_repair(w, e, buf, length, &h, now)
    t.tcc_media_ssrc = e.ssrc
    return ingest_encoding(w, e, buf, length, &h, now)


cdef int ingest_repair(Core *w, CEncoding *e, uint8_t *buf, int length, const RtpHeader *h,
                       int64_t now) noexcept nogil:
    """An RTX packet (RFC 4588) of encoding e: unwrapped in place into the original (its seq from the
    OSN, e's SSRC and payload type, the OSN taken out, padding dropped), which then comes in as a late
    packet of e: it fills the gap in the history and the NACK list, and goes to the consumers still
    missing it, if it is behind the newest packet and within the history (else: bad_rtx). Padding-only RTX
    is the publisher probing its uplink: counted, not forwarded."""
    cdef CProducer *p = e.producer
    cdef RtpHeader h2
    cdef int hl = h.header_len, n
    cdef int64_t osn
    if h.payload_type != p.rtx_payload_type:
        e.producer.transport.drops[DROP_BAD_RTX] += 1
        w.drops[DROP_BAD_RTX] += 1
        return 0
    if h.payload_len < 2:
        if h.payload_len == 0:
            e.rtx_padding += 1
        else:
            e.producer.transport.drops[DROP_BAD_RTX] += 1
            w.drops[DROP_BAD_RTX] += 1
        return 0
    osn = ext_seq16(e.ext_seq, rd16(buf + hl))
    if not e.have_seq or osn >= e.ext_seq or e.ext_seq - osn >= HIST_SLOTS:
        # a repair is of a packet already passed and still worth having; anything else would renumber
        # the encoding from a stream that is not its own
        e.producer.transport.drops[DROP_BAD_RTX] += 1
        w.drops[DROP_BAD_RTX] += 1
        return 0
    n = hl + h.payload_len - 2
    wr16(buf + 2, rd16(buf + hl))
    memmove(buf + hl, buf + hl + 2, h.payload_len - 2)
    buf[0] &= 0xdf                          # no padding: it was the RTX packet's
    buf[1] = (buf[1] & 0x80) | (p.payload_type & 0x7f)
    wr32(buf + 8, e.ssrc)
    if not e.bound or rtp_parse(buf, n, &h2) != ST_OK:
        return 0
    e.rtx_received += 1
    w.rtx_in += 1
    return ingest_encoding(w, e, buf, n, &h2, now)


cdef int ingest_encoding(Core *w, CEncoding *e, const uint8_t *buf, int length, const RtpHeader *h,
                         int64_t now) noexcept nogil:
    """Numbering, key frame, NACK history of one parsed packet of encoding e; the packet then waits in
    the fan-out queue so that the batch's packets of one producer fan out together (GSO). Returns 1."""
    cdef CProducer *p = e.producer
    cdef CConsumer *c
    cdef Vp8Desc vp8
    cdef int vp8_ok = 0
    cdef Pending *q
    cdef int i, key = 0, tid = -1, slot, lost
    cdef int64_t seq, ts
    e.c.packets_in += 1
    e.c.bytes_in += length
    if not e.have_seq:
        e.have_seq = 1
        e.ext_seq = (<int64_t>1 << 32) + h.seq
        e.ext_ts = (<int64_t>1 << 40) + h.timestamp
        seq = e.ext_seq
        ts = e.ext_ts
    else:
        seq = ext_seq16(e.ext_seq, h.seq)
        ts = ext_ts32(e.ext_ts, h.timestamp)
        if seq - e.ext_seq > 3000 or e.ext_seq - seq > 3000:
            # the source restarted with new numbering: what is queued goes out with the old mapping,
            # then the encoding's consumers continue from where they were
            fanout_pending(w, now)
            e.restarts += 1
            e.ext_seq = seq
            e.ext_ts = ts
            for i in range(p.consumers.n):
                c = <CConsumer *>p.consumers.items[i]
                if c.producer == p and c.enc_cur == e.index:
                    consumer_resync(c)
            for i in range(HIST_SLOTS):
                e.hist_seq[i] = -1
            e.nnack = 0
            core_event(w, EV_PRODUCER_RESTART, p.transport.id if p.transport != NULL else 0, p.id, e.ssrc)
        elif seq > e.ext_seq:
            if seq > e.ext_seq + 1 and p.transport != NULL and nack_enabled(p.codec):
                # a gap: NACKed at the end of this batch unless reordering fills it first
                lost = nack_add_gap(e.nack, &e.nnack, e.ext_seq + 1, seq, now)
                if lost:
                    e.nack_gave_up += lost
                    request_keyframe(w, e, now)
                if e.nnack and not e.nack_listed and plist_add(&w.nack_encodings, e) == 0:
                    e.nack_listed = 1
            e.ext_seq = seq
            e.ext_ts = ts
        elif seq < e.ext_seq and e.nnack:
            # late (reordered or a retransmission on the same SSRC): forwarded below like any
            # packet, with the consumers' mapped seq (out = in + offset)
            if nack_arrived(e.nack, &e.nnack, seq) > 0:
                e.nack_recovered += 1
    slot = <int>(seq % HIST_SLOTS)
    if e.hist_seq[slot] == seq:
        # a copy of a packet already passed on: a retransmission nobody needed any more, or a sender's
        # redundant RTX (libwebrtc probes with copies of recent packets): its consumers have it
        e.duplicates += 1
        return 0
    if p.codec == CODEC_VP8:
        if vp8_parse(buf + h.header_len, h.payload_len, &vp8) == ST_OK:
            vp8_ok = 1
            key = vp8.keyframe
            tid = vp8.tid
            if vp8.s and vp8.pid == 0:      # a frame's first packet: counted by temporal layer
                e.frames_by_tid[tid if 0 <= tid < MAX_TID else 0] += 1
            if vp8.width:
                e.width = vp8.width
                e.height = vp8.height
    elif p.codec == CODEC_H264:
        key = h264_keyframe(buf + h.header_len, h.payload_len) == 1
        if key:
            h264_payload_size(buf + h.header_len, h.payload_len, &e.width, &e.height)
    if key:
        e.keyframes += 1
    if p.tap != NULL:
        tap_push(p.tap, buf, length, now)
    if length <= HIST_SLOT:
        # the first copy of a seq stays: a NACK resends exactly the bytes sent under that number
        memcpy(e.hist + slot * HIST_SLOT, buf, length)
        e.hist_len[slot] = length
        e.hist_seq[slot] = seq
    q = &w.fan.pend[w.fan.npend]
    w.fan.npend += 1
    q.p = p
    q.e = e
    q.buf = buf
    q.length = length
    q.seq = seq
    q.ts = ts
    q.key = key
    q.tid = tid
    q.in_order = seq == e.ext_seq
    q.empty = h.payload_len == 0
    rtp_layout(buf, h, &p.ext, &q.lay)
    if q.lay.audio_level >= 0 and q.in_order:
        # RFC 6464 level (-dBov, 0 loudest) summed for the active-speaker choice, read as deltas by Python
        e.level_sum += q.lay.audio_level & 0x7f
        e.level_count += 1
    if vp8_ok:
        vp8_layout(&vp8, &q.lay)
    return 1
