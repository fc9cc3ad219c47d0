# Pacing towards one subscriber transport: what the core sends it follows its downlink estimate (bwe.pxi)
# instead of leaving in the bursts the publisher's frames arrive in. A key frame of the top layer is tens
# of packets within a millisecond; copied to a subscriber at once it lands in its bottleneck's queue as one
# burst, and a real link's queue drops the tail of it (then NACKs, retransmissions, a frozen picture).
#
# A token bucket per transport at PACE_FACTOR x the estimate, holding PACE_BURST_US of sending: video copies
# beyond it wait in the transport's queue, in order, and go out from feedback_due (after each receive batch
# and on the worker's timer, every PACE_TICK_MS while anything waits). Audio, retransmissions and RTCP are
# not held (small, and late audio is lost audio) but spend the tokens. A held copy is only a reference: it
# is numbered and recorded when queued, and rewritten and protected from the producer's history when it
# goes out, so that its transport-wide seq and abs-send-time are its real send time (the estimator reads
# the pacer's delay as queueing otherwise) and the queue costs 32 bytes a packet, not a packet buffer.
# Without valid feedback yet (no transport-cc feedback, no REMB) the estimate is a guess: no pacing; the
# allocation already keeps what is sent within the safe default.

cdef enum:
    PACE_FACTOR_PCT = 150         # the pacing rate, % of the estimate: above it (the estimate trails the link)
    PACE_BURST_US = 20000         # the bucket holds this much sending at the pacing rate
    PACE_BURST_MIN = 3000         # ... and never less than two full packets
    PACE_DRAIN_US = 500000        # a queue longer than this at the pacing rate goes out faster: it drains in this time
    PACE_QUEUE_MAX = 4096         # held copies per transport; beyond: dropped and counted (the subscriber NACKs them)
    PACE_TICK_MS = 2              # the worker's timer while copies wait


cdef struct PaceItem:
    CConsumer *c                  # its consumer (a consumer that closes or switches takes its items out)
    int64_t out_seq               # its SentEntry (consumer.pxi sent_record) says what it is
    int64_t queued_us
    int32_t length


cdef struct Pacer:
    int64_t tokens                # bytes that may go out now; negative: sent ahead (audio, retransmissions)
    int64_t last_us               # tokens are filled up to here
    int64_t rate                  # bytes/s of the last fill
    PaceItem *items               # a ring of cap entries, n of them from head
    int cap, head, n
    int64_t bytes                 # held
    int listed                    # in its SendCtx's paced list
    uint64_t held, sent, overflow, expired
    int64_t delay_max_us, delay_sum_us


cdef inline int pace_on(const CTransport *t) noexcept nogil:
    return t.bwe.feedback > 0 or t.bwe.remb_count > 0


cdef void pace_fill(Pacer *p, const CTransport *t, int64_t now_us) noexcept nogil:
    cdef int64_t rate = t.bwe.estimate * PACE_FACTOR_PCT // 800, burst, d
    if p.bytes * 1000000 // PACE_DRAIN_US > rate:
        rate = p.bytes * 1000000 // PACE_DRAIN_US
    p.rate = rate
    burst = rate * PACE_BURST_US // 1000000
    if burst < PACE_BURST_MIN:
        burst = PACE_BURST_MIN
    d = now_us - p.last_us
    if p.last_us == 0 or d > 1000000:
        p.tokens = burst
    elif d > 0:
        p.tokens += d * rate // 1000000
        if p.tokens > burst:
            p.tokens = burst
    if d > 0 or p.last_us == 0:
        p.last_us = now_us


cdef int pace_hold(SendCtx *x, CConsumer *c) noexcept nogil:
    """1 if the pacer holds this fresh video copy (pace_push queues it): the transport has an estimate from
    feedback, and copies wait already or the bucket is empty; 0: it goes out now."""
    cdef CTransport *t = c.transport
    cdef Pacer *p = t.pace
    if (c.producer.codec != CODEC_VP8 and c.producer.codec != CODEC_H264) or not pace_on(t):
        return 0
    if p == NULL:
        p = t.pace = <Pacer *>calloc(1, sizeof(Pacer))
        if p == NULL:
            return 0
    pace_fill(p, t, x.run_us)
    return p.n > 0 or p.tokens <= 0


cdef void pace_push(SendCtx *x, CConsumer *c, int64_t out_seq, int length) noexcept nogil:
    cdef Pacer *p = c.transport.pace
    cdef PaceItem *m
    cdef int cap, i
    if p.n == p.cap:
        cap = p.cap * 2 if p.cap else 64
        if p.n >= PACE_QUEUE_MAX or cap > PACE_QUEUE_MAX:
            p.overflow += 1
            c.drops[DROP_PACE_OVERFLOW] += 1
            return
        m = <PaceItem *>malloc(cap * sizeof(PaceItem))
        if m == NULL:
            p.overflow += 1
            c.drops[DROP_PACE_OVERFLOW] += 1
            return
        for i in range(p.n):
            m[i] = p.items[(p.head + i) % p.cap]
        free(p.items)
        p.items = m
        p.cap = cap
        p.head = 0
    m = &p.items[(p.head + p.n) % p.cap]
    m.c = c
    m.out_seq = out_seq
    m.queued_us = x.run_us
    m.length = length
    p.n += 1
    p.bytes += length
    p.held += 1
    x.paced_copies += 1
    if not p.listed and plist_add(&x.paced, c.transport) == 0:
        p.listed = 1


