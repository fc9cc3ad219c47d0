# Downlink bandwidth estimation, one estimator per subscriber transport, in the manner of Google
# congestion control (draft-ietf-rmcat-gcc-02; libwebrtc's goog_cc is the reference we read, none of its
# code is here):
#  - delay-based: transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01) gives each
#    packet's arrival time; packets are grouped by send time (5 ms bursts), the growth of one-way delay
#    between groups goes through a trendline filter, and a slope above an adaptive threshold is over-use;
#  - loss-based: the share of packets the feedback (or, without it, the receiver reports) says were lost;
#  - REMB (receivers without transport-cc, e.g. aiortc): the receiver's own estimate; a REMB that falls is
#    its over-use signal (a REMB receiver keeps its value near 1.5x what it receives while all is well);
#  - AIMD rate control: down to 0.85x the acknowledged rate on over-use, up 8 %/s while normal but never
#    beyond 1.5x what was acknowledged; above that only a probe raises the estimate: padding sent at the
#    probe's rate for a while, and the estimate becomes what got through without over-use or loss.
# Everything is µs of CLOCK_MONOTONIC and bits per second; no Python object, no allocation per packet.

cdef enum:
    BWE_HIST = 4096               # sent packets remembered by transport-wide seq (~4 s at 1000 packets/s)
    BWE_WINDOW = 20               # trendline points
    BWE_GROUP_US = 5000           # a send burst: packets sent within 5 ms are one group
    BWE_MIN_BPS = 50000
    BWE_MAX_BPS = 50000000
    BWE_START_BPS = 1200000       # before any feedback: a safe default (two low layers and audio), not the top
    BWE_RATE_WINDOW_US = 500000   # acknowledged bitrate over this much arrival time
    BWE_DECREASE_GAP_US = 300000  # one multiplicative decrease per this long (about an RTT and a feedback)
    BWE_FEEDBACK_MAX = 4096       # packet statuses one feedback may report (more: garbage)
    BWE_PROBE_SETTLE_US = 400000  # after a probe's last padding, feedback about it is awaited this long
    BWE_REMB_SETTLE_US = 1000000  # ... and a REMB receiver's verdict this long (its detector lags, REMBs come ~2/s)
    BWE_PAD_MAX = 255             # RTP padding bytes per padding-only packet (one count octet)
    BWE_PROBE_LOSS = 5            # a receiver report losing more (of 256, ~2 %) while a REMB probe runs: it failed
    BWE_NORMAL = 0
    BWE_OVERUSE = 1
    BWE_UNDERUSE = 2

cdef struct BweSent:
    int64_t seq                   # extended transport-wide seq, -1 = empty
    int64_t send_us
    int32_t size
    int32_t acked                 # its arrival was reported already (a repeated report counts once)

cdef struct BweGroup:
    int64_t first_send_us
    int64_t last_send_us
    int64_t last_arrival_us
    int n

cdef struct Bwe:
    BweSent *hist                 # NULL until a consumer of the transport negotiates transport-cc
    int64_t next_seq              # the next transport-wide seq to send
    int64_t estimate              # bps: what allocation may spend on this transport
    int limited                   # a decrease happened: the estimate is evidence, not the default
    int state                     # BWE_NORMAL / OVERUSE / UNDERUSE (delay-based detector)
    int64_t last_update_us
    int64_t last_decrease_us
    # acknowledged bitrate (transport-cc)
    int64_t acked_bps
    int64_t rate_start_us
    int64_t rate_bytes
    # inter-group delay and trendline
    BweGroup cur, prev
    double acc_delay, smoothed
    double xs[BWE_WINDOW]
    double ys[BWE_WINDOW]
    int npoints
    int ndeltas
    int64_t first_arrival_us
    double prev_trend
    double threshold
    int64_t last_threshold_us
    double overuse_ms
    int overuse_count
    # loss from feedback: statuses since the last loss check
    int64_t fb_lost, fb_received
    double loss
    # REMB
    uint64_t remb_last
    uint64_t remb_count
    # probing
    int64_t probe_target          # bps; 0: no probe running
    int64_t probe_start_us
    int64_t probe_end_us          # padding stops here; the verdict comes BWE_PROBE_SETTLE_US later
    uint64_t probe_bytes_base     # the transport's bytes_out at the probe's start
    int probe_spoiled             # over-use, loss or a falling REMB while it ran
    uint64_t probe_rembs          # REMBs that arrived while it ran
    int64_t probe_acked_bytes     # acknowledged bytes sent during the probe (transport-cc)
    uint64_t probes_ok, probes_failed, probes_unanswered
    uint64_t padding_packets, padding_bytes
    # counters
    uint64_t feedback, feedback_bad, overuses, decreases


