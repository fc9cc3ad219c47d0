# The Python-fed ("direct") producer: packets that Python made (the MCU's encoder output, already
# packetized RTP) enter the packet path here instead of from a transport, a batch per call, and fan out
# like any producer's: per-consumer rewrite and SRTP, NACK history, sender reports. With no upstream
# transport there is nobody to NACK or PLI: a key frame request becomes a keyframe_requested event.


cdef int direct_feed(Core *w, CProducer *p, int n, int64_t now) noexcept nogil:
    """Fan out the n packets staged in w.rbuf (lengths in w.rmsg[i].msg_len) as producer p's. Returns
    how many were valid RTP; the others are counted under their drop reason."""
    cdef RtpHeader h
    cdef CEncoding *e
    cdef uint8_t *buf
    cdef int i, k, st, ok = 0
    for i in range(n):
        buf = w.rbuf + i * SLOT
        st = rtp_parse(buf, <int>w.rmsg[i].msg_len, &h)
        if st != ST_OK:
            w.drops[drop_reason(st)] += 1
            w.lat_pending += 1
            continue
        e = &p.enc[0]
        for k in range(1, p.nenc):
            if p.enc[k].ssrc == h.ssrc:
                e = &p.enc[k]
        ingest_encoding(w, e, buf, <int>w.rmsg[i].msg_len, &h, now)
        ok += 1
    fanout_pending(w, now)
    flush_recorded(w, now)
    return ok