cdef void pace_send_item(SendCtx *x, PaceItem *m, int64_t now_us) noexcept nogil:
    """A held copy out, from the history of the encoding it was numbered from."""
    cdef CConsumer *c = m.c
    cdef SentEntry *e = &c.sent[m.out_seq & (c.sent_len - 1)]
    cdef CEncoding *enc
    cdef Pacer *p = c.transport.pace
    cdef int slot
    cdef int64_t delay
    if e.out_seq != m.out_seq or e.in_seq < 0 or e.enc >= c.producer.nenc:
        p.expired += 1
        c.drops[DROP_PACE_EXPIRED] += 1
        return
    enc = &c.producer.enc[e.enc]
    slot = <int>(((e.in_seq % HIST_SLOTS) + HIST_SLOTS) % HIST_SLOTS)
    if enc.hist_seq[slot] != e.in_seq:
        # waited longer than the history holds (PACE_DRAIN_US keeps this rare); the subscriber NACKs it
        p.expired += 1
        c.drops[DROP_PACE_EXPIRED] += 1
        return
    if copy_from_history(x, c, enc.hist + slot * HIST_SLOT, enc.hist_len[slot], m.out_seq, e.out_ts,
                         e.in_seq, e.enc, COPY_PACED):
        p.sent += 1
        delay = now_us - m.queued_us
        p.delay_sum_us += delay
        if delay > p.delay_max_us:
            p.delay_max_us = delay


cdef inline PaceItem *pace_pop(Pacer *p) noexcept nogil:
    cdef PaceItem *m = &p.items[p.head]
    p.head = (p.head + 1) % p.cap
    p.n -= 1
    p.bytes -= m.length
    return m


cdef void pace_drain(SendCtx *x, CTransport *t, int64_t now_us) noexcept nogil:
    """What t's bucket allows of its held copies, oldest first, as one run."""
    cdef Pacer *p = t.pace
    pace_fill(p, t, now_us)
    if not t.bound:
        while p.n:
            pace_pop(p)
        return
    ctx_run_start(x, &t.addr)
    while p.n and p.tokens > 0:
        pace_send_item(x, pace_pop(p), now_us)
    ctx_run_end(x)


cdef void pace_due(Core *w, int64_t now) noexcept nogil:
    """feedback_due's part: every held queue of every shard (the helpers are idle then), sent on the
    calling thread's context."""
    cdef int s, i
    cdef SendCtx *q
    cdef CTransport *t
    for s in range(w.nshards):
        q = w.tx if s == 0 else w.helpers[s - 1].ctx
        i = 0
        while i < q.paced.n:
            t = <CTransport *>q.paced.items[i]
            pace_drain(w.tx, t, now // 1000)
            if t.pace.n == 0:
                t.pace.listed = 0
                plist_del(&q.paced, t)        # the last item moves to i
            else:
                i += 1


cdef int pace_waiting(Core *w) noexcept nogil:
    """Copies wait in some pacer: the worker's timer should come back within PACE_TICK_MS."""
    cdef int s
    if w.tx.paced.n:
        return 1
    for s in range(w.nshards - 1):
        if w.helpers[s].ctx.paced.n:
            return 1
    return 0


cdef void pace_forget(Core *w, CTransport *t, CConsumer *c, int send_now) noexcept nogil:
    """c's held copies: sent now (send_now: before its producer changes under them, their history with
    it), or forgotten (it closes); c NULL: the transport closes, its pacer goes."""
    cdef Pacer *p = t.pace
    if p == NULL:
        return
    if c == NULL:
        if p.listed:
            plist_del(&(w.tx if t.shard == 0 else w.helpers[t.shard - 1].ctx).paced, t)
        free(p.items)
        free(p)
        t.pace = NULL
        return
    if send_now and t.bound:
        ctx_run_start(w.tx, &t.addr)
        pace_release(w.tx, c)
        ctx_run_end(w.tx)
    else:
        pace_remove(p, c, NULL)


cdef void pace_release(SendCtx *x, CConsumer *c) noexcept nogil:
    """c's held copies out now into x's open run to its transport (its producer is about to change
    under them, and their history with it), taken out of the queue. Not charged to the bucket: they were
    due already, and charged they would hold the new stream's key frame behind them."""
    cdef Pacer *p = c.transport.pace
    cdef int64_t tokens
    if p == NULL:
        return
    tokens = p.tokens
    pace_remove(p, c, x if c.transport.bound else NULL)
    p.tokens = tokens


cdef void pace_remove(Pacer *p, CConsumer *c, SendCtx *x) noexcept nogil:
    """Take c's copies out of the queue, sent into x's open run first unless x is NULL; the others keep
    their order (and no emptied entry is left to wait for tokens before what comes after it)."""
    cdef int i, k = 0
    cdef PaceItem *m
    cdef int64_t kept = 0
    for i in range(p.n):
        m = &p.items[(p.head + i) % p.cap]
        if m.c == c:
            if x != NULL:
                pace_send_item(x, m, x.run_us)
            continue
        if i != k:
            p.items[(p.head + k) % p.cap] = m[0]
        kept += m.length
        k += 1
    p.n = k
    p.bytes = kept


cdef dict pace_stats(const CTransport *t):
    cdef const Pacer *p = t.pace
    if p == NULL:
        return {"active": False, "held": 0, "sent": 0, "queued": 0, "queued_bytes": 0, "overflow": 0, "expired": 0,
                "delay_max_ms": 0.0, "delay_avg_ms": 0.0, "rate_bps": 0}
    return {"active": bool(pace_on(t)), "held": p.held, "sent": p.sent, "queued": p.n, "queued_bytes": p.bytes,
            "overflow": p.overflow, "expired": p.expired, "delay_max_ms": p.delay_max_us / 1000.0,
            "delay_avg_ms": p.delay_sum_us / 1000.0 / p.sent if p.sent else 0.0, "rate_bps": p.rate * 8}
