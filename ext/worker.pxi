# The worker's control API: NativeWorker owns the socket and the packet path's state (Core) and is
# what Python calls: create/bind/close entities, drain (the receive loop, then the queues that go up to
# Python), timers, stats. The packet path itself is in udp, ingest, fanout, consumer and rtcp_io.

cdef enum:
    CONTROL_QUEUE = 1024       # STUN/DTLS datagrams waiting for Python (a join storm while the loop is busy)
    EVENT_QUEUE = 1024
    LAT_BUCKET_NS = 10000      # latency histogram: 10 µs buckets up to 100 ms
    LAT_BUCKETS = 10001


cdef struct Core:
    # the C state of one worker, what the nogil packet path works on (NativeWorker.core)
    int fd
    pthread_mutex_t mu
    int mu_ready
    sockaddr_in send_addr  # destination of send()'s datagram
    U64Map by_addr
    U64Map producers           # SSRC -> CEncoding*
    U64Map repairs             # RTX SSRC -> the CEncoding* it repairs
    U64Map consumers
    mmsghdr rmsg[RECV_BATCH]
    iovec riov[RECV_BATCH]
    sockaddr_in raddr[RECV_BATCH]
    uint8_t *rbuf
    SendCtx *tx           # the calling thread's outgoing batch (shard 0, RTCP, retransmissions)
    int gso               # 1 while UDP GSO is used; 0 if off or refused by the kernel
    Fan *fan
    int nshards           # fan-out threads: the caller's + nshards - 1 helpers
    Helper *helpers
    uint64_t ntransports
    uint8_t *cbuf
    int clen[CONTROL_QUEUE]
    sockaddr_in caddr[CONTROL_QUEUE]
    int ncontrol
    Event events[EVENT_QUEUE]
    int nevents
    int serving                # serve() runs the packet path: queues fill until Python takes them
    int handed                 # ncontrol + nevents when serve() last told Python
    uint64_t events_dropped    # events that found their queue full (Python did not take it in time)
    Counters c
    uint64_t drops[DROP_COUNT]
    uint64_t batches
    uint64_t rtx_in            # retransmissions publishers sent as RTX, unwrapped into their encodings
    uint64_t stun_answered     # consent checks answered in the core (stun.pxi)
    uint64_t *lat_hist
    uint64_t lat_pending
    uint64_t next_id
    uint32_t rtcp_ssrc
    PtrList tcc_transports     # CTransport* with a transport-cc ring
    PtrList probing            # CTransport* running a bandwidth probe (bwe.pxi): padding sent from feedback_due
    PtrList nack_encodings     # CEncoding* with missing seqs to NACK
    PtrList pli_encodings      # CEncoding* with a key frame request waiting for its PLI window to close
    PtrList switching          # CConsumer* with a producer switch waiting for a key frame, or done and unsettled