cdef void bwe_init(Bwe *b) noexcept nogil:
    memset(b, 0, sizeof(Bwe))
    b.estimate = BWE_START_BPS
    b.threshold = 12.5
    b.first_arrival_us = -1


cdef int bwe_enable_feedback(Bwe *b) noexcept nogil:
    """Keep what is sent from now on for transport-cc feedback; -1 without memory."""
    cdef int i
    if b.hist != NULL:
        return 0
    b.hist = <BweSent *>malloc(BWE_HIST * sizeof(BweSent))
    if b.hist == NULL:
        return -1
    for i in range(BWE_HIST):
        b.hist[i].seq = -1
    return 0


cdef void bwe_free(Bwe *b) noexcept nogil:
    free(b.hist)
    b.hist = NULL


cdef inline void bwe_sent(Bwe *b, int64_t send_us, int size) noexcept nogil:
    """A copy went out under the next transport-wide seq (the one ext_congestion wrote into it)."""
    cdef BweSent *s = &b.hist[b.next_seq & (BWE_HIST - 1)]
    s.seq = b.next_seq
    s.send_us = send_us
    s.size = size
    s.acked = 0
    b.next_seq += 1


cdef inline uint32_t abs_send_time(int64_t us) noexcept nogil:
    # 6.18 fixed-point seconds, 24 bits (abs-send-time: webrtc.org/experiments/rtp-hdrext/abs-send-time)
    return <uint32_t>(((us << 18) // 1000000) & 0xFFFFFF)


# ---- the estimator ----

cdef void bwe_decrease(Bwe *b, int64_t to_bps, int64_t now_us) noexcept nogil:
    if b.last_decrease_us and now_us - b.last_decrease_us < BWE_DECREASE_GAP_US:
        return
    if to_bps < BWE_MIN_BPS:
        to_bps = BWE_MIN_BPS
    if to_bps < b.estimate:
        b.estimate = to_bps
        b.decreases += 1
    b.limited = 1
    b.last_decrease_us = now_us
    b.last_update_us = now_us
    if b.probe_target:
        b.probe_spoiled = 1


cdef void bwe_increase(Bwe *b, int64_t now_us) noexcept nogil:
    """Normal use: up 8 %/s, never past 1.5x the acknowledged rate (higher needs a probe)."""
    cdef double dt
    cdef int64_t cap, grown
    if b.last_update_us == 0:
        b.last_update_us = now_us
        return
    dt = (now_us - b.last_update_us) / 1e6
    if dt <= 0:
        return
    if dt > 1.0:
        dt = 1.0
    b.last_update_us = now_us
    if b.acked_bps <= 0:
        return
    cap = b.acked_bps * 3 // 2 + 10000
    grown = b.estimate + <int64_t>(b.estimate * 0.08 * dt) + 1000
    if grown > cap:
        grown = cap
    if grown > b.estimate:
        b.estimate = grown if grown < BWE_MAX_BPS else BWE_MAX_BPS


cdef void bwe_detect(Bwe *b, double trend, double dt_ms, int64_t now_us) noexcept nogil:
    """Over-use detector with the adaptive threshold of draft-ietf-rmcat-gcc-02 §5.4."""
    cdef double m = trend * (b.ndeltas if b.ndeltas < 60 else 60) * 4.0, a, k, dt
    if m > b.threshold:
        b.overuse_ms = dt_ms / 2 if b.overuse_ms < 0 else b.overuse_ms + dt_ms
        b.overuse_count += 1
        if b.overuse_ms > 10.0 and b.overuse_count > 1 and trend >= b.prev_trend:
            b.overuse_ms = 0
            b.overuse_count = 0
            b.state = BWE_OVERUSE
    elif m < -b.threshold:
        b.overuse_ms = -1
        b.overuse_count = 0
        b.state = BWE_UNDERUSE
    else:
        b.overuse_ms = -1
        b.overuse_count = 0
        b.state = BWE_NORMAL
    b.prev_trend = trend
    a = m if m >= 0 else -m
    if b.last_threshold_us == 0:
        b.last_threshold_us = now_us
    dt = (now_us - b.last_threshold_us) / 1000.0
    b.last_threshold_us = now_us
    if a > b.threshold + 15.0:
        return                    # a spike (a late burst): not a reason to move the threshold
    k = 0.039 if a < b.threshold else 0.0087
    b.threshold += k * (a - b.threshold) * (dt if dt < 100.0 else 100.0)
    if b.threshold < 6.0:
        b.threshold = 6.0
    elif b.threshold > 600.0:
        b.threshold = 600.0


cdef void bwe_trendline(Bwe *b, double delta_ms, int64_t arrival_us, double dt_ms, int64_t now_us) noexcept nogil:
    cdef int i, n
    cdef double mx = 0, my = 0, num = 0, den = 0, trend = 0
    if b.first_arrival_us < 0:
        b.first_arrival_us = arrival_us
    b.ndeltas += 1
    b.acc_delay += delta_ms
    b.smoothed = 0.9 * b.smoothed + 0.1 * b.acc_delay
    if b.npoints == BWE_WINDOW:
        memmove(b.xs, b.xs + 1, (BWE_WINDOW - 1) * sizeof(double))
        memmove(b.ys, b.ys + 1, (BWE_WINDOW - 1) * sizeof(double))
        b.npoints -= 1
    b.xs[b.npoints] = (arrival_us - b.first_arrival_us) / 1000.0
    b.ys[b.npoints] = b.smoothed
    b.npoints += 1
    n = b.npoints
    if n == BWE_WINDOW:
        for i in range(n):
            mx += b.xs[i]
            my += b.ys[i]
        mx /= n
        my /= n
        for i in range(n):
            num += (b.xs[i] - mx) * (b.ys[i] - my)
            den += (b.xs[i] - mx) * (b.xs[i] - mx)
        if den > 0:
            trend = num / den
    bwe_detect(b, trend, dt_ms, now_us)


cdef void bwe_arrival(Bwe *b, BweSent *s, int64_t arrival_us, int64_t now_us) noexcept nogil:
    """One acknowledged packet, in transport-wide seq (= send) order."""
    cdef double delta_ms, dt_ms
    if b.probe_target and s.send_us >= b.probe_start_us and s.send_us <= b.probe_end_us:
        b.probe_acked_bytes += s.size
    # acknowledged bitrate over BWE_RATE_WINDOW_US of arrivals
    if b.rate_start_us == 0 or arrival_us < b.rate_start_us:
        b.rate_start_us = arrival_us
        b.rate_bytes = 0
    b.rate_bytes += s.size
    if arrival_us - b.rate_start_us >= BWE_RATE_WINDOW_US:
        b.acked_bps = b.rate_bytes * 8 * 1000000 // (arrival_us - b.rate_start_us)
        b.rate_start_us = arrival_us
        b.rate_bytes = 0
    if b.cur.n == 0:
        b.cur.first_send_us = b.cur.last_send_us = s.send_us
        b.cur.last_arrival_us = arrival_us
        b.cur.n = 1
        return
    if s.send_us - b.cur.first_send_us <= BWE_GROUP_US:
        if s.send_us > b.cur.last_send_us:
            b.cur.last_send_us = s.send_us
        if arrival_us > b.cur.last_arrival_us:
            b.cur.last_arrival_us = arrival_us
        b.cur.n += 1
        return
    # the group is complete: its delay against the one before goes into the trendline
    if b.prev.n:
        delta_ms = ((b.cur.last_arrival_us - b.prev.last_arrival_us)
                    - (b.cur.last_send_us - b.prev.last_send_us)) / 1000.0
        dt_ms = (b.cur.last_send_us - b.prev.last_send_us) / 1000.0
        bwe_trendline(b, delta_ms, b.cur.last_arrival_us, dt_ms, now_us)
    b.prev = b.cur
    b.cur.first_send_us = b.cur.last_send_us = s.send_us
    b.cur.last_arrival_us = arrival_us
    b.cur.n = 1


cdef void bwe_control(Bwe *b, int64_t now_us) noexcept nogil:
    """After a feedback: AIMD on the detector's state and the loss since the last check."""
    cdef int64_t total = b.fb_lost + b.fb_received
    if total >= 20:
        b.loss = <double>b.fb_lost / total
        b.fb_lost = b.fb_received = 0
        if b.loss > 0.1:
            bwe_decrease(b, <int64_t>(b.estimate * (1.0 - 0.5 * b.loss)), now_us)
            return
    if b.state == BWE_OVERUSE:
        b.overuses += 1
        bwe_decrease(b, b.acked_bps * 85 // 100 if b.acked_bps > 0 else b.estimate * 85 // 100, now_us)
        b.state = BWE_NORMAL        # one decrease per detection; the detector says again if it persists
    elif b.state == BWE_NORMAL:
        bwe_increase(b, now_us)
    else:
        b.last_update_us = now_us   # under-use: the queues drain, hold


cdef int bwe_feedback(Bwe *b, const uint8_t *fci, int n, int64_t now_us) noexcept nogil:
    """A transport-cc feedback's FCI (after the two SSRCs): record arrivals, update the estimate.
    Returns 0, or -1 for a malformed one (counted, nothing recorded)."""
    cdef int count, i, k, pos, sym, rl, bits, nsym = 0
    cdef uint16_t chunk
    cdef int64_t base, seq, t, arrival
    cdef int16_t d
    cdef uint8_t syms[BWE_FEEDBACK_MAX]
    cdef BweSent *s
    if b.hist == NULL:
        return 0
    if n < 8:
        b.feedback_bad += 1
        return -1
    count = rd16(fci + 2)
    if count == 0 or count > BWE_FEEDBACK_MAX:
        b.feedback_bad += 1
        return -1
    # reference time: signed 24 bits, multiples of 64 ms
    t = <int64_t>rd24(fci + 4)
    if t & 0x800000:
        t -= 0x1000000
    t *= 64000
    pos = 8
    while nsym < count:
        if pos + 2 > n:
            b.feedback_bad += 1
            return -1
        chunk = rd16(fci + pos)
        pos += 2
        if chunk & 0x8000 == 0:
            sym = (chunk >> 13) & 3
            rl = chunk & 0x1fff
            k = 0
            while k < rl and nsym < count:
                syms[nsym] = <uint8_t>sym
                nsym += 1
                k += 1
        elif chunk & 0x4000 == 0:
            for k in range(14):
                if nsym < count:
                    syms[nsym] = <uint8_t>((chunk >> (13 - k)) & 1)
                    nsym += 1
        else:
            for k in range(7):
                if nsym < count:
                    syms[nsym] = <uint8_t>((chunk >> (12 - 2 * k)) & 3)
                    nsym += 1
    # check the deltas fit before recording anything
    k = pos
    for i in range(count):
        if syms[i] == 1:
            k += 1
        elif syms[i] == 2:
            k += 2
        elif syms[i] == 3:
            b.feedback_bad += 1
            return -1
    if k > n:
        b.feedback_bad += 1
        return -1
    b.feedback += 1
    base = ext_seq16(b.next_seq - 1, rd16(fci))
    arrival = t
    for i in range(count):
        seq = base + i
        if syms[i] == 0:
            s = &b.hist[seq & (BWE_HIST - 1)]
            if seq >= 0 and s.seq == seq and not s.acked:
                b.fb_lost += 1
            continue
        if syms[i] == 1:
            arrival += <int64_t>fci[pos] * 250
            pos += 1
        else:
            d = <int16_t>rd16(fci + pos)
            arrival += <int64_t>d * 250
            pos += 2
        s = &b.hist[seq & (BWE_HIST - 1)]
        if seq < 0 or s.seq != seq or s.acked or seq >= b.next_seq:
            continue                # not ours, too old, or reported before
        s.acked = 1
        b.fb_received += 1
        bwe_arrival(b, s, arrival, now_us)
    bwe_control(b, now_us)
    return 0


cdef void bwe_remb(Bwe *b, uint64_t bitrate, int64_t unlisted_bps, int64_t now_us) noexcept nogil:
    """A receiver's REMB. Only for transports without transport-cc feedback (that one is ours and better):
    a REMB that falls is the receiver's over-use; the estimate follows it down, to the REMB plus what the
    transport sends on SSRCs the REMB does not name (aiortc's covers its video stream only: the estimate
    is for all of the transport, its audio too)."""
    cdef uint64_t before = b.remb_last
    b.remb_last = bitrate
    b.remb_count += 1
    if b.feedback:
        return
    if b.probe_target:
        b.probe_rembs += 1
    if before and bitrate * 100 < before * 95:
        bwe_decrease(b, <int64_t>bitrate + unlisted_bps, now_us)


cdef void bwe_report_loss(Bwe *b, int fraction_lost, int64_t now_us) noexcept nogil:
    """A receiver report's fraction lost (of 256), for transports without transport-cc feedback. During a
    probe (its padding and its settling time) any real loss spoils it: a REMB receiver's own detector may
    not see the queue the padding filled, but the tail it dropped shows here."""
    if b.feedback:
        return
    if b.probe_target and fraction_lost > BWE_PROBE_LOSS:
        b.probe_spoiled = 1
    if fraction_lost <= 25:
        return
    bwe_decrease(b, <int64_t>(b.estimate * (1.0 - 0.5 * fraction_lost / 256.0)), now_us)


cdef void bwe_probe_start(Bwe *b, int64_t target, int64_t duration_us, int64_t now_us,
                          uint64_t bytes_out) noexcept nogil:
    if target > BWE_MAX_BPS:
        target = BWE_MAX_BPS
    b.probe_target = target
    b.probe_start_us = now_us
    b.probe_end_us = now_us + duration_us
    b.probe_bytes_base = bytes_out
    b.probe_spoiled = 0
    b.probe_rembs = 0
    b.probe_acked_bytes = 0


cdef int bwe_probe_due(Bwe *b, int64_t now_us, uint64_t bytes_out) noexcept nogil:
    """Padding bytes to send now for the running probe (0: none), and the verdict once it settled: the
    estimate rises to what got through (transport-cc) or to the target (REMB that did not fall)."""
    cdef int64_t due, got, dur
    if b.probe_target == 0:
        return 0
    if now_us < b.probe_end_us:
        if b.probe_spoiled:
            b.probe_end_us = now_us      # stop padding the moment delay grows or packets are lost
            return 0
        due = b.probe_target * (now_us - b.probe_start_us) // 8000000 - <int64_t>(bytes_out - b.probe_bytes_base)
        return <int>due if due > 0 else 0
    if now_us < b.probe_end_us + (BWE_PROBE_SETTLE_US if b.feedback else BWE_REMB_SETTLE_US):
        return 0
    dur = b.probe_end_us - b.probe_start_us
    got = 0
    if not b.probe_spoiled and dur > 0:
        if b.feedback:
            got = b.probe_acked_bytes * 8 * 1000000 // dur
            if got > b.probe_target:
                got = b.probe_target
            if got < b.probe_target * 8 // 10:
                got = 0             # the link did not carry it: no evidence to step up on
        elif b.probe_rembs:
            got = b.probe_target
    if got > b.estimate:
        b.estimate = got
        b.last_update_us = now_us
        b.probes_ok += 1
    elif not b.feedback and not b.probe_rembs and not b.probe_spoiled:
        b.probes_unanswered += 1    # no feedback at all (a REMB receiver still starting): no verdict
    else:
        b.probes_failed += 1
    b.probe_target = 0
    return 0


cdef dict bwe_stats(const Bwe *b):
    return {"estimate_bps": b.estimate, "acked_bps": b.acked_bps, "limited": bool(b.limited),
            "state": ("normal", "overuse", "underuse")[b.state], "feedback": b.feedback,
            "feedback_bad": b.feedback_bad, "loss": b.loss, "remb_bps": b.remb_last, "rembs": b.remb_count,
            "overuses": b.overuses, "decreases": b.decreases, "probing": b.probe_target != 0,
            "probe_target_bps": b.probe_target, "probes_ok": b.probes_ok, "probes_failed": b.probes_failed,
            "probes_unanswered": b.probes_unanswered,
            "padding_packets": b.padding_packets, "padding_bytes": b.padding_bytes,
            "transport_cc": b.hist != NULL}
