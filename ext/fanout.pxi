# The fan-out and send path: a receive batch's RTP packets, grouped by producer, become per-destination
# runs of protected copies, sent as UDP GSO messages (UDP_SEGMENT: several same-size datagrams to one
# destination per message) with sendmmsg. Module-level nogil functions over a per-thread SendCtx, so that
# fan-out helper threads (NativeWorker(fanout_threads=N)) run the same code on their shard of transports.

cdef enum:
    RECV_BATCH = 64
    SEND_BATCH = 256           # slots per sendmmsg; small enough that the buffers stay in L2
    GSO_MAX_SEGS = 64          # UDP_MAX_SEGMENTS of Linux 4.18-6.x
    GSO_MAX_BYTES = 60000      # one GSO message stays below the 64 KiB UDP length
    CMSG_SLOT = 32             # >= CMSG_SPACE(sizeof(uint16_t)), keeps each cmsghdr aligned


cdef struct Pending:
    # an RTP packet of the current receive batch whose producer side is done, waiting for fan-out
    CProducer *p
    const uint8_t *buf          # in rbuf, valid until the next recvmmsg
    int length
    int key
    int tid
    int in_order                # it was the producer's newest packet when it arrived
    int empty                   # padding only, no payload
    int64_t seq
    int64_t ts


cdef struct SendCtx:
    # one thread's outgoing batch: slots (sbuf/siov), messages (smsg; a GSO message spans several slots)
    int fd
    int *gso                   # the worker's flag: 1 while UDP GSO is used, 0 if off or refused
    int nsend                  # slots used
    int nmsg                   # messages queued
    int run_first              # the open run (ctx_run_start): its first slot and its destination
    sockaddr_in *run_dst
    uint8_t *sbuf
    uint8_t *scmsg             # one UDP_SEGMENT cmsg per message
    iovec *siov
    mmsghdr *smsg
    uint64_t packets_out, bytes_out, send_calls, send_failed
    uint64_t gso_messages, gso_segments, gso_fallbacks


