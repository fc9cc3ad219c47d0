# Where Python meets a producer's packets, both ways.
# The Python-fed ("direct") producer: packets that Python made (the MCU's encoder output, already
# packetized RTP) enter the packet path here instead of from a transport, a batch per call, and fan out
# like any producer's: per-consumer rewrite and SRTP, NACK history, sender reports. With no upstream
# transport there is nobody to NACK or PLI: a key frame request becomes a keyframe_requested event.
# The tap: a producer's packets as they are ingested (after SRTP, duplicates dropped, repaired ones late)
# copied into a ring that Python empties in batches (NativeWorker.tap_read, the MCU's input thread); a
# reader that falls behind loses the newest packets, counted, never the core's time.

cdef enum:
    TAP_PACKETS = 1024          # ~5 s of a 1.5 Mbit/s video; the MCU reads every few milliseconds


cdef struct Tap:
    uint8_t data[TAP_PACKETS * HIST_SLOT]
    int32_t length[TAP_PACKETS]
    int64_t arrival_ns[TAP_PACKETS]
    int head                    # oldest unread
    int count
    uint64_t packets
    uint64_t overflow           # lost because the reader was behind
    uint64_t too_long


cdef void tap_push(Tap *t, const uint8_t *buf, int length, int64_t now) noexcept nogil:
    cdef int slot
    if length > HIST_SLOT:
        t.too_long += 1
        return
    if t.count == TAP_PACKETS:
        t.overflow += 1
        return
    slot = (t.head + t.count) % TAP_PACKETS
    memcpy(t.data + <size_t>slot * HIST_SLOT, buf, length)
    t.length[slot] = length
    t.arrival_ns[slot] = now
    t.count += 1
    t.packets += 1


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
