# UDP in and out: one socket per worker, recvmmsg a batch at a time and demux by the first byte
# (RFC 7983), sendmmsg with UDP GSO (UDP_SEGMENT: several same-size datagrams to one destination per
# message) from a per-thread SendCtx, so that fan-out helper threads (NativeWorker(fanout_threads=N))
# send with the same code.

cdef enum:
    RECV_BATCH = 64
    SEND_BATCH = 256           # slots per sendmmsg; small enough that the buffers stay in L2
    GSO_MAX_SEGS = 64          # UDP_MAX_SEGMENTS of Linux 4.18-6.x
    GSO_MAX_BYTES = 60000      # one GSO message stays below the 64 KiB UDP length
    CMSG_SLOT = 32             # >= CMSG_SPACE(sizeof(uint16_t)), keeps each cmsghdr aligned


cdef struct SendCtx:
    # one thread's outgoing batch: slots (sbuf/siov), messages (smsg; a GSO message spans several slots)
    int fd
    int *gso                   # the worker's flag: 1 while UDP GSO is used, 0 if off or refused
    int nsend                  # slots used
    int nmsg                   # messages queued
    int run_first              # the open run (ctx_run_start): its first slot and its destination
    sockaddr_in *run_dst
    int64_t run_us             # when the open run started: the send time of its copies (bandwidth estimation)
    uint8_t *sbuf
    uint8_t *scmsg             # one UDP_SEGMENT cmsg per message
    iovec *siov
    mmsghdr *smsg
    uint64_t packets_out, bytes_out, send_calls, send_failed
    uint64_t gso_messages, gso_segments, gso_fallbacks
    PtrList paced              # CTransport* of this thread's shard whose pacer holds copies (pacer.pxi)
    uint64_t retransmits, rtx_out, paced_copies   # resent copies (rtx_out: in RTX form), copies a pacer held


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
        plist_free(&x.paced)
        free(x.sbuf)
        free(x.scmsg)
        free(x.siov)
        free(x.smsg)
        free(x)


cdef inline void ctx_run_start(SendCtx *x, sockaddr_in *dst) noexcept nogil:
    """Open a run: the next slots are copies to dst, made into (GSO) messages by ctx_run_end."""
    x.run_first = x.nsend
    x.run_dst = dst
    x.run_us = now_ns() // 1000


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


cdef inline uint64_t addr_key(const sockaddr_in *a) noexcept nogil:
    return (<uint64_t>a.sin_addr.s_addr << 16) | a.sin_port


cdef int _sockaddr(str host, int port, sockaddr_in *out) except -1:
    memset(out, 0, sizeof(sockaddr_in))
    out.sin_family = AF_INET
    out.sin_port = htons(port)
    if inet_pton(AF_INET, host.encode(), &out.sin_addr) != 1:
        raise ValueError("not an IPv4 address: " + host)
    return 0


cdef int _set_bufs(int fd, int size) noexcept nogil:
    # the *FORCE variants pass net.core.rmem_max when we may (CAP_NET_ADMIN); else the capped request stays
    if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(int)) != 0:
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(int))
    if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(int)) != 0:
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(int))
    return 0


# ---- the worker's own outgoing batch (shard 0: RTCP, retransmissions, control sends) ----

cdef inline void core_queue(Core *w, int n, sockaddr_in *dst) noexcept nogil:
    ctx_queue(w.tx, n, dst)


cdef inline void core_flush(Core *w) noexcept nogil:
    ctx_flush(w.tx)


cdef inline uint8_t *core_slot(Core *w) noexcept nogil:
    return ctx_slot(w.tx)


