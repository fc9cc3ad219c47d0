# The fan-out: a receive batch's RTP packets (Pending, queued by ingest.pxi), grouped by producer, become
# per-destination runs of protected copies (consumer.pxi), so that a destination's copies of one batch go
# out as few UDP GSO messages (udp.pxi). Fan-out helper threads (NativeWorker(fanout_threads=N)) each
# serve the transports of their shard with the same functions.

cdef struct Pending:
    # an RTP packet of the current receive batch whose producer side is done, waiting for fan-out
    CProducer *p
    CEncoding *e                # the producer's encoding (SSRC) it came on
    const uint8_t *buf          # in rbuf, valid until the next recvmmsg
    int length
    int key
    int tid
    int in_order                # it was the producer's newest packet when it arrived
    int empty                   # padding only, no payload
    int64_t seq
    int64_t ts
    RtpLayout lay               # header layout + audio level, for each consumer's extension rewrite


cdef struct Fan:
    # one receive batch's RTP packets waiting for fan-out, grouped by producer; read-only while the
    # fan-out threads run
    Pending pend[RECV_BATCH]
    int npend
    int gidx[RECV_BATCH]       # pend[] indexes grouped by producer: group g is gidx[goff[g]:goff[g]+gcnt[g]]
    CProducer *gprod[RECV_BATCH]
    int goff[RECV_BATCH]
    int gcnt[RECV_BATCH]
    int gorder[RECV_BATCH]     # groups, larger packets first (GSO: only the last segment may be shorter)
    int ng
    uint64_t serial            # fan-out round, marks the consumers already served
    int64_t t0


cdef void fan_consumer(SendCtx *x, Fan *f, CConsumer *c, int g, int first) noexcept nogil:
    """Consumer c's copies of group g's packets (from its first-th on) into the next slots of the open run."""
    cdef int k
    cdef Pending *e
    c.fan_mark = f.serial
    for k in range(f.goff[g] + first, f.goff[g] + f.gcnt[g]):
        e = &f.pend[f.gidx[k]]
        # decide first, then apply (the simulcast layer selector plugs in here)
        if e.e.index != c.enc_cur:
            # another encoding of the producer: the consumer's only at a key frame of its target (as it
            # arrives, not a late copy), where it switches; otherwise not its stream (no drop: its
            # numbering is another encoding's)
            if e.e.index != c.enc_target or not e.key or not e.in_order or c.paused:
                continue
            consumer_switch_encoding(c, c.enc_target)
            c.wait_keyframe = 0
        if e.empty:
            # Padding-only packets are the publisher's bandwidth probes for its link to the node; passed
            # on they cost subscribers bytes, and an empty Opus payload stops aiortc's decoder for good.
            consumer_drop(c, DROP_PADDING_ONLY, e.seq)
            continue
        if c.paused:
            consumer_drop(c, DROP_PAUSED, e.seq)
            continue
        if e.tid > c.max_temporal_layer:
            consumer_drop(c, DROP_LAYER, e.seq)
            continue
        if c.wait_keyframe:
            # a late packet (repaired) does not start a picture: the rest of its frame went by while waiting
            if not e.key or not e.in_order:
                consumer_drop(c, DROP_LAYER, e.seq)
                continue
            c.wait_keyframe = 0
        send_fresh(x, c, e.e, e.buf, e.length, &e.lay, e.seq, e.ts, f.t0)


cdef void fan_switching(SendCtx *x, Fan *f, CConsumer *c, int g) noexcept nogil:
    """Consumer c waits to switch to group g's producer: at the first packet of a key frame of its start
    encoding (as it arrives, not a late copy) it switches and is fed from there. Until then its current
    producer feeds it: no gap. A paused consumer sends nothing either way: it switches at once and waits
    for a key frame as on any resume. Its list entry in the old producer goes in switch_settle."""
    cdef int k, first = -1
    cdef Pending *e
    for k in range(f.gcnt[g]):
        e = &f.pend[f.gidx[f.goff[g] + k]]
        if c.paused or (e.e.index == c.switch_enc and e.key and e.in_order and not e.empty):
            first = k
            break
    if first < 0:
        return
    if x.nsend + f.npend > SEND_BATCH:
        ctx_flush(x)
    ctx_run_start(x, &c.transport.addr)
    pace_release(x, c)          # the old producer's copies the pacer holds go first, from its history
    c.switch_left = c.producer
    c.producer = f.gprod[g]
    c.switch_to = NULL
    consumer_resync(c)
    c.enc_cur = c.enc_target = c.switch_enc
    c.wait_keyframe = c.paused
    fan_consumer(x, f, c, g, first)
    ctx_run_end(x)


