# Sequence and timestamp continuity of a consumer (the model: mediasoup's SeqManager): one output
# SSRC whose sequence numbers stay continuous and whose timestamps stay on one clock while the input
# changes (an encoding switch, another producer, a restarted source), numbers skipped for packets not
# sent (so the receiver sees no loss), numbers held for late packets, never one number for two packets
# (SRTP nonce). Everything 64-bit extended; cut to 16/32 bits only in the header writer.

cdef inline void consumer_gap(CConsumer *c, int64_t in_seq) noexcept nogil:
    """Hold the output numbers of the input seqs missing before in_seq (at most the last gap_len):
    if one arrives late it gets exactly that number, nothing else ever does."""
    cdef int64_t k = c.last_in_seq + 1
    cdef GapEntry *g
    if in_seq - k > c.gap_len:
        k = in_seq - c.gap_len
    while k < in_seq:
        g = &c.gaps[k & (c.gap_len - 1)]
        g.in_seq = k
        g.out_seq = k + c.seq_offset
        g.enc = c.enc_cur
        k += 1


cdef inline void consumer_drop(CConsumer *c, int reason, int64_t in_seq) noexcept nogil:
    cdef GapEntry *g
    c.drops[reason] += 1
    if not c.have_out or c.resync:
        return                      # numbering starts (again) with the next packet sent
    if in_seq > c.last_in_seq:
        # the newest packet: skip its number so the consumer sees no gap (SeqManager)
        consumer_gap(c, in_seq)
        c.last_in_seq = in_seq
        c.seq_offset -= 1
    else:
        g = &c.gaps[in_seq & (c.gap_len - 1)]
        if g.in_seq == in_seq:
            g.in_seq = -1           # a late packet not sent: its held number stays unused


cdef inline int consumer_number(CConsumer *c, const CEncoding *e, int64_t in_seq, int64_t in_ts,
                                int64_t now, int64_t *out_seq, int64_t *out_ts) noexcept nogil:
    """The output seq/ts of a packet of encoding e about to be sent; 0 (counted as late) if it has none:
    an output seq is used for one packet only (SRTP: same SSRC + index = same nonce), numbers only grow
    except for the ones held for late packets (consumer_gap)."""
    cdef int64_t o
    cdef GapEntry *g
    if not c.have_out or c.resync:
        if not c.have_out:
            c.seq_offset = 0
            c.ts_offset = 0
        else:
            # continue right after the last number used
            c.seq_offset = c.last_out_seq + 1 - in_seq
            c.ts_offset = seq_switch_ts_offset(c, e, in_ts, now)
        c.have_out = 1
        c.resync = 0
        c.last_in_seq = in_seq - 1
    if in_seq > c.last_in_seq:
        o = in_seq + c.seq_offset
        if o <= c.last_out_seq:         # cannot happen with the rules above; refuse rather than reuse
            c.drops[DROP_LATE] += 1
            return 0
        consumer_gap(c, in_seq)
        c.last_in_seq = in_seq
        out_seq[0] = o
        out_ts[0] = in_ts + c.ts_offset
        c.last_out_seq = o
        c.last_out_ts = out_ts[0]
        c.last_out_ns = now
        return 1
    g = &c.gaps[in_seq & (c.gap_len - 1)]
    if g.in_seq != in_seq or g.enc != c.enc_cur or g.out_seq < c.gap_floor:
        # a duplicate, older than the held numbers, or from before a resync
        c.drops[DROP_LATE] += 1
        return 0
    g.in_seq = -1
    out_seq[0] = g.out_seq
    out_ts[0] = in_ts + c.ts_offset
    return 1


cdef inline void consumer_resync(CConsumer *c) noexcept nogil:
    """The input numbering changes (another producer, a restarted source): the next packet continues
    after the last number used; nothing numbered before is retransmitted or filled in late."""
    c.resync = 1
    c.vp8_resync = 1
    c.switch_from = -1
    c.rtx_floor = c.last_out_seq + 1
    c.gap_floor = c.rtx_floor


cdef inline void consumer_switch_encoding(CConsumer *c, int enc) noexcept nogil:
    """Forward another encoding of the same producer from now on (its key frame is the current packet):
    numbering continues after the last number used; what was sent before stays retransmittable from
    the history of the encoding it came from (SentEntry.enc); no late packet of the old one fills in."""
    if not c.resync:
        c.switch_from = c.enc_cur       # the encoding whose clock the next timestamps continue
    c.enc_cur = enc
    c.resync = 1
    c.vp8_resync = 1
    c.gap_floor = c.last_out_seq + 1


cdef inline int64_t seq_switch_ts_offset(CConsumer *c, const CEncoding *e, int64_t in_ts,
                                         int64_t now) noexcept nogil:
    """The consumer's new ts offset when packet in_ts of encoding e is the first after a resync.

    Across an encoding switch of one producer the sender reports of both encodings tie their RTP clocks
    to the sender's one NTP clock (RFC 3550 §6.4.1), so the new encoding's timestamp is mapped to the
    old encoding's clock at the same capture time: out = old_ts(ntp(in_ts)) + old offset. Until both
    have sent an SR (and for another producer, whose sender's wall clock is not comparable, or a
    restarted source) the clock advances by the arrival time elapsed since the last packet sent.
    Either way the output timestamp grows by at least 1: the new key frame is a new frame to the
    receiver's jitter buffer even when it shows the same instant."""
    cdef const CEncoding *a
    cdef int64_t out, elapsed, a_sr, e_sr
    cdef double ticks
    out = -1
    if c.switch_from >= 0 and c.switch_from != e.index and e.sr_count and e.have_seq:
        a = &c.producer.enc[c.switch_from]
        if a.sr_count and a.have_seq and c.clock_rate > 0:
            a_sr = ext_ts32(a.ext_ts, a.sr_rtp_ts)
            e_sr = ext_ts32(e.ext_ts, e.sr_rtp_ts)
            # NTP 32.32 difference of the two reports, in RTP ticks
            ticks = <double>(<int64_t>(e.sr_ntp - a.sr_ntp)) / 4294967296.0 * c.clock_rate
            out = a_sr + (in_ts - e_sr) + <int64_t>(ticks + (0.5 if ticks >= 0 else -0.5)) + c.ts_offset
    if out < 0:
        elapsed = (now - c.last_out_ns) * c.clock_rate // 1000000000
        out = c.last_out_ts + (elapsed if elapsed > 0 else 1)
    if out <= c.last_out_ts:
        out = c.last_out_ts + 1
    c.switch_from = -1
    return out - in_ts