cdef SendCtx *ctx_new(int fd, int *gso) noexcept nogil:
    cdef SendCtx *x = <SendCtx *>calloc(1, sizeof(SendCtx))
    cdef int i
    if x == NULL:
        return NULL
    x.fd = fd
    x.gso = gso
    x.sbuf = <uint8_t *>malloc(SEND_BATCH * SLOT)
    x.scmsg = <uint8_t *>calloc(SEND_BATCH, CMSG_SLOT)
    x.siov = <iovec *>calloc(SEND_BATCH, sizeof(iovec))
    x.smsg = <mmsghdr *>calloc(SEND_BATCH, sizeof(mmsghdr))
    if x.sbuf == NULL or x.scmsg == NULL or x.siov == NULL or x.smsg == NULL:
        ctx_free(x)
        return NULL
    for i in range(SEND_BATCH):
        x.siov[i].iov_base = x.sbuf + i * SLOT
        x.smsg[i].msg_hdr.msg_iov = &x.siov[i]
        x.smsg[i].msg_hdr.msg_iovlen = 1
        x.smsg[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
    return x


cdef void ctx_free(SendCtx *x) noexcept nogil:
    if x != NULL:
        free(x.sbuf)
        free(x.scmsg)
        free(x.siov)
        free(x.smsg)
        free(x)


cdef void ctx_zero(SendCtx *x) noexcept nogil:
    x.packets_out = x.bytes_out = x.send_calls = x.send_failed = 0
    x.gso_messages = x.gso_segments = x.gso_fallbacks = 0


cdef inline void ctx_run_start(SendCtx *x, sockaddr_in *dst) noexcept nogil:
    """Open a run: the next slots are copies to dst, made into (GSO) messages by ctx_run_end."""
    x.run_first = x.nsend
    x.run_dst = dst


cdef inline void ctx_run_end(SendCtx *x) noexcept nogil:
    if x.nsend > x.run_first:
        ctx_emit(x, x.run_first, x.nsend, x.run_dst)
    x.run_first = x.nsend


cdef inline void ctx_run_room(SendCtx *x) noexcept nogil:
    """Room for one more slot of the open run: a full batch ends the run so far and goes out, then
    the run continues in the empty batch. Whatever the consumer layout, no slot past SEND_BATCH."""
    if x.nsend >= SEND_BATCH:
        ctx_run_end(x)
        ctx_flush(x)


cdef inline uint8_t *ctx_slot(SendCtx *x) noexcept nogil:
    if x.nsend == SEND_BATCH:
        ctx_flush(x)
    return x.sbuf + x.nsend * SLOT


cdef inline void ctx_queue(SendCtx *x, int n, sockaddr_in *dst) noexcept nogil:
    """One datagram in the current slot (from ctx_slot) as a message of its own."""
    cdef msghdr *m = &x.smsg[x.nmsg].msg_hdr
    x.siov[x.nsend].iov_len = n
    m.msg_iov = &x.siov[x.nsend]
    m.msg_iovlen = 1
    m.msg_name = dst
    m.msg_control = NULL
    m.msg_controllen = 0
    x.nsend += 1
    x.nmsg += 1
    x.packets_out += 1
    x.bytes_out += n


cdef void ctx_emit(SendCtx *x, int first, int end, sockaddr_in *dst) noexcept nogil:
    """Turn slots first..end-1 (one destination, in order) into messages: runs of equal size whose
    last one may be shorter go as one UDP GSO message (UDP_SEGMENT = the run's size), the rest
    one datagram per message."""
    cdef int s = first, e, sz, l, total
    cdef msghdr *m
    cdef cmsghdr *cm
    while s < end:
        sz = <int>x.siov[s].iov_len
        e = s + 1
        if x.gso[0]:
            total = sz
            while e < end and e - s < GSO_MAX_SEGS:
                l = <int>x.siov[e].iov_len
                if l > sz or total + l > GSO_MAX_BYTES:
                    break
                total += l
                e += 1
                if l < sz:
                    break
        m = &x.smsg[x.nmsg].msg_hdr
        m.msg_iov = &x.siov[s]
        m.msg_iovlen = e - s
        m.msg_name = dst
        if e - s > 1:
            cm = <cmsghdr *>(x.scmsg + x.nmsg * CMSG_SLOT)
            cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            cm.cmsg_level = SOL_UDP
            cm.cmsg_type = UDP_SEGMENT
            (<uint16_t *>CMSG_DATA(cm))[0] = <uint16_t>sz
            m.msg_control = cm
            m.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
            x.gso_messages += 1
            x.gso_segments += e - s
        else:
            m.msg_control = NULL
            m.msg_controllen = 0
        x.nmsg += 1
        s = e


cdef void ctx_send_split(SendCtx *x, int k) noexcept nogil:
    """Send GSO message k as one datagram per segment (GSO refused or switched off)."""
    cdef mmsghdr one[GSO_MAX_SEGS]
    cdef msghdr *m = &x.smsg[k].msg_hdr
    cdef int n = <int>m.msg_iovlen, i, off = 0, r
    for i in range(n):
        memset(&one[i], 0, sizeof(mmsghdr))
        one[i].msg_hdr.msg_iov = &m.msg_iov[i]
        one[i].msg_hdr.msg_iovlen = 1
        one[i].msg_hdr.msg_name = m.msg_name
        one[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
    while off < n:
        r = sendmmsg(x.fd, &one[off], n - off, 0)
        x.send_calls += 1
        if r <= 0:
            if r < 0 and errno == EINTR:
                continue
            x.send_failed += 1
            off += 1
            continue
        off += r


cdef void ctx_flush(SendCtx *x) noexcept nogil:
    cdef int off = 0, end, r, segs
    while off < x.nmsg:
        segs = <int>x.smsg[off].msg_hdr.msg_iovlen
        if segs > 1 and not x.gso[0]:
            ctx_send_split(x, off)
            off += 1
            continue
        end = x.nmsg
        if not x.gso[0]:
            end = off + 1
            while end < x.nmsg and x.smsg[end].msg_hdr.msg_iovlen == 1:
                end += 1
        r = sendmmsg(x.fd, &x.smsg[off], end - off, 0)
        x.send_calls += 1
        if r <= 0:
            if r < 0 and errno == EINTR:
                continue
            if r < 0 and segs > 1 and (errno == EIO or errno == EINVAL):
                # the kernel or the route refuses UDP GSO: plain datagrams from now on
                x.gso[0] = 0
                x.gso_fallbacks += 1
                continue
            # a failed datagram (e.g. ICMP-refused peer) must not stop the rest of the batch
            x.send_failed += segs
            off += 1
            continue
        off += r
    x.nsend = 0
    x.nmsg = 0
    x.run_first = 0


cdef inline void consumer_gap(CConsumer *c, int64_t in_seq) noexcept nogil:
    """Hold the output numbers of the input seqs missing before in_seq (at most the last GAP_RING):
    if one arrives late it gets exactly that number, nothing else ever does."""
    cdef int64_t k = c.last_in_seq + 1
    cdef GapEntry *g
    if in_seq - k > GAP_RING:
        k = in_seq - GAP_RING
    while k < in_seq:
        g = &c.gaps[k & (GAP_RING - 1)]
        g.in_seq = k
        g.out_seq = k + c.seq_offset
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
        g = &c.gaps[in_seq & (GAP_RING - 1)]
        if g.in_seq == in_seq:
            g.in_seq = -1           # a late packet not sent: its held number stays unused


cdef inline int consumer_number(CConsumer *c, int64_t in_seq, int64_t in_ts, int64_t now,
                                int64_t *out_seq, int64_t *out_ts) noexcept nogil:
    """The output seq/ts of a packet about to be sent; 0 (counted as late) if it has none: an output
    seq is used for one packet only (SRTP: same SSRC + index = same nonce), numbers only grow except
    for the ones held for late packets (consumer_gap)."""
    cdef int64_t elapsed, o
    cdef GapEntry *g
    if not c.have_out or c.resync:
        if not c.have_out:
            c.seq_offset = 0
            c.ts_offset = 0
        else:
            # continue right after the last number used, advancing the clock by the real gap
            elapsed = (now - c.last_out_ns) * c.clock_rate // 1000000000
            c.seq_offset = c.last_out_seq + 1 - in_seq
            c.ts_offset = c.last_out_ts + (elapsed if elapsed > 0 else 1) - in_ts
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
    g = &c.gaps[in_seq & (GAP_RING - 1)]
    if g.in_seq != in_seq or g.out_seq < c.rtx_floor:
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
    c.rtx_floor = c.last_out_seq + 1


cdef int protect_copy(SendCtx *x, CConsumer *c, const uint8_t *buf, int length, int64_t out_seq,
                      int64_t out_ts, int64_t in_seq, int is_rtx) noexcept nogil:
    """Rewrite + protect one copy into the next slot of the open run (ctx_run_start; ctx_run_end turns
    the run into messages). Returns 1 if a slot was used."""
    cdef uint8_t *out
    cdef int n
    cdef SentEntry *e
    ctx_run_room(x)
    out = x.sbuf + x.nsend * SLOT
    memcpy(out, buf, length)
    rtp_set_header(out, c.payload_type, <uint16_t>out_seq, <uint32_t>out_ts, c.ssrc)
    n = length
    if c.transport.tx != NULL:
        n = srtp_protect(c.transport.tx, out, length, SLOT)
        if n < 0:
            c.drops[drop_reason(n)] += 1
            return 0
    x.siov[x.nsend].iov_len = n
    x.nsend += 1
    x.packets_out += 1
    x.bytes_out += n
    c.c.packets_out += 1
    c.c.bytes_out += n
    c.transport.c.packets_out += 1
    c.transport.c.bytes_out += n
    if is_rtx:
        c.retransmits += 1
    else:
        # what went out under out_seq, for NACKs (only this packet is ever sent again under it)
        e = &c.sent[out_seq & (SENT_RING - 1)]
        e.out_seq = out_seq
        e.in_seq = in_seq
        e.rtx_ns = 0
    return 1


cdef inline void send_fresh(SendCtx *x, CConsumer *c, const uint8_t *buf, int length, int64_t in_seq,
                            int64_t in_ts, int64_t now) noexcept nogil:
    cdef int64_t out_seq, out_ts
    if not c.transport.bound:
        c.drops[DROP_UNKNOWN_SOURCE] += 1
        return
    if consumer_number(c, in_seq, in_ts, now, &out_seq, &out_ts):
        protect_copy(x, c, buf, length, out_seq, out_ts, in_seq, 0)


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


cdef void fan_consumer(SendCtx *x, Fan *f, CConsumer *c, int g) noexcept nogil:
    """Consumer c's copies of group g's packets into the next slots of the open run."""
    cdef int k
    cdef Pending *e
    c.fan_mark = f.serial
    for k in range(f.goff[g], f.goff[g] + f.gcnt[g]):
        e = &f.pend[f.gidx[k]]
        # decide first, then apply (the simulcast layer selector plugs in here)
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
            if not e.key:
                consumer_drop(c, DROP_LAYER, e.seq)
                continue
            c.wait_keyframe = 0
        send_fresh(x, c, e.buf, e.length, e.seq, e.ts, f.t0)


cdef void fan_group(SendCtx *x, Fan *f, int xg, int shard) noexcept nogil:
    """Fan out the xg-th group (in size order) to its consumers on transports of this shard (-1: all).
    Per destination, all its copies of the batch's packets of this and later groups (a video frame's
    packets, then an audio packet) go into consecutive slots and ctx_emit makes them GSO messages."""
    cdef int g = f.gorder[xg], i, y, h, j
    cdef CProducer *p = f.gprod[g]
    cdef CConsumer *c
    cdef CConsumer *c2
    cdef CTransport *t
    for i in range(p.nconsumers):
        c = p.consumers[i]
        t = c.transport
        if shard >= 0 and t.shard != shard:
            continue      # another thread's (its consumers' fields are that thread's to touch)
        if c.fan_mark == f.serial:
            continue      # sent with an earlier group's copies to its transport
        if x.nsend + f.npend > SEND_BATCH:
            ctx_flush(x)  # room for this consumer's copies in one batch (ctx_run_room if more)
        ctx_run_start(x, &t.addr)
        fan_consumer(x, f, c, g)
        if xg + 1 < f.ng and t.nconsumers > 1:
            for y in range(xg + 1, f.ng):
                h = f.gorder[y]
                for j in range(t.nconsumers):
                    c2 = t.consumers[j]
                    if c2.producer == f.gprod[h] and c2.fan_mark != f.serial:
                        fan_consumer(x, f, c2, h)
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
