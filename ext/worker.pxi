# The worker: one UDP socket, recvmmsg -> demux (RFC 7983) -> SRTP -> producer -> consumers -> sendmmsg.
# A whole batch runs without the GIL and without a Python object per packet.

cdef enum:
    CONTROL_QUEUE = 256        # STUN/DTLS datagrams waiting for Python
    EVENT_QUEUE = 256
    LAT_BUCKET_NS = 10000      # latency histogram: 10 µs buckets up to 100 ms
    LAT_BUCKETS = 10001
    EV_UNKNOWN_SSRC = 1
    EV_KEYFRAME_REQUESTED = 2
    EV_PRODUCER_RESTART = 3

cdef struct Event:
    int kind
    uint64_t transport_id
    uint32_t ssrc
    uint32_t ssrc2
    char mid[32]
    char rid[32]
    char rrid[32]


cdef struct PtrList:
    # a worker-owned list of entity pointers the nogil loop visits (transports with transport-cc,
    # producers with missing seqs); order does not matter
    void **items
    int n
    int cap


cdef int plist_add(PtrList *l, void *x) noexcept nogil:
    cdef void **m
    if l.n == l.cap:
        m = <void **>realloc(l.items, sizeof(void *) * (l.cap * 2 + 8))
        if m == NULL:
            return -1
        l.items = m
        l.cap = l.cap * 2 + 8
    l.items[l.n] = x
    l.n += 1
    return 0


cdef void plist_del(PtrList *l, void *x) noexcept nogil:
    cdef int i
    for i in range(l.n):
        if l.items[i] == x:
            l.items[i] = l.items[l.n - 1]
            l.n -= 1
            return


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