cdef void switch_settle(Core *w) noexcept nogil:
    """After a fan-out (no thread walks a producer's list now): consumers that switched producer during it
    leave the old one's list."""
    cdef int i = 0
    cdef CConsumer *c
    while i < w.switching.n:
        c = <CConsumer *>w.switching.items[i]
        if c.switch_left != NULL:
            plist_del(&c.switch_left.consumers, c)
            c.switch_left = NULL
        if c.switch_to == NULL:
            plist_del(&w.switching, c)      # the last item moves here: look at i again
        else:
            i += 1


cdef void switch_cancel(Core *w, CConsumer *c) noexcept nogil:
    """c's pending producer switch, if any, is off (and an unsettled one settled): it stays with the
    producer feeding it. Only with no fan-out running (under the worker's lock)."""
    if c.switch_to != NULL:
        plist_del(&c.switch_to.consumers, c)
        c.switch_to = NULL
    if c.switch_left != NULL:
        plist_del(&c.switch_left.consumers, c)
        c.switch_left = NULL
    plist_del(&w.switching, c)


cdef void switch_orphans(Core *w, CProducer *p) noexcept nogil:
    """p closes: a consumer waiting to switch away from it switches now (its video waits for the new
    producer's key frame); one waiting to switch to it (closed with p by the caller) or switched away
    from it forgets it."""
    cdef int i = 0
    cdef CConsumer *c
    while i < w.switching.n:
        c = <CConsumer *>w.switching.items[i]
        if c.switch_left == p:
            plist_del(&p.consumers, c)
            c.switch_left = NULL
        if c.producer == p and c.switch_to != NULL:
            plist_del(&p.consumers, c)
            c.producer = c.switch_to
            c.switch_to = NULL
            pace_forget(w, c.transport, c, 0)
            consumer_resync(c)
            c.enc_cur = c.enc_target = c.switch_enc
            if c.producer.codec == CODEC_VP8 or c.producer.codec == CODEC_H264:
                c.wait_keyframe = 1
        if c.switch_to == NULL and c.switch_left == NULL:
            plist_del(&w.switching, c)
        else:
            i += 1


cdef void fan_group(SendCtx *x, Fan *f, int xg, int shard) noexcept nogil:
    """Fan out the xg-th group (in size order) to its consumers on transports of this shard (-1: all).
    Per destination, all its copies of the batch's packets of this and later groups (a video frame's
    packets, then an audio packet) go into consecutive slots and ctx_emit makes them GSO messages."""
    cdef int g = f.gorder[xg], i, y, h, j
    cdef CProducer *p = f.gprod[g]
    cdef CConsumer *c
    cdef CConsumer *c2
    cdef CTransport *t
    for i in range(p.consumers.n):
        c = <CConsumer *>p.consumers.items[i]
        t = c.transport
        if shard >= 0 and t.shard != shard:
            continue      # another thread's (its consumers' fields are that thread's to touch)
        if c.producer != p:
            # waiting to switch to p at its next key frame, or switched away from p and not yet settled
            if c.switch_to == p:
                fan_switching(x, f, c, g)
            continue
        if c.fan_mark == f.serial:
            continue      # sent with an earlier group's copies to its transport
        if x.nsend + f.npend > SEND_BATCH:
            ctx_flush(x)  # room for this consumer's copies in one batch (ctx_run_room if more)
        ctx_run_start(x, &t.addr)
        fan_consumer(x, f, c, g, 0)
        if xg + 1 < f.ng and t.consumers.n > 1:
            for y in range(xg + 1, f.ng):
                h = f.gorder[y]
                for j in range(t.consumers.n):
                    c2 = <CConsumer *>t.consumers.items[j]
                    if c2.producer == f.gprod[h] and c2.fan_mark != f.serial:
                        fan_consumer(x, f, c2, h, 0)
        ctx_run_end(x)