cdef int udp_batch(Core *w) noexcept nogil:
    """One receive batch, start to sent; 0 when there is nothing to do (the caller holds mu)."""
    cdef int n, i
    cdef uint8_t *buf
    cdef int length
    cdef uint8_t first
    cdef CTransport *t
    cdef int64_t t0
    if not w.serving and (w.ncontrol + RECV_BATCH > CONTROL_QUEUE or w.nevents + RECV_BATCH > EVENT_QUEUE):
        return 0             # let drain()'s caller empty the queues first (serving: media goes on, counted drops)
    for i in range(RECV_BATCH):
        w.rmsg[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
    n = recvmmsg(w.fd, w.rmsg, RECV_BATCH, MSG_DONTWAIT, NULL)
    if n <= 0:
        return 0
    t0 = now_ns()
    w.batches += 1
    for i in range(n):
        buf = w.rbuf + i * SLOT
        length = w.rmsg[i].msg_len
        w.c.packets_in += 1
        w.c.bytes_in += length
        if length < 1 or length >= SLOT:
            w.drops[DROP_TRUNCATED] += 1
            continue
        first = buf[0]
        if first <= 3 or (20 <= first <= 63):
            # RFC 7983 §7: STUN and DTLS are Python's business, but for a connected transport's consent
            if first <= 3:
                t = <CTransport *>map_get(&w.by_addr, addr_key(&w.raddr[i]))
                if t != NULL and stun_answer(w, t, buf, length, &w.raddr[i], t0):
                    continue
            if w.ncontrol == CONTROL_QUEUE:
                w.drops[DROP_CONTROL_QUEUE_FULL] += 1
                continue
            memcpy(w.cbuf + w.ncontrol * SLOT, buf, length)
            w.clen[w.ncontrol] = length
            w.caddr[w.ncontrol] = w.raddr[i]
            w.ncontrol += 1
        elif 128 <= first <= 191:
            t = <CTransport *>map_get(&w.by_addr, addr_key(&w.raddr[i]))
            if t == NULL:
                w.drops[DROP_UNKNOWN_SOURCE] += 1
                continue
            t.c.packets_in += 1
            t.c.bytes_in += length
            if rtcp_is_rtcp(buf, length):
                fanout_pending(w, t0)      # feedback acts on what came before it
                rtcp_receive(w, t, buf, length, t0)
            elif not ingest_rtp(w, t, buf, length, t0):
                w.lat_pending += 1         # refused: done with it
        else:
            w.drops[DROP_NOT_MEDIA] += 1
    fanout_pending(w, t0)
    feedback_due(w, now_ns(), 0)
    flush_recorded(w, t0)
    return n


cdef void udp_serve(Core *w, int notify_fd, int stop_fd, int timer_ms) noexcept nogil:
    """The media thread's loop (NativeWorker.serve): wait for datagrams or the next timer, drain, run
    the timers when due, and tell Python through notify_fd (an eventfd) when STUN/DTLS datagrams or events
    were queued for it, until stop_fd is readable. No Python at all per wakeup: the asyncio loop takes
    the queues itself (take_queues) when the eventfd wakes it."""
    cdef pollfd pfd[2]
    cdef int64_t now = now_ns()
    cdef int64_t next_timer = now + <int64_t>timer_ms * 1000000
    cdef int timeout, r, queued
    cdef uint64_t one = 1
    pfd[0].fd = w.fd
    pfd[0].events = POLLIN
    pfd[1].fd = stop_fd
    pfd[1].events = POLLIN
    while True:
        timeout = <int>((next_timer - now + 999999) // 1000000) if next_timer > now else 0
        if timeout > PACE_TICK_MS and pace_waiting(w):
            timeout = PACE_TICK_MS
        r = poll(pfd, 2, timeout)
        if r < 0 and errno != EINTR:
            break
        if r > 0 and pfd[1].revents:
            break
        if r > 0 and pfd[0].revents:
            udp_drain(w, 64)
        now = now_ns()
        if r == 0 or now >= next_timer:
            pthread_mutex_lock(&w.mu)
            feedback_due(w, now, 0)
            core_flush(w)
            pthread_mutex_unlock(&w.mu)
            if now >= next_timer:
                next_timer = now + <int64_t>timer_ms * 1000000
        pthread_mutex_lock(&w.mu)
        queued = w.ncontrol + w.nevents
        if queued > w.handed:       # something new since Python last looked: one wakeup for all of it
            w.handed = queued
            pthread_mutex_unlock(&w.mu)
            write(notify_fd, &one, sizeof(one))
        else:
            pthread_mutex_unlock(&w.mu)


cdef int udp_drain(Core *w, int max_batches) noexcept nogil:
    cdef int n, b, total = 0
    for b in range(max_batches):
        pthread_mutex_lock(&w.mu)      # control calls from other threads wait between batches
        n = udp_batch(w)
        pthread_mutex_unlock(&w.mu)
        if n <= 0:
            break
        total += n
    return total