cdef class NativeWorker:
    """Owns one UDP socket and the packet path. Python drives it with drain() once per readiness.

    Threads: drain() may run in one thread while control methods (create/close/bind/switch/
    request_keyframe/send...) are called from another. A recursive mutex serialises them: drain()
    holds it for each receive batch (so entities are never resized or freed mid-fan-out), every control
    method holds it for its whole run. It is taken with the GIL released (no lock-order deadlock) and is
    uncontended when one thread does everything (attach() on an asyncio loop)."""
    cdef int fd
    cdef pthread_mutex_t mu
    cdef int mu_ready
    cdef sockaddr_in send_addr  # destination of send()'s datagram
    cdef U64Map by_addr
    cdef U64Map producers
    cdef U64Map consumers
    cdef mmsghdr rmsg[RECV_BATCH]
    cdef iovec riov[RECV_BATCH]
    cdef sockaddr_in raddr[RECV_BATCH]
    cdef uint8_t *rbuf
    cdef SendCtx *tx           # the calling thread's outgoing batch (shard 0, RTCP, retransmissions)
    cdef int gso               # 1 while UDP GSO is used; 0 if off or refused by the kernel
    cdef Fan *fan
    cdef int nshards           # fan-out threads: the caller's + nshards - 1 helpers
    cdef Helper *helpers
    cdef uint64_t ntransports
    cdef uint8_t *cbuf
    cdef int clen[CONTROL_QUEUE]
    cdef sockaddr_in caddr[CONTROL_QUEUE]
    cdef int ncontrol
    cdef Event events[EVENT_QUEUE]
    cdef int nevents
    cdef Counters c
    cdef uint64_t drops[DROP_COUNT]
    cdef uint64_t batches
    cdef uint64_t *lat_hist
    cdef uint64_t lat_pending
    cdef uint64_t next_id
    cdef uint32_t rtcp_ssrc
    cdef PtrList tcc_transports     # CTransport* with a transport-cc ring
    cdef PtrList nack_producers     # CProducer* with missing seqs to NACK
    cdef dict _transports, _producers, _consumers
    cdef dict _extra_addrs      # transport id -> {addr key}: other ICE pairs it is accepted from
    cdef readonly object local_address

    def __cinit__(self, str host="127.0.0.1", int port=0, int buffer_bytes=8 * 1024 * 1024, bint gso=True,
                  int fanout_threads=1):
        cdef sockaddr_in a
        cdef socklen_t alen = sizeof(sockaddr_in)
        cdef int i, v = 0
        cdef socklen_t vlen = sizeof(int)
        cdef Helper *h
        cdef pthread_mutexattr_t ma
        self.fd = -1
        pthread_mutexattr_init(&ma)
        pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE)
        if pthread_mutex_init(&self.mu, &ma) != 0:
            pthread_mutexattr_destroy(&ma)
            raise MemoryError()
        pthread_mutexattr_destroy(&ma)
        self.mu_ready = 1
        self._transports, self._producers, self._consumers = {}, {}, {}
        self._extra_addrs = {}
        self.rbuf = <uint8_t *>malloc(RECV_BATCH * SLOT)
        self.cbuf = <uint8_t *>malloc(CONTROL_QUEUE * SLOT)
        self.fan = <Fan *>calloc(1, sizeof(Fan))
        self.lat_hist = <uint64_t *>calloc(LAT_BUCKETS, sizeof(uint64_t))
        if not (self.rbuf and self.cbuf and self.fan and self.lat_hist):
            raise MemoryError()
        if not 1 <= fanout_threads <= 16:
            raise ValueError("fanout_threads: 1 to 16")
        if map_init(&self.by_addr, 64) or map_init(&self.producers, 64) or map_init(&self.consumers, 64):
            raise MemoryError()
        for i in range(RECV_BATCH):
            self.riov[i].iov_base = self.rbuf + i * SLOT
            self.riov[i].iov_len = SLOT
            memset(&self.rmsg[i], 0, sizeof(mmsghdr))
            self.rmsg[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsg[i].msg_hdr.msg_iovlen = 1
            self.rmsg[i].msg_hdr.msg_name = &self.raddr[i]
        _sockaddr(host, port, &a)
        self.fd = socket(AF_INET, SOCK_DGRAM, 0)
        if self.fd < 0:
            raise OSError(errno, "socket() failed")
        # 8 MiB: the default 208 KiB loses ~1% of a full-rate burst (DESIGN.md, Measured)
        _set_bufs(self.fd, buffer_bytes)
        if bind(self.fd, <sockaddr *>&a, sizeof(sockaddr_in)) != 0:
            raise OSError(errno, "bind() failed")
        getsockname(self.fd, <sockaddr *>&a, &alen)
        # the kernel knows UDP_SEGMENT (>= 4.18) if it can report it; a refusal at send time also turns it off
        self.gso = 1 if gso and getsockopt(self.fd, SOL_UDP, UDP_SEGMENT, &v, &vlen) == 0 else 0
        self.tx = ctx_new(self.fd, &self.gso)
        if self.tx == NULL:
            raise MemoryError()
        self.helpers = <Helper *>calloc(fanout_threads, sizeof(Helper))
        if self.helpers == NULL:
            raise MemoryError()
        self.nshards = 1
        for i in range(fanout_threads - 1):
            # one more shard per helper thread; transports are spread over the shards
            h = &self.helpers[i]
            h.ctx = ctx_new(self.fd, &self.gso)
            if h.ctx == NULL:
                raise MemoryError()
            h.fan = self.fan
            h.shard = i + 1
            pthread_mutex_init(&h.mu, NULL)
            pthread_cond_init(&h.cv_go, NULL)
            pthread_cond_init(&h.cv_done, NULL)
            if pthread_create(&h.thread, NULL, helper_main, h) != 0:
                raise OSError(errno, "pthread_create failed")
            h.started = 1
            self.nshards += 1
        self.local_address = (host, ntohs(a.sin_port))
        self.next_id = 1
        self.rtcp_ssrc = 0x454e5801   # our own SSRC as an RTCP sender (PLI/FIR we originate)

    def __dealloc__(self):
        cdef int i
        cdef Helper *h
        if self.helpers != NULL:
            for i in range(self.nshards - 1):
                h = &self.helpers[i]
                if h.started:
                    pthread_mutex_lock(&h.mu)
                    h.stop = 1
                    pthread_cond_signal(&h.cv_go)
                    pthread_mutex_unlock(&h.mu)
                    pthread_join(h.thread, NULL)
                    pthread_mutex_destroy(&h.mu)
                    pthread_cond_destroy(&h.cv_go)
                    pthread_cond_destroy(&h.cv_done)
                ctx_free(h.ctx)
            free(self.helpers)
        if self.fd >= 0:
            close(self.fd)
        ctx_free(self.tx)
        free(self.fan)
        free(self.rbuf)
        free(self.cbuf)
        free(self.lat_hist)
        map_free(&self.by_addr)
        map_free(&self.producers)
        map_free(&self.consumers)
        free(self.tcc_transports.items)
        free(self.nack_producers.items)
        if self.mu_ready:
            pthread_mutex_destroy(&self.mu)

    def fileno(self):
        return self.fd

    cdef inline void _lock(self):
        with nogil:
            pthread_mutex_lock(&self.mu)

    cdef inline void _unlock(self):
        pthread_mutex_unlock(&self.mu)

    cdef int _check_transport(self, Transport t) except -1:
        if t is None or self._transports.get(t.t.id) is not t:
            raise ValueError("transport closed or not of this worker")
        return 0

    cdef int _check_producer(self, Producer p) except -1:
        if p is None or self._producers.get(p.p.id) is not p:
            raise ValueError("producer closed or not of this worker")
        return 0

    cdef int _check_consumer(self, Consumer c) except -1:
        if c is None or self._consumers.get(c.c.id) is not c:
            raise ValueError("consumer closed or not of this worker")
        return 0

    # ---------------- control actions (GIL held, Python objects fine) ----------------

    def create_transport(self, str profile="none", bytes rx_key=b"", bytes rx_salt=b"",
                         bytes tx_key=b"", bytes tx_salt=b"", dict ext_ids=None):
        """profile: AEAD_AES_128_GCM, AEAD_AES_256_GCM, AES_CM_128_HMAC_SHA1_80 or 'none' (plain RTP)."""
        cdef Transport t = Transport()
        if profile not in PROFILES:
            raise ValueError("unknown SRTP profile " + profile)
        t.profile = profile
        if profile != "none":
            t.rx = SrtpContext(profile, rx_key, rx_salt)
            t.tx = SrtpContext(profile, tx_key, tx_salt)
            t.t.rx = t.rx.ctx
            t.t.tx = t.tx.ctx
        t.t.ext = _ext_ids_from(ext_ids)
        if t.t.ext.transport_cc:
            t.t.tcc = <TccRing *>malloc(sizeof(TccRing))
            if t.t.tcc == NULL:
                raise MemoryError()
            tcc_init(t.t.tcc)
        self._lock()
        try:
            if t.t.tcc != NULL and plist_add(&self.tcc_transports, t.t) != 0:
                raise MemoryError()
            t.t.id = self.next_id
            self.next_id += 1
            t.t.shard = <int>(self.ntransports % self.nshards)
            self.ntransports += 1
            self._transports[t.t.id] = t
        finally:
            self._unlock()
        return t

    def bind_transport(self, Transport t, str host, int port):
        """Send this transport's packets to host:port (the ICE-selected pair) and accept datagrams from
        it. An address bound before stays accepted: RFC 8445 lets media arrive on any pair that passed
        a check, and a browser may switch pairs when it nominates."""
        cdef sockaddr_in a
        cdef uint64_t key, old
        _sockaddr(host, port, &a)
        key = addr_key(&a)
        self._lock()
        try:
            self._check_transport(t)
            if map_put(&self.by_addr, key, t.t) != 0:
                raise MemoryError()
            extras = self._extra_addrs.setdefault(t.t.id, set())
            if t.t.bound:
                old = addr_key(&t.t.addr)
                if old != key:
                    extras.add(old)
            extras.discard(key)
            t.t.addr = a
            t.t.bound = 1
        finally:
            self._unlock()

    def accept_from(self, Transport t, str host, int port):
        """Also accept datagrams from host:port (another ICE pair that passed a check) without sending
        there; the first address given to a transport becomes its send address."""
        cdef sockaddr_in a
        cdef uint64_t key
        _sockaddr(host, port, &a)
        key = addr_key(&a)
        self._lock()
        try:
            self._check_transport(t)
            if not t.t.bound:
                self.bind_transport(t, host, port)
                return
            if key == addr_key(&t.t.addr):
                return
            if map_put(&self.by_addr, key, t.t) != 0:
                raise MemoryError()
            self._extra_addrs.setdefault(t.t.id, set()).add(key)
        finally:
            self._unlock()

    def close_transport(self, Transport t):
        """Close a transport with its producers and consumers (a second call does nothing)."""
        cdef uint64_t key
        self._lock()
        try:
            if t is None or self._transports.get(t.t.id) is not t:
                return
            for c in [c for c in self._consumers.values() if (<Consumer>c).transport is t]:
                self.close_consumer(c)
            for p in [p for p in self._producers.values() if (<Producer>p).transport is t]:
                self.close_producer(p)
            plist_del(&self.tcc_transports, t.t)
            keys = self._extra_addrs.pop(t.t.id, set())
            if t.t.bound:
                keys.add(addr_key(&t.t.addr))
                t.t.bound = 0
            for k in keys:
                key = k
                # an address another transport has taken over since is left to that transport
                if map_get(&self.by_addr, key) == <void *>t.t:
                    map_del(&self.by_addr, key)
            self._transports.pop(t.t.id, None)
        finally:
            self._unlock()

    def create_producer(self, Transport transport, unsigned int ssrc, str codec="vp8"):
        cdef Producer p
        self._lock()
        try:
            self._check_transport(transport)
            if map_get(&self.producers, ssrc) != NULL:
                raise ValueError("SSRC %d already produced on this worker" % ssrc)
            p = Producer()
            p.transport = transport
            p.codec = codec.lower()
            p.p.codec = _CODECS.get(p.codec, CODEC_OTHER)
            p.p.ssrc = ssrc
            p.p.transport = transport.t
            if map_put(&self.producers, ssrc, p.p) != 0:
                raise MemoryError()
            p.p.id = self.next_id
            self.next_id += 1
            self._producers[p.p.id] = p
        finally:
            self._unlock()
        return p

    def close_producer(self, Producer p):
        """Close a producer and its consumers (a second call does nothing)."""
        self._lock()
        try:
            if p is None or self._producers.get(p.p.id) is not p:
                return
            for c in [c for c in self._consumers.values() if (<Consumer>c).producer is p]:
                self.close_consumer(c)
            map_del(&self.producers, p.p.ssrc)
            if p.p.nack_listed:
                plist_del(&self.nack_producers, p.p)
                p.p.nack_listed = 0
            p.p.nnack = 0
            if p.p.transport.rx != NULL:
                srtp_stream_del(p.p.transport.rx, p.p.ssrc)
            self._producers.pop(p.p.id, None)
        finally:
            self._unlock()

    def create_consumer(self, Transport transport, Producer producer, unsigned int ssrc, int payload_type,
                        int clock_rate=90000, bint wait_keyframe=False):
        """A consumer SSRC is never reused on an SRTP transport (its SRTP index would start again under
        the same key: nonce reuse), even after its consumer closed."""
        cdef Consumer c
        self._lock()
        try:
            self._check_transport(transport)
            self._check_producer(producer)
            if map_get(&self.consumers, ssrc) != NULL:
                raise ValueError("SSRC %d already consumed on this worker" % ssrc)
            if transport.tx is not None:
                if ssrc in transport.tx_ssrcs:
                    raise ValueError("SSRC %d was used on this transport before" % ssrc)
            c = Consumer()
            c.transport = transport
            c.producer = producer
            c.c.ssrc = ssrc
            c.c.payload_type = payload_type
            c.c.clock_rate = clock_rate
            c.c.transport = transport.t
            c.c.producer = producer.p
            c.c.wait_keyframe = wait_keyframe and producer.p.codec in (CODEC_VP8, CODEC_H264)
            if map_put(&self.consumers, ssrc, c.c) != 0:
                raise MemoryError()
            try:
                producer._attach(c.c)
                try:
                    transport._attach(c.c)
                except BaseException:
                    producer._detach(c.c)
                    raise
            except BaseException:
                map_del(&self.consumers, ssrc)
                raise
            if transport.tx is not None:
                transport.tx_ssrcs.add(ssrc)
            c.c.id = self.next_id
            self.next_id += 1
            self._consumers[c.c.id] = c
        finally:
            self._unlock()
        return c

    def close_consumer(self, Consumer c):
        """Close a consumer (a second call does nothing); its SRTP stream is freed."""
        self._lock()
        try:
            if c is None or self._consumers.get(c.c.id) is not c:
                return
            del self._consumers[c.c.id]
            c.producer._detach(c.c)
            c.transport._detach(c.c)
            map_del(&self.consumers, c.c.ssrc)
            if c.c.transport.tx != NULL:
                srtp_stream_del(c.c.transport.tx, c.c.ssrc)
        finally:
            self._unlock()

    def switch_producer(self, Consumer c, Producer p):
        """Feed the consumer from another producer; its seq/ts continue without a jump (SeqManager).
        Both must be open and of this worker (ValueError otherwise)."""
        self._lock()
        try:
            self._check_consumer(c)
            self._check_producer(p)
            if p is c.producer:
                return
            p._attach(c.c)
            c.producer._detach(c.c)
            c.producer = p
            c.c.producer = p.p
            consumer_resync(c.c)
            if p.p.codec in (CODEC_VP8, CODEC_H264):
                c.c.wait_keyframe = 1
        finally:
            self._unlock()

    def request_keyframe(self, Producer p):
        """Send a PLI to the producer now (subject to the 500 ms limit); returns True if sent."""
        cdef int r
        self._lock()
        try:
            self._check_producer(p)
            with nogil:
                r = self._request_keyframe(p.p, now_ns())
                self._flush()
        finally:
            self._unlock()
        return bool(r)

    def send_sender_reports(self):
        """One SR per consumer (RFC 3550 §6.4.1) so receivers' RRs carry LSR/DLSR for RTT."""
        cdef Consumer c
        cdef uint8_t *b
        cdef uint64_t ntp
        cdef int n
        self._lock()
        try:
            for obj in self._consumers.values():
                c = <Consumer>obj
                if not c.c.have_out or not c.c.transport.bound:
                    continue
                b = self._out_slot()
                ntp = ntp_now()
                rtcp_header(b, 0, RTCP_SR, 28)
                wr32(b + 4, c.c.ssrc)
                wr32(b + 8, <uint32_t>(ntp >> 32))
                wr32(b + 12, <uint32_t>ntp)
                wr32(b + 16, <uint32_t>c.c.last_out_ts)
                wr32(b + 20, <uint32_t>c.c.c.packets_out)
                wr32(b + 24, <uint32_t>c.c.c.bytes_out)
                c.c.sr_ntp_mid = <uint32_t>(ntp >> 16)
                n = 28 if c.c.transport.tx == NULL else srtcp_protect(c.c.transport.tx, b, 28, SLOT)
                if n > 0:
                    self._queue(n, &c.c.transport.addr)
            self._flush()
        finally:
            self._unlock()

    def send_transport_feedback(self):
        """Report every transport's pending transport-cc arrivals now (a timer's call when little
        arrives; the drain also reports every 50 ms)."""
        with nogil:
            pthread_mutex_lock(&self.mu)
            self._feedback_tcc_all()
            self._flush()
            pthread_mutex_unlock(&self.mu)

    def run_timers(self):
        """What the drain does after each batch, for when nothing arrives: NACK retries and give-ups,
        transport-cc feedback that is due (every ~20 ms)."""
        with nogil:
            pthread_mutex_lock(&self.mu)
            self._feedback(now_ns(), 0)
            self._flush()
            pthread_mutex_unlock(&self.mu)

    cdef void _feedback_tcc_all(self) noexcept nogil:
        cdef int i
        cdef CTransport *t
        cdef int64_t now = now_ns()
        for i in range(self.tcc_transports.n):
            t = <CTransport *>self.tcc_transports.items[i]
            if t.tcc.base < t.tcc.end:
                self._send_tcc(t, now)

    # ---------------- the packet path (nogil) ----------------

    cdef inline void _queue(self, int n, sockaddr_in *dst) noexcept nogil:
        ctx_queue(self.tx, n, dst)

    cdef void _flush(self) noexcept nogil:
        ctx_flush(self.tx)

    cdef inline uint8_t *_out_slot(self) noexcept nogil:
        return ctx_slot(self.tx)

    cdef void _event(self, int kind, uint64_t tid, uint32_t ssrc, uint32_t ssrc2,
                     const uint8_t *buf, const RtpHeader *h, const ExtIds *ext) noexcept nogil:
        cdef int i
        for i in range(self.nevents):    # one event per SSRC and kind per drain
            if self.events[i].kind == kind and self.events[i].ssrc == ssrc:
                return
        if self.nevents == EVENT_QUEUE:
            return
        cdef Event *e = &self.events[self.nevents]
        self.nevents += 1
        e.kind = kind
        e.transport_id = tid
        e.ssrc = ssrc
        e.ssrc2 = ssrc2
        e.mid[0] = 0
        e.rid[0] = 0
        e.rrid[0] = 0
        if h != NULL:
            # first packets of a simulcast stream name it only by MID/RID (RFC 8852)
            rtp_ext_string(buf, h, ext.mid, e.mid, 32)
            rtp_ext_string(buf, h, ext.rid, e.rid, 32)
            rtp_ext_string(buf, h, ext.rrid, e.rrid, 32)

    cdef int _request_keyframe(self, CProducer *p, int64_t now) noexcept nogil:
        cdef uint8_t *b
        cdef int n
        cdef CTransport *t = p.transport
        if now - p.last_pli_ns < PLI_INTERVAL_NS:
            p.pli_limited += 1
            self.drops[DROP_PLI_RATE_LIMITED] += 1
            return 0
        if not t.bound:
            return 0
        p.last_pli_ns = now
        b = self._out_slot()
        n = rtcp_write_pli(b, self.rtcp_ssrc, p.ssrc)
        if t.tx != NULL:
            n = srtcp_protect(t.tx, b, n, SLOT)
            if n < 0:
                t.drops[drop_reason(n)] += 1
                return 0
        self._queue(n, &t.addr)
        t.c.packets_out += 1
        t.c.bytes_out += n
        p.pli_forwarded += 1
        self._event(EV_KEYFRAME_REQUESTED, t.id, p.ssrc, 0, NULL, NULL, NULL)
        return 1

    cdef void _send_rtx(self, CConsumer *c, const uint8_t *buf, int length, int64_t out_seq,
                        int64_t out_ts, int64_t in_seq) noexcept nogil:
        cdef SendCtx *x = self.tx
        if not c.transport.bound:
            c.drops[DROP_UNKNOWN_SOURCE] += 1
            return
        ctx_run_start(x, &c.transport.addr)
        protect_copy(x, c, buf, length, out_seq, out_ts, in_seq, 1)
        ctx_run_end(x)

    cdef int _rtp(self, CTransport *t, uint8_t *buf, int length, int64_t now) noexcept nogil:
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
                self.drops[drop_reason(st)] += 1
                return 0
            length = st
        st = rtp_parse(buf, length, &h)
        if st != ST_OK:
            t.drops[drop_reason(st)] += 1
            self.drops[drop_reason(st)] += 1
            return 0
        if t.tcc != NULL and rtp_ext_uint(buf, &h, t.ext.transport_cc, 2, &twseq) == ST_OK:
            # every packet counts for the sender's estimate, probes on an unknown (RTX) SSRC too
            if tcc_record(t.tcc, <uint16_t>twseq, now // 1000) == TCC_FULL:
                self._send_tcc(t, now)
                tcc_record(t.tcc, <uint16_t>twseq, now // 1000)
        p = <CProducer *>map_get(&self.producers, h.ssrc)
        if p == NULL:
            t.drops[DROP_UNKNOWN_SSRC] += 1
            self.drops[DROP_UNKNOWN_SSRC] += 1
            self._event(EV_UNKNOWN_SSRC, t.id, h.ssrc, 0, buf, &h, &t.ext)
            return 0
        if p.transport != t:
            t.drops[DROP_SSRC_WRONG_TRANSPORT] += 1
            self.drops[DROP_SSRC_WRONG_TRANSPORT] += 1
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
                self._fanout_pending(now)
                p.restarts += 1
                p.ext_seq = seq
                p.ext_ts = ts
                for i in range(p.nconsumers):
                    consumer_resync(p.consumers[i])
                for i in range(HIST_SLOTS):
                    p.hist_seq[i] = -1
                p.nnack = 0
                self._event(EV_PRODUCER_RESTART, t.id, h.ssrc, 0, NULL, NULL, NULL)
            elif seq > p.ext_seq:
                if seq > p.ext_seq + 1 and nack_enabled(p.codec):
                    # a gap: NACKed at the end of this batch unless reordering fills it first
                    lost = nack_add_gap(p.nack, &p.nnack, p.ext_seq + 1, seq, now)
                    if lost:
                        p.nack_gave_up += lost
                        self._request_keyframe(p, now)
                    if p.nnack and not p.nack_listed and plist_add(&self.nack_producers, p) == 0:
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
        e = &self.fan.pend[self.fan.npend]
        self.fan.npend += 1
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

    cdef void _fanout_pending(self, int64_t t0) noexcept nogil:
        """Fan out the queued RTP packets: group them by producer (larger packets first), then each
        fan-out thread serves the transports of its shard (fan_group)."""
        cdef Fan *f = self.fan
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
        if self.nshards == 1:
            for x in range(ng):
                fan_group(self.tx, f, x, -1)
                self.lat_pending += f.gcnt[f.gorder[x]]
                if self.tx.nsend >= 128:
                    # a large fan-out goes out now rather than waiting for the rest of the batch
                    self._flush_recorded(t0)
        else:
            for j in range(self.nshards - 1):
                h = &self.helpers[j]
                pthread_mutex_lock(&h.mu)
                h.go += 1
                pthread_cond_signal(&h.cv_go)
                pthread_mutex_unlock(&h.mu)
            for x in range(ng):
                fan_group(self.tx, f, x, 0)
            ctx_flush(self.tx)
            for j in range(self.nshards - 1):
                h = &self.helpers[j]
                pthread_mutex_lock(&h.mu)
                while h.done != h.go:
                    pthread_cond_wait(&h.cv_done, &h.mu)
                pthread_mutex_unlock(&h.mu)
            self.lat_pending += f.npend
            self._flush_recorded(t0)
        f.npend = 0

    cdef void _nack(self, CConsumer *c, const uint8_t *fci, int n, int64_t now) noexcept nogil:
        cdef int i, b
        cdef uint16_t pid, blp
        for i in range(0, n - 3, 4):
            pid = rd16(fci + i)
            blp = rd16(fci + i + 2)
            self._retransmit(c, pid, now)
            for b in range(16):
                if blp & (1 << b):
                    self._retransmit(c, <uint16_t>(pid + b + 1), now)

    cdef void _retransmit(self, CConsumer *c, uint16_t out16, int64_t now) noexcept nogil:
        """Resend what went out under output seq out16, if it is still held: the same packet with the
        same header (same SRTP index, same plaintext: same ciphertext). At most once per seq per
        max(20 ms, RTT), within the consumer's retransmission byte budget; nothing while paused."""
        cdef CProducer *p = c.producer
        cdef SentEntry *e
        cdef int64_t out_seq, in_seq, gap, in_ts, d, add
        cdef int slot, length
        c.nacks += 1
        if c.paused:
            c.drops[DROP_PAUSED] += 1
            return
        out_seq = ext_seq16(c.last_out_seq, out16)
        e = &c.sent[out_seq & (SENT_RING - 1)]
        if not c.have_out or e.out_seq != out_seq or out_seq < c.rtx_floor:
            c.drops[DROP_NACK_NOT_HELD] += 1
            self.drops[DROP_NACK_NOT_HELD] += 1
            return
        in_seq = e.in_seq
        slot = <int>(((in_seq % HIST_SLOTS) + HIST_SLOTS) % HIST_SLOTS)
        if p.hist_seq[slot] != in_seq:
            c.drops[DROP_NACK_NOT_HELD] += 1
            self.drops[DROP_NACK_NOT_HELD] += 1
            return
        gap = RTX_MIN_GAP_NS
        if c.rtt_ms * 1000000.0 > gap:
            gap = <int64_t>(c.rtt_ms * 1000000.0)
        if e.rtx_ns != 0 and now - e.rtx_ns < gap:
            c.drops[DROP_NACK_TOO_SOON] += 1
            self.drops[DROP_NACK_TOO_SOON] += 1
            return
        length = p.hist_len[slot]
        d = now - c.rtx_budget_ns
        if c.rtx_budget_ns == 0 or d >= 1000000000:
            c.rtx_budget = RTX_BURST_BYTES
            c.rtx_budget_ns = now
        elif d > 0:
            add = d * RTX_RATE_BYTES // 1000000000
            if add > 0:
                c.rtx_budget += add
                if c.rtx_budget > RTX_BURST_BYTES:
                    c.rtx_budget = RTX_BURST_BYTES
                c.rtx_budget_ns = now
        if c.rtx_budget < length:
            c.drops[DROP_NACK_BUDGET] += 1
            self.drops[DROP_NACK_BUDGET] += 1
            return
        c.rtx_budget -= length
        e.rtx_ns = now
        in_ts = ext_ts32(p.ext_ts, rd32(p.hist + slot * HIST_SLOT + 4))
        self._send_rtx(c, p.hist + slot * HIST_SLOT, length, out_seq, in_ts + c.ts_offset, in_seq)

    cdef void _report(self, CTransport *t, const uint8_t *blk, uint64_t ntp) noexcept nogil:
        cdef RtcpReport r
        cdef CConsumer *c
        cdef uint32_t mid, rtt
        rtcp_read_report(blk, &r)
        c = <CConsumer *>map_get(&self.consumers, r.ssrc)
        if c == NULL or c.transport != t:
            return
        c.rr_fraction_lost = r.fraction_lost
        c.rr_packets_lost = r.packets_lost
        c.rr_jitter = r.jitter
        c.rr_highest_seq = r.highest_seq
        c.rr_count += 1
        if r.lsr != 0 and r.lsr == c.sr_ntp_mid:
            # RFC 3550 §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s
            mid = <uint32_t>(ntp >> 16)
            rtt = mid - r.lsr - r.dlsr
            if rtt < (<uint32_t>1 << 31):
                c.rtt_ms = rtt * 1000.0 / 65536.0
                t.rtt_ms = c.rtt_ms

    cdef void _rtcp(self, CTransport *t, uint8_t *buf, int length, int64_t now) noexcept nogil:
        cdef int st, off = 0, count, pt, blen, i, n
        cdef const uint8_t *p
        cdef const uint8_t *b
        cdef CConsumer *c
        cdef CProducer *prod
        cdef uint64_t ntp = 0, bitrate
        if t.rx != NULL:
            st = srtcp_unprotect(t.rx, buf, length)
            if st < 0:
                t.drops[drop_reason(st)] += 1
                self.drops[drop_reason(st)] += 1
                return
            length = st
        st = rtcp_check_compound(buf, length)
        if st != ST_OK:
            t.drops[drop_reason(st)] += 1
            self.drops[drop_reason(st)] += 1
            return
        while off < length:
            p = buf + off
            count = p[0] & 0x1f
            pt = p[1]
            blen = rtcp_body_len(p)
            off += 4 * (rd16(p + 2) + 1)
            b = p + 4
            if pt == RTCP_SR and blen >= 24 + 24 * count:
                prod = <CProducer *>map_get(&self.producers, rd32(b))
                if prod != NULL and prod.transport == t:
                    prod.sr_ntp = (<uint64_t>rd32(b + 4) << 32) | rd32(b + 8)
                    prod.sr_rtp_ts = rd32(b + 12)
                    prod.sr_count += 1
                if count and ntp == 0:
                    ntp = ntp_now()
                for i in range(count):
                    self._report(t, b + 24 + 24 * i, ntp)
            elif pt == RTCP_RR and blen >= 4 + 24 * count:
                if count and ntp == 0:
                    ntp = ntp_now()
                for i in range(count):
                    self._report(t, b + 4 + 24 * i, ntp)
            elif (pt == RTCP_RTPFB or pt == RTCP_PSFB) and blen >= 8:
                c = <CConsumer *>map_get(&self.consumers, rd32(b + 4))
                if pt == RTCP_PSFB and count == 4 and blen >= 16:
                    c = <CConsumer *>map_get(&self.consumers, rd32(b + 8))   # FIR names it in the FCI
                if pt == RTCP_RTPFB and count == 15:
                    t.tcc_feedback += 1
                elif pt == RTCP_PSFB and count == 15 and blen >= 16 and memcmp(b + 8, b"REMB", 4) == 0:
                    bitrate = (<uint64_t>(rd24(b + 13) & 0x3ffff)) << (b[13] >> 2)
                    t.remb_bitrate = bitrate
                    n = b[12]
                    for i in range(n):
                        if 16 + 4 * i + 4 <= blen:
                            c = <CConsumer *>map_get(&self.consumers, rd32(b + 16 + 4 * i))
                            if c != NULL and c.transport == t:
                                c.remb_bitrate = bitrate
                elif c == NULL or c.transport != t:
                    t.drops[DROP_UNKNOWN_SSRC] += 1
                elif pt == RTCP_RTPFB and count == 1:
                    self._nack(c, b + 8, blen - 8, now)
                elif pt == RTCP_PSFB and (count == 1 or count == 4):
                    c.plis += 1
                    self._request_keyframe(c.producer, now)

    cdef void _send_tcc(self, CTransport *t, int64_t now) noexcept nogil:
        """Report every arrival the transport holds (one or more feedback packets)."""
        cdef uint8_t *b
        cdef int n, rep
        while t.tcc.base < t.tcc.end:
            b = self._out_slot()
            n = tcc_build(t.tcc, b, TCC_MAX_FB, self.rtcp_ssrc, t.tcc_media_ssrc, &rep)
            if n <= 0:
                break
            if not t.bound:
                continue          # nowhere to send: forgotten all the same
            if t.tx != NULL:
                n = srtcp_protect(t.tx, b, n, SLOT)
                if n < 0:
                    t.drops[drop_reason(n)] += 1
                    continue
            self._queue(n, &t.addr)
            t.c.packets_out += 1
            t.c.bytes_out += n
            t.tcc_feedback_sent += 1
            t.tcc_packets_reported += rep
        t.tcc_last_fb_ns = now

    cdef void _send_nacks(self, CProducer *p, int64_t now) noexcept nogil:
        """NACK what is due, give up on what expired (then a key frame request lets consumers
        recover)."""
        cdef int64_t seqs[NACK_MAX]
        cdef int64_t retry = NACK_MIN_RETRY_NS
        cdef CTransport *t = p.transport
        cdef int nseq, gave_up, n
        cdef uint8_t *b
        if t.rtt_ms * 1000000.0 > retry:
            retry = <int64_t>(t.rtt_ms * 1000000.0)
        gave_up = nack_due(p.nack, &p.nnack, now, retry, seqs, &nseq)
        if nseq and t.bound:
            b = self._out_slot()
            n = rtcp_write_nack(b, self.rtcp_ssrc, p.ssrc, seqs, nseq)
            if t.tx != NULL:
                n = srtcp_protect(t.tx, b, n, SLOT)
            if n > 0:
                self._queue(n, &t.addr)
                t.c.packets_out += 1
                t.c.bytes_out += n
                p.nacks_sent += 1
                p.nack_seqs_requested += nseq
            else:
                t.drops[drop_reason(n)] += 1
        if gave_up:
            p.nack_gave_up += gave_up
            if p.codec == CODEC_VP8 or p.codec == CODEC_H264:
                self._request_keyframe(p, now)

    cdef void _feedback(self, int64_t now, int force_tcc) noexcept nogil:
        """Upstream feedback of the draining thread: NACKs due, transport-cc every TCC_INTERVAL_NS."""
        cdef int i
        cdef CTransport *t
        cdef CProducer *p
        i = 0
        while i < self.nack_producers.n:
            p = <CProducer *>self.nack_producers.items[i]
            self._send_nacks(p, now)
            if p.nnack == 0:
                p.nack_listed = 0
                plist_del(&self.nack_producers, p)    # the last item moves to i
            else:
                i += 1
        for i in range(self.tcc_transports.n):
            t = <CTransport *>self.tcc_transports.items[i]
            if t.tcc.base < t.tcc.end and (force_tcc or now - t.tcc_last_fb_ns >= TCC_INTERVAL_NS):
                self._send_tcc(t, now)

    cdef void _flush_recorded(self, int64_t t0) noexcept nogil:
        """Flush, then count each RTP packet whose fan-out is complete at its receive-to-sent latency."""
        cdef int64_t bucket
        self._flush()
        if self.lat_pending:
            bucket = (now_ns() - t0) // LAT_BUCKET_NS
            if bucket >= LAT_BUCKETS:
                bucket = LAT_BUCKETS - 1
            self.lat_hist[bucket] += self.lat_pending
            self.lat_pending = 0

    cdef int _drain(self, int max_batches) noexcept nogil:
        cdef int n, b, total = 0
        for b in range(max_batches):
            pthread_mutex_lock(&self.mu)      # control calls from other threads wait between batches
            n = self._batch()
            pthread_mutex_unlock(&self.mu)
            if n <= 0:
                break
            total += n
        return total

    cdef int _batch(self) noexcept nogil:
        """One receive batch, start to sent; 0 when there is nothing to do (the caller holds mu)."""
        cdef int n, i
        cdef uint8_t *buf
        cdef int length
        cdef uint8_t first
        cdef CTransport *t
        cdef int64_t t0
        if self.ncontrol + RECV_BATCH > CONTROL_QUEUE or self.nevents + RECV_BATCH > EVENT_QUEUE:
            return 0             # let Python empty its queues first
        for i in range(RECV_BATCH):
            self.rmsg[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
        n = recvmmsg(self.fd, self.rmsg, RECV_BATCH, MSG_DONTWAIT, NULL)
        if n <= 0:
            return 0
        t0 = now_ns()
        self.batches += 1
        for i in range(n):
            buf = self.rbuf + i * SLOT
            length = self.rmsg[i].msg_len
            self.c.packets_in += 1
            self.c.bytes_in += length
            if length < 1 or length >= SLOT:
                self.drops[DROP_TRUNCATED] += 1
                continue
            first = buf[0]
            if first <= 3 or (20 <= first <= 63):
                # RFC 7983 §7: STUN and DTLS are Python's business
                if self.ncontrol == CONTROL_QUEUE:
                    self.drops[DROP_CONTROL_QUEUE_FULL] += 1
                    continue
                memcpy(self.cbuf + self.ncontrol * SLOT, buf, length)
                self.clen[self.ncontrol] = length
                self.caddr[self.ncontrol] = self.raddr[i]
                self.ncontrol += 1
            elif 128 <= first <= 191:
                t = <CTransport *>map_get(&self.by_addr, addr_key(&self.raddr[i]))
                if t == NULL:
                    self.drops[DROP_UNKNOWN_SOURCE] += 1
                    continue
                t.c.packets_in += 1
                t.c.bytes_in += length
                if rtcp_is_rtcp(buf, length):
                    self._fanout_pending(t0)      # feedback acts on what came before it
                    self._rtcp(t, buf, length, t0)
                elif not self._rtp(t, buf, length, t0):
                    self.lat_pending += 1         # refused: done with it
            else:
                self.drops[DROP_NOT_MEDIA] += 1
        self._fanout_pending(t0)
        self._feedback(now_ns(), 0)
        self._flush_recorded(t0)
        return n

    def drain(self, int max_batches=64):
        """Process what the socket holds (up to max_batches x 64 datagrams) without the GIL.

        Returns (control, events): control is [(datagram, (host, port))] for STUN/DTLS;
        events are tuples for Python decisions."""
        cdef int n
        with nogil:
            n = self._drain(max_batches)
            pthread_mutex_lock(&self.mu)
        try:
            return self._take_queues()
        finally:
            pthread_mutex_unlock(&self.mu)

    cdef tuple _take_queues(self):
        cdef int i
        cdef const uint8_t *ip
        control = []
        for i in range(self.ncontrol):
            ip = <const uint8_t *>&self.caddr[i].sin_addr.s_addr
            control.append((bytes((self.cbuf + i * SLOT)[:self.clen[i]]),
                            ("%d.%d.%d.%d" % (ip[0], ip[1], ip[2], ip[3]), ntohs(self.caddr[i].sin_port))))
        self.ncontrol = 0
        events = []
        for i in range(self.nevents):
            e = &self.events[i]
            if e.kind == EV_UNKNOWN_SSRC:
                events.append(("unknown_ssrc", e.transport_id, e.ssrc, e.mid.decode("utf-8", "replace"),
                               e.rid.decode("utf-8", "replace"), e.rrid.decode("utf-8", "replace")))
            elif e.kind == EV_KEYFRAME_REQUESTED:
                events.append(("keyframe_requested", e.transport_id, e.ssrc))
            elif e.kind == EV_PRODUCER_RESTART:
                events.append(("producer_restart", e.transport_id, e.ssrc))
        self.nevents = 0
        return control, events

    def wait(self, int timeout_ms):
        """Block (GIL released) until the socket is readable or timeout; True if readable."""
        cdef pollfd pfd
        cdef int r
        pfd.fd = self.fd
        pfd.events = POLLIN
        with nogil:
            r = poll(&pfd, 1, timeout_ms)
        return r > 0

    def send(self, bytes data, str host, int port):
        """Send one datagram from the worker's socket (STUN/DTLS replies from Python)."""
        cdef sockaddr_in a
        cdef uint8_t *b
        if len(data) > SLOT:
            raise ValueError("datagram too large")
        _sockaddr(host, port, &a)
        self._lock()
        b = self._out_slot()
        memcpy(b, <const uint8_t *>data, len(data))
        self.send_addr = a   # a copy that outlives the flush below
        self._queue(len(data), &self.send_addr)
        self._flush()
        self._unlock()

    @property
    def stats(self):
        cdef uint64_t drops[DROP_COUNT]
        cdef SendCtx *x
        cdef int i
        memcpy(drops, self.drops, sizeof(drops))
        d = counters_dict(&self.c)
        s = dict(send_calls=0, gso_messages=0, gso_segments=0, gso_fallbacks=0)
        for i in range(self.nshards):
            x = self.tx if i == 0 else self.helpers[i - 1].ctx
            d["packets_out"] += x.packets_out
            d["bytes_out"] += x.bytes_out
            drops[DROP_SEND_FAILED] += x.send_failed
            s["send_calls"] += x.send_calls
            s["gso_messages"] += x.gso_messages
            s["gso_segments"] += x.gso_segments
            s["gso_fallbacks"] += x.gso_fallbacks
        d.update(s)
        d.update(drops=drops_dict(drops), batches=self.batches, gso=bool(self.gso), fanout_threads=self.nshards,
                 transports=len(self._transports), producers=len(self._producers),
                 consumers=len(self._consumers))
        return d

    def latency_histogram(self, bint reset=False):
        """{bucket_upper_ms: count} of receive-to-last-send latency per forwarded RTP packet."""
        out = {}
        for i in range(LAT_BUCKETS):
            if self.lat_hist[i]:
                out[(i + 1) * LAT_BUCKET_NS / 1e6] = self.lat_hist[i]
        if reset:
            memset(self.lat_hist, 0, LAT_BUCKETS * sizeof(uint64_t))
        return out

    def reset_stats(self):
        cdef int i
        memset(&self.c, 0, sizeof(Counters))
        memset(self.drops, 0, sizeof(self.drops))
        memset(self.lat_hist, 0, LAT_BUCKETS * sizeof(uint64_t))
        self.batches = 0
        for i in range(self.nshards):
            ctx_zero(self.tx if i == 0 else self.helpers[i - 1].ctx)

    @property
    def gso(self):
        """True while same-size copies to one destination go out as one UDP GSO message."""
        return bool(self.gso)

    @gso.setter
    def gso(self, bint on):
        cdef int v = 0
        cdef socklen_t vlen = sizeof(int)
        self._lock()
        self._flush()
        self._unlock()
        self.gso = 1 if on and getsockopt(self.fd, SOL_UDP, UDP_SEGMENT, &v, &vlen) == 0 else 0


def raw_sendmmsg_baseline(int fd, list dests, bytes payload, long count):
    """The kernel's cost alone: send count datagrams of payload round-robin to dests with sendmmsg,
    SEND_BATCH per call, nothing else (the yardstick for bench/forwarding.py)."""
    cdef int nd = len(dests), i, r, k, n
    cdef long sent = 0
    cdef sockaddr_in *addrs
    cdef mmsghdr *msgs
    cdef iovec iov
    if nd == 0:
        return 0
    addrs = <sockaddr_in *>malloc(nd * sizeof(sockaddr_in))
    msgs = <mmsghdr *>calloc(SEND_BATCH, sizeof(mmsghdr))
    try:
        for i, (h, p) in enumerate(dests):
            _sockaddr(h, p, &addrs[i])
        iov.iov_base = <void *><const uint8_t *>payload
        iov.iov_len = len(payload)
        with nogil:
            k = 0
            while sent < count:
                if count - sent > SEND_BATCH:
                    n = SEND_BATCH
                else:
                    n = <int>(count - sent)
                for i in range(n):
                    msgs[i].msg_hdr.msg_iov = &iov
                    msgs[i].msg_hdr.msg_iovlen = 1
                    msgs[i].msg_hdr.msg_name = &addrs[k]
                    msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
                    k += 1
                    if k == nd:
                        k = 0
                r = sendmmsg(fd, msgs, n, 0)
                if r <= 0:
                    break
                sent += r
        return sent
    finally:
        free(addrs)
        free(msgs)