cdef struct Helper:
    # a fan-out thread: serves the transports of its shard for each batch the worker hands it
    pthread_t thread
    pthread_mutex_t mu
    pthread_cond_t cv_go
    pthread_cond_t cv_done
    uint64_t go
    uint64_t done
    int stop
    int shard
    int started
    Fan *fan
    SendCtx *ctx


cdef void *helper_main(void *arg) noexcept nogil:
    cdef Helper *hp = <Helper *>arg
    cdef uint64_t job
    cdef int xg
    while True:
        pthread_mutex_lock(&hp.mu)
        while hp.go == hp.done and not hp.stop:
            pthread_cond_wait(&hp.cv_go, &hp.mu)
        if hp.stop:
            pthread_mutex_unlock(&hp.mu)
            return NULL
        job = hp.go
        pthread_mutex_unlock(&hp.mu)
        for xg in range(hp.fan.ng):
            fan_group(hp.ctx, hp.fan, xg, hp.shard)
        ctx_flush(hp.ctx)
        pthread_mutex_lock(&hp.mu)
        hp.done = job
        pthread_cond_signal(&hp.cv_done)
        pthread_mutex_unlock(&hp.mu)


cdef void fanout_pending(Core *w, int64_t t0) noexcept nogil:
    """Fan out the queued RTP packets: group them by producer (larger packets first), then each
    fan-out thread serves the transports of its shard (fan_group)."""
    cdef Fan *f = w.fan
    cdef int j, g, x, ng = 0
    cdef CProducer *p
    cdef Helper *h
    if f.npend == 0:
        return
    for j in range(f.npend):
        p = f.pend[j].p
        for g in range(ng):
            if f.gprod[g] == p:
                break
        else:
            g = ng
            ng += 1
            f.gprod[g] = p
            f.gcnt[g] = 0
        f.gcnt[g] += 1
    x = 0
    for g in range(ng):
        f.goff[g] = x
        x += f.gcnt[g]
        f.gcnt[g] = 0
    for j in range(f.npend):
        for g in range(ng):
            if f.gprod[g] == f.pend[j].p:
                break
        f.gidx[f.goff[g] + f.gcnt[g]] = j
        f.gcnt[g] += 1
    for g in range(ng):       # insertion sort by first packet size, largest first
        x = g
        while x > 0 and f.pend[f.gidx[f.goff[f.gorder[x - 1]]]].length < f.pend[f.gidx[f.goff[g]]].length:
            f.gorder[x] = f.gorder[x - 1]
            x -= 1
        f.gorder[x] = g
    f.ng = ng
    f.t0 = t0
    f.serial += 1
    if w.nshards == 1:
        for x in range(ng):
            fan_group(w.tx, f, x, -1)
            w.lat_pending += f.gcnt[f.gorder[x]]
            if w.tx.nsend >= 128:
                # a large fan-out goes out now rather than waiting for the rest of the batch
                flush_recorded(w, t0)
    else:
        for j in range(w.nshards - 1):
            h = &w.helpers[j]
            pthread_mutex_lock(&h.mu)
            h.go += 1
            pthread_cond_signal(&h.cv_go)
            pthread_mutex_unlock(&h.mu)
        for x in range(ng):
            fan_group(w.tx, f, x, 0)
        ctx_flush(w.tx)
        for j in range(w.nshards - 1):
            h = &w.helpers[j]
            pthread_mutex_lock(&h.mu)
            while h.done != h.go:
                pthread_cond_wait(&h.cv_done, &h.mu)
            pthread_mutex_unlock(&h.mu)
        w.lat_pending += f.npend
        flush_recorded(w, t0)
    f.npend = 0
    if w.switching.n:
        switch_settle(w)


cdef void flush_recorded(Core *w, int64_t t0) noexcept nogil:
    """Flush, then count each RTP packet whose fan-out is complete at its receive-to-sent latency."""
    cdef int64_t bucket
    core_flush(w)
    if w.lat_pending:
        bucket = (now_ns() - t0) // LAT_BUCKET_NS
        if bucket >= LAT_BUCKETS:
            bucket = LAT_BUCKETS - 1
        w.lat_hist[bucket] += w.lat_pending
        w.lat_pending = 0