cdef class NativeWorker:
    """Owns one UDP socket and the packet path. Python drives it with drain() once per readiness.

    Threads: drain() may run in one thread while control methods (create/close/bind/switch/
    set_target_encoding/request_keyframe/feed/send...) are called from another. A recursive mutex serialises them: drain()
    holds it for each receive batch (so entities are never resized or freed mid-fan-out), every control
    method holds it for its whole run. It is taken with the GIL released (no lock-order deadlock) and is
    uncontended when one thread does everything (attach() on an asyncio loop)."""
    cdef Core *core
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
        self.core = <Core *>calloc(1, sizeof(Core))
        if self.core == NULL:
            raise MemoryError()
        self.core.fd = -1
        pthread_mutexattr_init(&ma)
        pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE)
        if pthread_mutex_init(&self.core.mu, &ma) != 0:
            pthread_mutexattr_destroy(&ma)
            raise MemoryError()
        pthread_mutexattr_destroy(&ma)
        self.core.mu_ready = 1
        self._transports, self._producers, self._consumers = {}, {}, {}
        self._extra_addrs = {}
        self.core.rbuf = <uint8_t *>malloc(RECV_BATCH * SLOT)
        self.core.cbuf = <uint8_t *>malloc(CONTROL_QUEUE * SLOT)
        self.core.fan = <Fan *>calloc(1, sizeof(Fan))
        self.core.lat_hist = <uint64_t *>calloc(LAT_BUCKETS, sizeof(uint64_t))
        if not (self.core.rbuf and self.core.cbuf and self.core.fan and self.core.lat_hist):
            raise MemoryError()
        if not 1 <= fanout_threads <= 16:
            raise ValueError("fanout_threads: 1 to 16")
        if map_init(&self.core.by_addr, 64) or map_init(&self.core.producers, 64) or map_init(&self.core.consumers, 64) \
                or map_init(&self.core.repairs, 16):
            raise MemoryError()
        for i in range(RECV_BATCH):
            self.core.riov[i].iov_base = self.core.rbuf + i * SLOT
            self.core.riov[i].iov_len = SLOT
            memset(&self.core.rmsg[i], 0, sizeof(mmsghdr))
            self.core.rmsg[i].msg_hdr.msg_iov = &self.core.riov[i]
            self.core.rmsg[i].msg_hdr.msg_iovlen = 1
            self.core.rmsg[i].msg_hdr.msg_name = &self.core.raddr[i]
        _sockaddr(host, port, &a)
        self.core.fd = socket(AF_INET, SOCK_DGRAM, 0)
        if self.core.fd < 0:
            raise OSError(errno, "socket() failed")
        # 8 MiB: the default 208 KiB loses ~1% of a full-rate burst (DESIGN.md, Measured)
        _set_bufs(self.core.fd, buffer_bytes)
        if bind(self.core.fd, <sockaddr *>&a, sizeof(sockaddr_in)) != 0:
            err = errno
            raise OSError(err, "cannot bind the media UDP socket to %s:%d: %s" % (host, port, strerror(err).decode()))
        getsockname(self.core.fd, <sockaddr *>&a, &alen)
        # the kernel knows UDP_SEGMENT (>= 4.18) if it can report it; a refusal at send time also turns it off
        self.core.gso = 1 if gso and getsockopt(self.core.fd, SOL_UDP, UDP_SEGMENT, &v, &vlen) == 0 else 0
        self.core.tx = ctx_new(self.core.fd, &self.core.gso)
        if self.core.tx == NULL:
            raise MemoryError()
        self.core.helpers = <Helper *>calloc(fanout_threads, sizeof(Helper))
        if self.core.helpers == NULL:
            raise MemoryError()
        self.core.nshards = 1
        for i in range(fanout_threads - 1):
            # one more shard per helper thread; transports are spread over the shards
            h = &self.core.helpers[i]
            h.ctx = ctx_new(self.core.fd, &self.core.gso)
            if h.ctx == NULL:
                raise MemoryError()
            h.fan = self.core.fan
            h.shard = i + 1
            pthread_mutex_init(&h.mu, NULL)
            pthread_cond_init(&h.cv_go, NULL)
            pthread_cond_init(&h.cv_done, NULL)
            if pthread_create(&h.thread, NULL, helper_main, h) != 0:
                raise OSError(errno, "pthread_create failed")
            h.started = 1
            self.core.nshards += 1
        self.local_address = (host, ntohs(a.sin_port))
        self.core.next_id = 1
        self.core.rtcp_ssrc = 0x454e5801   # our own SSRC as an RTCP sender (PLI/FIR we originate)

    def __dealloc__(self):
        cdef int i
        cdef Helper *h
        if self.core == NULL:
            return
        if self.core.helpers != NULL:
            for i in range(self.core.nshards - 1):
                h = &self.core.helpers[i]
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
            free(self.core.helpers)
        if self.core.fd >= 0:
            close(self.core.fd)
        ctx_free(self.core.tx)
        free(self.core.fan)
        free(self.core.rbuf)
        free(self.core.cbuf)
        free(self.core.lat_hist)
        map_free(&self.core.by_addr)
        map_free(&self.core.producers)
        map_free(&self.core.repairs)
        map_free(&self.core.consumers)
        plist_free(&self.core.tcc_transports)
        plist_free(&self.core.probing)
        plist_free(&self.core.nack_encodings)
        plist_free(&self.core.pli_encodings)
        plist_free(&self.core.switching)
        if self.core.mu_ready:
            pthread_mutex_destroy(&self.core.mu)
        free(self.core)
        self.core = NULL

    def fileno(self):
        return self.core.fd

    def close(self):
        """Close the UDP socket now, so its port is free for another worker; nothing is received or sent
        afterwards (a second call does nothing). Memory goes when the object does."""
        cdef int i
        self._lock()
        try:
            if self.core.fd >= 0:
                close(self.core.fd)
                self.core.fd = -1
                # the send contexts hold the descriptor too: a reused number must never be written to
                self.core.tx.fd = -1
                for i in range(self.core.nshards - 1):
                    self.core.helpers[i].ctx.fd = -1
        finally:
            self._unlock()

    cdef inline void _lock(self):
        with nogil:
            pthread_mutex_lock(&self.core.mu)

    cdef inline void _unlock(self):
        pthread_mutex_unlock(&self.core.mu)

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
            if t.t.tcc != NULL and plist_add(&self.core.tcc_transports, t.t) != 0:
                raise MemoryError()
            t.t.id = self.core.next_id
            self.core.next_id += 1
            t.t.shard = <int>(self.core.ntransports % self.core.nshards)
            self.core.ntransports += 1
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
            if map_put(&self.core.by_addr, key, t.t) != 0:
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

    def set_ice_credentials(self, Transport t, str local_ufrag, str local_pwd, str remote_ufrag):
        """Answer the consent checks (RFC 7675) that reach the transport's send address in the core from
        now on; whatever else STUN brings still goes up to Python."""
        cdef bytes username = f"{local_ufrag}:{remote_ufrag}".encode()
        cdef bytes pwd = local_pwd.encode()
        cdef IceCreds *ice
        if not (0 < len(local_ufrag) <= ICE_CRED_LEN and 0 < len(remote_ufrag) <= ICE_CRED_LEN
                and 0 < len(pwd) <= ICE_CRED_LEN) or len(username) > 2 * ICE_CRED_LEN + 1:
            raise ValueError("ICE ufrag and pwd are 1 to 256 ASCII characters")
        ice = <IceCreds *>calloc(1, sizeof(IceCreds))
        if ice == NULL:
            raise MemoryError()
        memcpy(ice.username, <const char *>username, len(username))
        ice.username_len = len(username)
        memcpy(ice.pwd, <const char *>pwd, len(pwd))
        ice.pwd_len = len(pwd)
        self._lock()
        try:
            self._check_transport(t)
            free(t.t.ice)
            t.t.ice = ice
        except BaseException:
            free(ice)
            raise
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
            if map_put(&self.core.by_addr, key, t.t) != 0:
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
            plist_del(&self.core.tcc_transports, t.t)
            plist_del(&self.core.probing, t.t)
            t.t.probe_listed = 0
            pace_forget(self.core, t.t, NULL, 0)
            keys = self._extra_addrs.pop(t.t.id, set())
            if t.t.bound:
                keys.add(addr_key(&t.t.addr))
                t.t.bound = 0
            for k in keys:
                key = k
                # an address another transport has taken over since is left to that transport
                if map_get(&self.core.by_addr, key) == <void *>t.t:
                    map_del(&self.core.by_addr, key)
            self._transports.pop(t.t.id, None)
        finally:
            self._unlock()

    def create_producer(self, Transport transport, unsigned int ssrc=0, str codec="vp8", *, str mid="",
                        list encodings=None, int payload_type=0, int rtx_payload_type=0, unsigned int rtx_ssrc=0):
        """A track (one mid) received on transport: encodings is [(rid, ssrc)] or [(rid, ssrc, rtx_ssrc)]
        (at most MAX_ENCODINGS, ssrc 0 while not known); without it one encoding (rid "", ssrc, rtx_ssrc).
        An encoding with ssrc 0 is bound in the core when a packet on this transport names mid and its
        rid (header extensions; an ``encoding_bound`` MediaEvent tells Python).

        rtx_payload_type: RTX (RFC 4588) was negotiated for payload_type (its apt): packets on an
        encoding's RTX SSRC (given, or learned from a packet naming mid and the encoding's rid as its
        repaired-rid) are unwrapped into that encoding as the retransmissions they are."""
        if rtx_payload_type and not (0 < payload_type < 128 and 0 < rtx_payload_type < 128):
            raise ValueError("RTX needs the media payload type and its own (1-127)")
        if encodings is None:
            encodings = [("", ssrc, rtx_ssrc)]
        elif ssrc or rtx_ssrc:
            raise ValueError("give either ssrc (and rtx_ssrc) or encodings")
        self._lock()
        try:
            self._check_transport(transport)
            p = self._new_producer(transport, codec, mid, encodings, 0)
            p.p.payload_type = payload_type
            p.p.rtx_payload_type = rtx_payload_type
            return p
        finally:
            self._unlock()

    cdef Producer _new_producer(self, Transport transport, str codec, str mid, list encodings,
                                unsigned int ssrc):
        # transport None: a Python-fed producer, whose SSRCs are not in the receive path's SSRC map
        cdef Producer p
        cdef bytes m = mid.encode()
        if encodings is not None and ssrc and encodings != [("", ssrc)]:
            raise ValueError("give either ssrc or encodings")
        if not 1 <= len(encodings) <= MAX_ENCODINGS:
            raise ValueError("1 to %d encodings" % MAX_ENCODINGS)
        if len(m) >= NAME_LEN:
            raise ValueError("mid too long: %r" % mid)
        encodings = [tuple(x) + (0,) * (3 - len(x)) for x in encodings]
        rids, ssrcs = set(), set()
        for rid, s, rs in encodings:
            if rid in rids or (s and s in ssrcs) or (rs and (rs in ssrcs or rs == s)):
                raise ValueError("encodings repeat a rid or an SSRC")
            rids.add(rid)
            ssrcs.update(x for x in (s, rs) if x)
            if transport is None:
                continue
            for x in (s, rs):
                if x and (map_get(&self.core.producers, x) != NULL or map_get(&self.core.repairs, x) != NULL):
                    raise ValueError("SSRC %d already produced on this worker" % x)
            if not s and not mid:
                raise ValueError("an encoding without SSRC needs a mid to be learned by")
        p = Producer()
        p.transport = transport
        p.codec = codec.lower()
        p.mid = mid
        p.p.codec = _CODECS.get(p.codec, CODEC_OTHER)
        p.p.transport = transport.t if transport is not None else NULL
        if transport is not None:
            p.p.ext = transport.t.ext
        memcpy(p.p.mid, <const char *>m, len(m))
        p.p.mid[len(m)] = 0
        for rid, s, rs in encodings:
            p._add_encoding(rid, s, rs if transport is not None else 0)
            if transport is None:
                p.p.enc[p.p.nenc - 1].bound = 1
        for i in range(p.p.nenc):
            if transport is None:
                break
            if ((p.p.enc[i].bound and map_put(&self.core.producers, p.p.enc[i].ssrc, &p.p.enc[i]) != 0)
                    or (p.p.enc[i].rtx_ssrc and map_put(&self.core.repairs, p.p.enc[i].rtx_ssrc, &p.p.enc[i]) != 0)):
                self._unmap_encodings(p, i + 1)
                raise MemoryError()
        if transport is not None and plist_add(&transport.t.producers, p.p) != 0:
            self._unmap_encodings(p, p.p.nenc)
            raise MemoryError()
        p.p.id = self.core.next_id
        self.core.next_id += 1
        self._producers[p.p.id] = p
        return p

    cdef void _unmap_encodings(self, Producer p, int n):
        cdef int k
        for k in range(n):
            if p.p.enc[k].bound and map_get(&self.core.producers, p.p.enc[k].ssrc) == <void *>&p.p.enc[k]:
                map_del(&self.core.producers, p.p.enc[k].ssrc)
            if p.p.enc[k].rtx_ssrc and map_get(&self.core.repairs, p.p.enc[k].rtx_ssrc) == <void *>&p.p.enc[k]:
                map_del(&self.core.repairs, p.p.enc[k].rtx_ssrc)

    def create_direct_producer(self, str codec="vp8", unsigned int ssrc=0, *, list encodings=None,
                               dict ext_ids=None):
        """A producer that Python feeds (feed()) instead of a transport: already packetized RTP, fanned out
        like any producer's. encodings [(rid, ssrc)] routes fed packets by SSRC (the first encoding takes
        any other SSRC; ssrc 0 = any). Its key frame requests come back as keyframe_requested events
        with transport_id 0. ext_ids: the header extension IDs its packets use (audio_level is copied
        to consumers that negotiated it)."""
        if encodings is None:
            encodings = [("", ssrc)]
        elif ssrc:
            raise ValueError("give either ssrc or encodings")
        self._lock()
        try:
            p = self._new_producer(None, codec, "", encodings, 0)
            p.p.ext = _ext_ids_from(ext_ids)
            return p
        finally:
            self._unlock()

    def feed(self, Producer producer, list packets):
        """Fan out packets (a list of plain RTP datagrams, bytes) as the Python-fed producer's, one call per
        batch; the GIL is released while the core works. Malformed packets are counted as drops (worker
        stats), never raised. Returns how many were valid RTP."""
        cdef int n, i, ok = 0, k = 0
        cdef Py_ssize_t total = len(packets)
        cdef bytes b
        self._lock()
        try:
            self._check_producer(producer)
            if producer.p.transport != NULL:
                raise ValueError("not a direct producer (it has a transport)")
            while k < total:
                n = 0
                while n < RECV_BATCH and k < total:
                    b = packets[k]
                    k += 1
                    if len(b) >= SLOT:
                        self.core.drops[DROP_BAD_LENGTH] += 1
                        continue
                    # staged where a receive batch goes: drain() holds the same lock for its batches
                    memcpy(self.core.rbuf + n * SLOT, <const uint8_t *>b, len(b))
                    self.core.rmsg[n].msg_len = len(b)
                    n += 1
                with nogil:
                    ok += direct_feed(self.core, producer.p, n, now_ns())
        finally:
            self._unlock()
        return ok

    def tap(self, Producer producer, bint on=True):
        """Keep (on) or stop keeping producer's packets for tap_read(): each packet as the core ingests it,
        decrypted, duplicates dropped, a repaired one when its retransmission arrives. Off frees the ring."""
        self._lock()
        try:
            self._check_producer(producer)
            if on and producer.p.tap == NULL:
                producer.p.tap = <Tap *>calloc(1, sizeof(Tap))
                if producer.p.tap == NULL:
                    raise MemoryError()
            elif not on and producer.p.tap != NULL:
                free(producer.p.tap)
                producer.p.tap = NULL
        finally:
            self._unlock()

    def tap_read(self, Producer producer):
        """The tapped producer's packets since the last call, oldest first: a list of (arrival time in
        time.monotonic_ns() terms, RTP packet bytes). A reader that falls more than TAP_PACKETS behind
        loses the newest (tap_stats()["overflow"])."""
        cdef Tap *t
        cdef list out = []
        cdef int i, slot
        self._lock()
        try:
            self._check_producer(producer)
            t = producer.p.tap
            if t == NULL:
                raise ValueError("the producer is not tapped")
            for i in range(t.count):
                slot = (t.head + i) % TAP_PACKETS
                out.append((t.arrival_ns[slot], t.data[<size_t>slot * HIST_SLOT:<size_t>slot * HIST_SLOT + t.length[slot]]))
            t.head = (t.head + t.count) % TAP_PACKETS
            t.count = 0
        finally:
            self._unlock()
        return out

    def tap_stats(self, Producer producer):
        """packets (kept), overflow (lost: the reader was behind), too_long, waiting (unread); {} if not tapped."""
        cdef Tap *t
        self._lock()
        try:
            self._check_producer(producer)
            t = producer.p.tap
            if t == NULL:
                return {}
            return {"packets": t.packets, "overflow": t.overflow, "too_long": t.too_long, "waiting": t.count}
        finally:
            self._unlock()

    def close_producer(self, Producer p):
        """Close a producer and its consumers (a second call does nothing)."""
        cdef CEncoding *e
        cdef int i
        self._lock()
        try:
            if p is None or self._producers.get(p.p.id) is not p:
                return
            for c in [c for c in self._consumers.values() if (<Consumer>c).producer is p]:
                self.close_consumer(c)
            switch_orphans(self.core, p.p)
            for i in range(p.p.nenc):
                e = &p.p.enc[i]
                if e.nack_listed:
                    plist_del(&self.core.nack_encodings, e)
                    e.nack_listed = 0
                if e.pli_listed:
                    plist_del(&self.core.pli_encodings, e)
                    e.pli_listed = 0
                e.nnack = 0
                if e.bound:
                    if map_get(&self.core.producers, e.ssrc) == <void *>e:
                        map_del(&self.core.producers, e.ssrc)
                    if p.p.transport != NULL and p.p.transport.rx != NULL:
                        srtp_stream_del(p.p.transport.rx, e.ssrc)
                if e.rtx_ssrc:
                    if map_get(&self.core.repairs, e.rtx_ssrc) == <void *>e:
                        map_del(&self.core.repairs, e.rtx_ssrc)
                    if p.p.transport != NULL and p.p.transport.rx != NULL:
                        srtp_stream_del(p.p.transport.rx, e.rtx_ssrc)
            if p.p.transport != NULL:
                plist_del(&p.p.transport.producers, p.p)
            self._producers.pop(p.p.id, None)
        finally:
            self._unlock()

    def create_consumer(self, Transport transport, Producer producer, unsigned int ssrc, int payload_type,
                        int clock_rate=90000, bint wait_keyframe=False, dict ext_ids=None, str mid="", *,
                        unsigned int rtx_ssrc=0, int rtx_payload_type=0):
        """A consumer SSRC is never reused on an SRTP transport (its SRTP index would start again under
        the same key: nonce reuse), even after its consumer closed.

        ext_ids is the subscriber's negotiated header extension map (names as in create_transport) and
        mid its m-line's MID: each copy carries only mid (this value, on every packet), audio_level
        (the publisher's value) and, for the transport's bandwidth estimation, transport_cc (the
        transport's own transport-wide seq) or else abs_send_time; without ext_ids, no header extension.
        rtx_ssrc / rtx_payload_type: RTX (RFC 4588) negotiated with the subscriber: retransmissions go out
        on that SSRC (same rules: never reused on the transport); else on ssrc itself."""
        cdef Consumer c
        cdef bytes m = mid.encode()
        cdef ExtIds out_ext = _consumer_ext_ids(ext_ids, m)
        self._lock()
        try:
            self._check_transport(transport)
            self._check_producer(producer)
            if map_get(&self.core.consumers, ssrc) != NULL:
                raise ValueError("SSRC %d already consumed on this worker" % ssrc)
            if bool(rtx_ssrc) != bool(rtx_payload_type) or rtx_ssrc == ssrc or not 0 <= rtx_payload_type < 128:
                raise ValueError("RTX needs its own SSRC and payload type (1-127)")
            if rtx_ssrc and map_get(&self.core.consumers, rtx_ssrc) != NULL:
                raise ValueError("SSRC %d already consumed on this worker" % rtx_ssrc)
            if transport.tx is not None:
                for x in (ssrc, rtx_ssrc):
                    if x and x in transport.tx_ssrcs:
                        raise ValueError("SSRC %d was used on this transport before" % x)
            c = Consumer()
            c.alloc_rings(producer.p.codec == CODEC_OPUS)
            c.transport = transport
            c.producer = producer
            c.c.ssrc = ssrc
            c.c.payload_type = payload_type
            c.c.rtx_ssrc = rtx_ssrc
            c.c.rtx_payload_type = rtx_payload_type
            c.c.rtx_seq = <uint16_t>int.from_bytes(os.urandom(2), "big")
            c.c.clock_rate = clock_rate
            c.c.transport = transport.t
            c.c.producer = producer.p
            c.c.wait_keyframe = wait_keyframe and producer.p.codec in (CODEC_VP8, CODEC_H264)
            c.c.last_out_pid = c.c.last_out_tl0 = -1
            c.c.out_ext = out_ext
            c.c.ext_pre_len = ext_prefix(c.c.ext_pre, &out_ext, <const uint8_t *>m, len(m))
            if map_put(&self.core.consumers, ssrc, c.c) != 0:
                raise MemoryError()
            if plist_add(&producer.p.consumers, c.c) != 0:
                map_del(&self.core.consumers, ssrc)
                raise MemoryError()
            if plist_add(&transport.t.consumers, c.c) != 0:
                plist_del(&producer.p.consumers, c.c)
                map_del(&self.core.consumers, ssrc)
                raise MemoryError()
            if out_ext.transport_cc and bwe_enable_feedback(&transport.t.bwe) != 0:
                raise MemoryError()
            if transport.tx is not None:
                transport.tx_ssrcs.add(ssrc)
                if rtx_ssrc:
                    transport.tx_ssrcs.add(rtx_ssrc)
            c.c.id = self.core.next_id
            self.core.next_id += 1
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
            pace_forget(self.core, c.c.transport, c.c, 0)
            switch_cancel(self.core, c.c)
            plist_del(&c.c.producer.consumers, c.c)
            plist_del(&c.transport.t.consumers, c.c)
            map_del(&self.core.consumers, c.c.ssrc)
            if c.c.transport.tx != NULL:
                srtp_stream_del(c.c.transport.tx, c.c.ssrc)
                if c.c.rtx_ssrc:
                    srtp_stream_del(c.c.transport.tx, c.c.rtx_ssrc)
        finally:
            self._unlock()

    def switch_producer(self, Consumer c, Producer p, bint at_keyframe=False, int encoding=-1):
        """Feed the consumer from another producer; its seq/ts continue without a jump (seq.pxi). Video
        then waits for the new producer's next key frame: with at_keyframe the current producer feeds it
        until that key frame arrives (no gap; a PLI asks for one now), else nothing does. encoding: the
        new producer's encoding to start on (-1: the same index if it has one, else 0). A consumer that
        has sent nothing, or is paused, switches at once. Both must be open and of this worker
        (ValueError otherwise). The consumer's producer is the new one from this call on."""
        cdef int enc
        self._lock()
        try:
            self._check_consumer(c)
            self._check_producer(p)
            if not -1 <= encoding < p.p.nenc:
                raise ValueError("the producer has %d encoding(s)" % p.p.nenc)
            enc = encoding if encoding >= 0 else (c.c.enc_target if c.c.enc_target < p.p.nenc else 0)
            if p.p == c.c.producer:
                switch_cancel(self.core, c.c)           # back to the one still feeding it
                c.producer = p
                return
            video = p.p.codec in (CODEC_VP8, CODEC_H264)
            if at_keyframe and video and c.c.have_out and not c.c.paused:
                if c.c.switch_to != p.p:
                    if plist_add(&p.p.consumers, c.c) != 0:
                        raise MemoryError()
                    switch_cancel(self.core, c.c)
                    if plist_add(&self.core.switching, c.c) != 0:
                        plist_del(&p.p.consumers, c.c)
                        raise MemoryError()
                    c.c.switch_to = p.p
                c.c.switch_enc = enc
                c.producer = p
                with nogil:
                    request_keyframe(self.core, &p.p.enc[enc], now_ns())
                    core_flush(self.core)
                return
            if plist_add(&p.p.consumers, c.c) != 0:
                raise MemoryError()
            switch_cancel(self.core, c.c)
            pace_forget(self.core, c.c.transport, c.c, 1)   # its held copies are the old producer's
            core_flush(self.core)
            plist_del(&c.c.producer.consumers, c.c)
            c.producer = p
            c.c.producer = p.p
            consumer_resync(c.c)
            c.c.enc_target = c.c.enc_cur = enc
            if video:
                c.c.wait_keyframe = 1
        finally:
            self._unlock()

    def set_target_encoding(self, Consumer c, int encoding):
        """Switch the consumer to another encoding of its producer at that encoding's next key frame
        (a PLI asks for one now); until then it forwards the current one. Numbering stays continuous.
        A consumer that has sent nothing yet switches at once."""
        cdef CConsumer *x = c.c if c is not None else NULL
        self._lock()
        try:
            self._check_consumer(c)
            if x.switch_to != NULL:
                # waiting to switch producer: the encoding it starts on there
                if not 0 <= encoding < x.switch_to.nenc:
                    raise ValueError("the producer has %d encoding(s)" % x.switch_to.nenc)
                x.switch_enc = encoding
                return
            if not 0 <= encoding < x.producer.nenc:
                raise ValueError("the producer has %d encoding(s)" % x.producer.nenc)
            x.enc_target = encoding
            if encoding == x.enc_cur:
                return
            if not x.have_out:
                x.enc_cur = encoding
                return
            with nogil:
                request_keyframe(self.core, &x.producer.enc[encoding], now_ns())
                core_flush(self.core)
        finally:
            self._unlock()

    def request_keyframe(self, Producer p, int encoding=-1):
        """Send a PLI for one encoding of the producer (-1: each whose SSRC is known) now, subject to the
        500 ms limit per encoding; returns True if one was sent."""
        cdef int r = 0, i
        self._lock()
        try:
            self._check_producer(p)
            if not -1 <= encoding < p.p.nenc:
                raise ValueError("the producer has %d encoding(s)" % p.p.nenc)
            with nogil:
                for i in range(p.p.nenc):
                    if encoding == -1 or encoding == i:
                        r |= request_keyframe(self.core, &p.p.enc[i], now_ns())
                core_flush(self.core)
        finally:
            self._unlock()
        return bool(r)

    def probe(self, Transport t, long long target_bps, int duration_ms=1000):
        """Probe t's downlink before stepping up: padding brings what t is sent up to target_bps for
        duration_ms (stopped at once by over-use, loss or a falling REMB); once feedback about it is in,
        the estimate (stats()["bwe"]) rises to what got through. A probe already running is replaced."""
        if target_bps <= 0 or not 1 <= duration_ms <= 5000:
            raise ValueError("probe: target_bps > 0, duration_ms 1-5000")
        self._lock()
        try:
            self._check_transport(t)
            bwe_probe_start(&t.t.bwe, target_bps, duration_ms * 1000, now_ns() // 1000, t.t.c.bytes_out)
            if not t.t.probe_listed:
                if plist_add(&self.core.probing, t.t) != 0:
                    t.t.bwe.probe_target = 0
                    raise MemoryError()
                t.t.probe_listed = 1
        finally:
            self._unlock()

    def send_sender_reports(self):
        """One SR per consumer that has sent (RFC 3550 §6.4.1): receivers' RRs then carry LSR/DLSR, so
        consumer stats get an RTT."""
        with nogil:
            pthread_mutex_lock(&self.core.mu)
            send_sender_reports(self.core)
            core_flush(self.core)
            pthread_mutex_unlock(&self.core.mu)

    def send_transport_feedback(self):
        """Report every transport's pending transport-cc arrivals now (a timer's call when little
        arrives; the drain also reports every 50 ms)."""
        with nogil:
            pthread_mutex_lock(&self.core.mu)
            feedback_tcc_all(self.core)
            core_flush(self.core)
            pthread_mutex_unlock(&self.core.mu)

    def run_timers(self):
        """What the drain does after each batch, for when nothing arrives: NACK retries and give-ups,
        transport-cc feedback that is due (every ~20 ms), held copies the pacers may send now. Returns
        True while pacers still hold copies: call again within pace_tick_ms."""
        cdef int waiting
        with nogil:
            pthread_mutex_lock(&self.core.mu)
            feedback_due(self.core, now_ns(), 0)
            core_flush(self.core)
            waiting = pace_waiting(self.core)
            pthread_mutex_unlock(&self.core.mu)
        return bool(waiting)

    @property
    def pace_tick_ms(self):
        """How soon the timer must come back while pacers hold copies (run_timers() returned True)."""
        return PACE_TICK_MS

    def drain(self, int max_batches=64):
        """Process what the socket holds (up to max_batches x 64 datagrams) without the GIL.

        Returns (control, events): control is [(datagram, (host, port))] for STUN/DTLS; events is
        [MediaEvent] for Python decisions (MediaEvent's docstring lists the kinds)."""
        cdef int n
        with nogil:
            n = udp_drain(self.core, max_batches)
            pthread_mutex_lock(&self.core.mu)
        try:
            return self._take_queues()
        finally:
            pthread_mutex_unlock(&self.core.mu)

    def serve(self, int notify_fd, int stop_fd, int timer_ms=20):
        """Run the packet path on the calling thread until stop_fd is readable, the GIL released
        throughout: receive, fan out, timers every timer_ms (every pace tick while pacers hold copies).
        When STUN/DTLS datagrams or events wait for Python, notify_fd (an eventfd) is written; the reader
        then calls take_queues(). Control calls from other threads run between batches, as with drain()."""
        self._lock()
        if self.core.serving:
            self._unlock()
            raise RuntimeError("the worker is served by another thread already")
        self.core.serving = 1
        self._unlock()
        try:
            with nogil:
                udp_serve(self.core, notify_fd, stop_fd, timer_ms)
        finally:
            self._lock()
            self.core.serving = 0
            self._unlock()

    def take_queues(self):
        """(control, events) queued since the last call, as drain() returns them; for serve()'s reader."""
        self._lock()
        try:
            return self._take_queues()
        finally:
            self._unlock()

    cdef tuple _take_queues(self):
        cdef int i
        cdef const uint8_t *ip
        control = []
        for i in range(self.core.ncontrol):
            ip = <const uint8_t *>&self.core.caddr[i].sin_addr.s_addr
            control.append((bytes((self.core.cbuf + i * SLOT)[:self.core.clen[i]]),
                            ("%d.%d.%d.%d" % (ip[0], ip[1], ip[2], ip[3]), ntohs(self.core.caddr[i].sin_port))))
        self.core.ncontrol = 0
        events = [media_event(&self.core.events[i]) for i in range(self.core.nevents)]
        self.core.nevents = 0
        self.core.handed = 0
        return control, events

    def wait(self, int timeout_ms):
        """Block (GIL released) until the socket is readable or timeout; True if readable. While pacers
        hold copies the wait is at most pace_tick_ms (False then means: run_timers() now)."""
        cdef pollfd pfd
        cdef int r
        pfd.fd = self.core.fd
        pfd.events = POLLIN
        if timeout_ms > PACE_TICK_MS and pace_waiting(self.core):   # a stale read only costs one tick
            timeout_ms = PACE_TICK_MS
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
        b = core_slot(self.core)
        memcpy(b, <const uint8_t *>data, len(data))
        self.core.send_addr = a   # a copy that outlives the flush below
        core_queue(self.core, len(data), &self.core.send_addr)
        core_flush(self.core)
        self._unlock()

    @property
    def stats(self):
        cdef uint64_t drops[DROP_COUNT]
        cdef SendCtx *x
        cdef int i
        memcpy(drops, self.core.drops, sizeof(drops))
        d = counters_dict(&self.core.c)
        s = dict(send_calls=0, gso_messages=0, gso_segments=0, gso_fallbacks=0, retransmits=0, rtx_out=0,
                 paced=0, rtx_in=self.core.rtx_in, stun_answered=self.core.stun_answered,
                 events_dropped=self.core.events_dropped)
        for i in range(self.core.nshards):
            x = self.core.tx if i == 0 else self.core.helpers[i - 1].ctx
            d["packets_out"] += x.packets_out
            d["bytes_out"] += x.bytes_out
            drops[DROP_SEND_FAILED] += x.send_failed
            s["send_calls"] += x.send_calls
            s["gso_messages"] += x.gso_messages
            s["gso_segments"] += x.gso_segments
            s["gso_fallbacks"] += x.gso_fallbacks
            s["retransmits"] += x.retransmits
            s["rtx_out"] += x.rtx_out
            s["paced"] += x.paced_copies
        d.update(s)
        d.update(drops=drops_dict(drops), batches=self.core.batches, gso=bool(self.core.gso), fanout_threads=self.core.nshards,
                 transports=len(self._transports), producers=len(self._producers),
                 consumers=len(self._consumers))
        return d

    def latency_histogram(self, bint reset=False):
        """{bucket_upper_ms: count} of receive-to-last-send latency per forwarded RTP packet."""
        out = {}
        for i in range(LAT_BUCKETS):
            if self.core.lat_hist[i]:
                out[(i + 1) * LAT_BUCKET_NS / 1e6] = self.core.lat_hist[i]
        if reset:
            memset(self.core.lat_hist, 0, LAT_BUCKETS * sizeof(uint64_t))
        return out

    @property
    def gso(self):
        """True while same-size copies to one destination go out as one UDP GSO message."""
        return bool(self.core.gso)

    @gso.setter
    def gso(self, bint on):
        cdef int v = 0
        cdef socklen_t vlen = sizeof(int)
        self._lock()
        core_flush(self.core)
        self._unlock()
        self.core.gso = 1 if on and getsockopt(self.core.fd, SOL_UDP, UDP_SEGMENT, &v, &vlen) == 0 else 0
