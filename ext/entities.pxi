# Transport, producer (one track: up to MAX_ENCODINGS encodings, each with its own numbering, NACK
# history ring, NACK list, stats and sender-report clock) and consumer (with its sequence/timestamp
# mapping): plain C structs the nogil loop walks, each owned by a small cdef class that Python holds.

cdef enum:
    SLOT = 2048            # one datagram buffer (MTU-size packets + SRTP trailer fit)
    HIST_SLOTS = 512       # NACK history per encoding (~4.6 s of a 1.2 Mbit/s stream)
    HIST_SLOT = 1536
    PLI_INTERVAL_NS = 500000000   # at most one key frame request per encoding per 500 ms
    MAX_ENCODINGS = 3             # simulcast: rid -> SSRC (RFC 8853), e.g. q/h/f
    MAX_TID = 4                   # VP8 temporal layers counted (the TID field has 2 bits)
    NAME_LEN = 32                 # mid and rid values we keep (RFC 8852 allows more; nobody sends it)
    SENT_RING = 512        # per video consumer: output seq -> input seq of what was sent (NACK), = HIST_SLOTS
    GAP_RING = 256         # per video consumer: output seqs held for input seqs that have not arrived yet
    SENT_RING_AUDIO = 128  # audio (50 packets/s): 2.5 s to retransmit from, ...
    GAP_RING_AUDIO = 64    # ... 1.3 s of gaps held; a subscriber's RSS is mostly these rings
    RTX_MIN_GAP_NS = 20000000     # one retransmission per seq per consumer per max(20 ms, RTT)
    RTX_RATE_BYTES = 375000       # retransmitted bytes per consumer per second (3 Mbit/s) ...
    RTX_BURST_BYTES = 200000      # ... with this much burst (a key frame's worth)
    RTX_SHARE = 25                # % of a limited downlink's estimate retransmissions may take

cdef struct SentEntry:
    # 32 bytes: one per packet sent in the last SENT_RING, per consumer
    int64_t out_seq        # extended output seq, -1 = empty
    int64_t in_seq         # the encoding's extended seq of the packet sent under it
    int64_t rtx_ns         # last retransmission (0: none)
    uint32_t out_ts        # the output timestamp it was sent with (the header's 32 bits)
    uint16_t pid_offset    # the VP8 picture ID (15 bits) / TL0PICIDX (8 bits) offsets it was sent with (a
    uint8_t tl0_offset     # retransmission of a packet from before a layer switch keeps them)
    uint8_t enc            # the producer's encoding index it came from (its history holds it)

cdef struct GapEntry:
    int64_t in_seq         # a missing input seq, -1 = empty
    int64_t out_seq        # the output seq it gets if it arrives late
    int enc                # in the numbering of this encoding index

cdef struct CConsumer
cdef struct CProducer
cdef struct TccRing

cdef struct CTransport:
    uint64_t id
    sockaddr_in addr
    int bound
    SrtpCtx *rx            # NULL for the plain ("none") profile
    SrtpCtx *tx
    ExtIds ext
    Counters c
    uint64_t drops[DROP_COUNT]
    uint64_t tcc_feedback       # transport-cc feedback received (we are the sender)
    uint64_t remb_bitrate
    uint64_t remb_unlisted_bytes   # bytes_out of its consumers a REMB did not name, at that REMB ...
    int64_t remb_unlisted_us       # ... and when (rtcp_io.pxi remb_unlisted_bps)
    TccRing *tcc                # arrivals to report (NULL unless transport_cc was negotiated)
    int64_t tcc_last_fb_ns
    uint32_t tcc_media_ssrc     # a producer SSRC of this transport, named in our feedback
    uint64_t tcc_feedback_sent
    uint64_t tcc_packets_reported
    double rtt_ms               # from the last receiver report with a usable LSR on this transport
    Bwe bwe                     # downlink: what we may send it (bwe.pxi), and the transport-wide seq we number
    Pacer *pace                 # NULL until it paces (pacer.pxi): its held video copies
    int probe_listed            # in the worker's list of transports running a probe
    int shard                   # the fan-out thread that sends to it (NativeWorker fanout_threads)
    PtrList consumers           # CConsumer*: the consumers sending on it (a batch's copies to it share GSO messages)
    PtrList producers           # CProducer*: the producers it receives (SSRC learning by mid/rid looks here)
    IceCreds *ice               # NULL until connected: then consent checks on its address are answered here
    int64_t consent_ns          # when the core last answered one (0: never)

cdef struct CEncoding:
    # one RTP stream (SSRC) of a producer: a simulcast layer, or the only stream of a plain track
    CProducer *producer
    int index                   # in producer.enc[]
    uint32_t ssrc
    int bound                   # ssrc is known (given at creation or learned from mid/rid)
    char rid[NAME_LEN]
    uint32_t rtx_ssrc           # its RTX stream (RFC 4588), given or learned from repaired-rid; 0: none yet
    uint64_t rtx_received       # retransmissions that came on it (unwrapped into this encoding)
    uint64_t rtx_padding        # padding-only RTX packets (the publisher's bandwidth probes)
    uint64_t duplicates         # packets it had passed on already (not forwarded again)
    uint64_t level_sum          # audio: the RFC 6464 levels (-dBov) of its packets, summed ...
    uint64_t level_count        # ... over this many packets that carried one
    Counters c
    uint64_t keyframes
    int width, height           # of its last key frame (VP8: its header; H.264: its SPS); 0: none seen
    uint64_t frames_by_tid[MAX_TID]   # VP8 frames by temporal layer (no TID: layer 0); a selector's frame rates
    uint64_t restarts
    int have_seq
    int64_t ext_seq        # highest extended sequence number (RFC 3550 Appendix A.1 style)
    int64_t ext_ts         # extended timestamp of that packet
    int64_t hist_seq[HIST_SLOTS]   # extended seq stored in each slot, -1 = empty
    uint16_t hist_len[HIST_SLOTS]
    uint8_t *hist
    int64_t last_pli_ns
    int pli_listed              # a request inside the window waits in the worker's list for its end
    uint64_t pli_forwarded
    uint64_t pli_limited
    # the sender's clock: the last sender report (RFC 3550 §6.4.1)
    uint64_t sr_ntp
    uint32_t sr_rtp_ts
    uint64_t sr_count
    # upstream NACK (nack.pxi)
    NackEntry nack[NACK_MAX]
    int nnack
    int nack_listed             # in the worker's list of encodings with missing seqs
    uint64_t nacks_sent
    uint64_t nack_seqs_requested
    uint64_t nack_recovered
    uint64_t nack_gave_up

cdef struct CProducer:
    uint64_t id
    int codec
    CTransport *transport
    ExtIds ext                  # the publisher's header extension IDs (its transport's; a direct one's own)
    char mid[NAME_LEN]
    int payload_type            # of its media (what an RTX packet's original carried); 0: unknown
    int rtx_payload_type        # RTX negotiated with the publisher (apt = payload_type); 0: none
    CEncoding enc[MAX_ENCODINGS]
    int nenc
    PtrList consumers           # CConsumer*
    Tap *tap                    # NULL unless Python reads its packets (the MCU's inputs, direct.pxi)

cdef struct CConsumer:
    uint64_t id
    uint32_t ssrc
    int payload_type
    uint32_t rtx_ssrc           # retransmissions go out as RTX (RFC 4588) on this SSRC; 0: on ssrc itself
    int rtx_payload_type
    uint16_t rtx_seq            # the RTX stream's own numbering
    int clock_rate
    CTransport *transport
    CProducer *producer
    int paused
    ExtIds out_ext              # the subscriber's negotiated header extension IDs (0: not negotiated)
    uint8_t ext_pre[NAME_LEN]   # the one-byte-form elements every copy starts its block with (mid)
    int ext_pre_len
    int enc_cur                 # the producer encoding it forwards (index into producer.enc)
    int enc_target              # the encoding it switches to at that encoding's next key frame
    # a switch to another producer at that producer's next key frame (NativeWorker.switch_producer
    # at_keyframe): until then the current one feeds it (fanout.pxi fan_switching)
    CProducer *switch_to        # in switch_to's consumer list too while the switch waits
    int switch_enc              # the encoding of switch_to it starts on
    CProducer *switch_left      # switched away during a fan-out: still in that producer's list until settled
    int max_temporal_layer      # VP8 TID above this is not forwarded (the layer selector's input)
    int wait_keyframe
    int have_out
    int resync                  # the next packet sent starts a new input numbering (seq.pxi)
    int switch_from             # with resync: the encoding index switched from (its SR clock), -1: none
    int64_t seq_offset          # out = in + offset, 64-bit extended (seq.pxi)
    int64_t ts_offset
    int64_t last_out_seq
    int64_t last_out_ts
    int64_t last_out_ns
    int last_out_marker         # the last packet sent ended a frame: padding may follow (probes)
    # VP8 picture ID (15-bit space) and TL0PICIDX continuity across switches (consumer.pxi vp8_rewrite)
    int32_t pid_offset, tl0_offset
    int32_t last_out_pid, last_out_tl0   # newest written, -1 none
    int vp8_resync              # the next picture starts a new input numbering: continue after the last
    Counters c
    uint64_t drops[DROP_COUNT]
    uint64_t retransmits
    uint64_t nacks
    uint64_t unrepairable         # NACKed video packets it could not resend (a key frame was asked for)
    uint64_t plis
    # last receiver report about this stream (RFC 3550 §6.4.2)
    int rr_fraction_lost
    int32_t rr_packets_lost
    uint32_t rr_jitter
    uint32_t rr_highest_seq
    double rtt_ms
    uint64_t rr_count
    uint64_t remb_bitrate
    uint64_t sr_ntp_mid           # middle 32 bits of the NTP time of our last SR (for RTT)
    uint64_t fan_mark             # the worker's fan-out round that last sent its copies
    # numbering (seq.pxi consumer_number): an output seq is used for one packet only
    int64_t last_in_seq           # newest input seq dealt with (sent or dropped) since the last resync
    int64_t rtx_floor             # output seqs below it predate the last producer change: never retransmitted
    int64_t gap_floor             # held output seqs below it predate the last resync: never filled in late
    int64_t rtx_budget            # retransmission bytes left (token bucket, RTX_RATE_BYTES/s)
    int64_t rtx_budget_ns
    SrtpStream *tx_stream         # its SSRC's and its RTX SSRC's SRTP streams in the transport's tx
    SrtpStream *tx_rtx_stream     # context, found on the first copy (freed with the consumer)
    SentEntry *sent               # by out_seq % sent_len (SENT_RING, audio SENT_RING_AUDIO)
    GapEntry *gaps                # by in_seq % gap_len (GAP_RING, audio GAP_RING_AUDIO)
    int sent_len, gap_len         # powers of two


cdef inline int64_t ext_seq16(int64_t ref, uint16_t v) noexcept nogil:
    """Nearest 64-bit value to ref whose low 16 bits are v."""
    return ref + <int16_t>(<uint16_t>(v - <uint16_t>ref))


cdef inline int64_t ext_ts32(int64_t ref, uint32_t v) noexcept nogil:
    return ref + <int32_t>(<uint32_t>(v - <uint32_t>ref))


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline uint64_t ntp_now() noexcept nogil:
    # RFC 3550 §4: seconds since 1900 in 32.32 fixed point
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    cdef uint64_t secs = <uint64_t>ts.tv_sec + <uint64_t>2208988800
    cdef uint64_t frac = (<uint64_t>ts.tv_nsec << 32) // <uint64_t>1000000000
    return (secs << 32) | frac


_CODECS = {"vp8": CODEC_VP8, "h264": CODEC_H264, "opus": CODEC_OPUS, "other": CODEC_OTHER}


cdef class Transport:
    """A remote peer's 5-tuple and its SRTP keys (rx: theirs, tx: ours)."""
    cdef CTransport *t
    cdef readonly SrtpContext rx
    cdef readonly SrtpContext tx
    cdef readonly str profile
    cdef readonly object worker_ref
    cdef readonly set tx_ssrcs      # consumer SSRCs ever sent with tx (never reused: SRTP nonces)

    def __cinit__(self):
        self.tx_ssrcs = set()
        self.t = <CTransport *>calloc(1, sizeof(CTransport))
        if self.t == NULL:
            raise MemoryError()
        bwe_init(&self.t.bwe)

    def __dealloc__(self):
        if self.t != NULL:
            plist_free(&self.t.consumers)
            plist_free(&self.t.producers)
            free(self.t.tcc)
            free(self.t.ice)
            bwe_free(&self.t.bwe)
            if self.t.pace != NULL:
                free(self.t.pace.items)
                free(self.t.pace)
        free(self.t)
        self.t = NULL

    @property
    def id(self):
        return self.t.id

    @property
    def last_consent(self):
        """time.monotonic() of the last consent check the core answered on its own (None: none yet)."""
        return self.t.consent_ns / 1e9 if self.t.consent_ns else None

    @property
    def bwe(self):
        """The downlink estimator's state (bwe.pxi): estimate_bps, limited, probing, counters."""
        return bwe_stats(&self.t.bwe)

    @property
    def stats(self):
        d = counters_dict(&self.t.c)
        d["drops"] = drops_dict(self.t.drops)
        d["transport_cc_feedback"] = self.t.tcc_feedback
        d["remb_bitrate"] = self.t.remb_bitrate
        d["pacer"] = pace_stats(self.t)
        d["tcc_feedback_sent"] = self.t.tcc_feedback_sent
        d["tcc_packets_reported"] = self.t.tcc_packets_reported
        d["rtt_ms"] = self.t.rtt_ms
        d["bwe"] = bwe_stats(&self.t.bwe)
        if self.rx is not None:
            d["srtp_rx"] = self.rx.stats
        return d


_PER_ENCODING_ONLY = ("width", "height", "frames_by_tid")   # a layer's own, not summed over the producer


cdef dict encoding_stats(const CEncoding *e):
    d = counters_dict(&e.c)
    d.update(keyframes=e.keyframes, width=e.width, height=e.height,
             frames_by_tid=[e.frames_by_tid[i] for i in range(MAX_TID)], restarts=e.restarts, pli_forwarded=e.pli_forwarded,
             pli_rate_limited=e.pli_limited, sender_reports=e.sr_count, sr_ntp=e.sr_ntp,
             sr_rtp_timestamp=e.sr_rtp_ts, nacks_sent=e.nacks_sent, nack_seqs_requested=e.nack_seqs_requested,
             nack_recovered=e.nack_recovered, nack_gave_up=e.nack_gave_up, nack_pending=e.nnack,
             rtx_received=e.rtx_received, rtx_padding=e.rtx_padding, duplicates=e.duplicates,
             audio_level_sum=e.level_sum, audio_level_count=e.level_count)
    return d


cdef class Producer:
    """One incoming track (one mid) of a transport: up to MAX_ENCODINGS encodings (rid -> SSRC), each
    keeping its last HIST_SLOTS packets for NACK."""
    cdef CProducer *p
    cdef readonly Transport transport
    cdef readonly str codec
    cdef readonly str mid

    def __cinit__(self):
        self.p = <CProducer *>calloc(1, sizeof(CProducer))
        if self.p == NULL:
            raise MemoryError()

    cdef int _add_encoding(self, str rid, uint32_t ssrc, uint32_t rtx_ssrc=0) except -1:
        cdef CEncoding *e
        cdef int i
        cdef bytes r = rid.encode()
        if self.p.nenc == MAX_ENCODINGS:
            raise ValueError("at most %d encodings" % MAX_ENCODINGS)
        if len(r) >= NAME_LEN:
            raise ValueError("rid too long: %r" % rid)
        e = &self.p.enc[self.p.nenc]
        e.hist = <uint8_t *>malloc(HIST_SLOTS * HIST_SLOT)
        if e.hist == NULL:
            raise MemoryError()
        for i in range(HIST_SLOTS):
            e.hist_seq[i] = -1
        e.last_pli_ns = -PLI_INTERVAL_NS
        e.producer = self.p
        e.index = self.p.nenc
        e.ssrc = ssrc
        e.bound = ssrc != 0
        e.rtx_ssrc = rtx_ssrc
        memcpy(e.rid, <const char *>r, len(r))
        e.rid[len(r)] = 0
        self.p.nenc += 1
        return 0

    def __dealloc__(self):
        cdef int i
        if self.p != NULL:
            for i in range(self.p.nenc):
                free(self.p.enc[i].hist)
            plist_free(&self.p.consumers)
            free(self.p.tap)
            free(self.p)
            self.p = NULL

    @property
    def ssrc(self):
        """The first encoding's SSRC (0 while not known yet)."""
        return self.p.enc[0].ssrc

    @property
    def id(self):
        return self.p.id

    @property
    def encodings(self):
        """[{index, rid, ssrc (0: not known yet), stats}] in the order given at creation."""
        cdef int i
        return [dict(index=i, rid=self.p.enc[i].rid.decode(), ssrc=self.p.enc[i].ssrc,
                     stats=encoding_stats(&self.p.enc[i])) for i in range(self.p.nenc)]

    @property
    def stats(self):
        """Counters summed over the encodings (per encoding: encodings[i]["stats"] and "encodings")."""
        cdef int i
        per = [encoding_stats(&self.p.enc[i]) for i in range(self.p.nenc)]
        d = {}
        for k in per[0]:
            if k not in _PER_ENCODING_ONLY:
                d[k] = sum(x[k] for x in per)
        d.update(sr_ntp=per[0]["sr_ntp"], sr_rtp_timestamp=per[0]["sr_rtp_timestamp"],
                 consumers=self.p.consumers.n, encodings=per)
        return d


cdef class Consumer:
    """One producer's stream as sent to one transport: own SSRC, payload type, seq/ts mapping."""
    cdef CConsumer *c
    cdef readonly Transport transport
    cdef readonly Producer producer

    def __cinit__(self):
        cdef int i
        self.c = <CConsumer *>calloc(1, sizeof(CConsumer))
        if self.c == NULL:
            raise MemoryError()
        self.c.max_temporal_layer = 255
        self.c.switch_from = -1

    cdef int alloc_rings(self, int audio) except -1:
        """The NACK and gap rings, smaller for audio (called once, by create_consumer)."""
        cdef int i
        self.c.sent_len = SENT_RING_AUDIO if audio else SENT_RING
        self.c.gap_len = GAP_RING_AUDIO if audio else GAP_RING
        self.c.sent = <SentEntry *>malloc(self.c.sent_len * sizeof(SentEntry))
        self.c.gaps = <GapEntry *>malloc(self.c.gap_len * sizeof(GapEntry))
        if self.c.sent == NULL or self.c.gaps == NULL:
            raise MemoryError()
        for i in range(self.c.sent_len):
            self.c.sent[i].out_seq = -1
        for i in range(self.c.gap_len):
            self.c.gaps[i].in_seq = -1
        return 0

    def __dealloc__(self):
        if self.c != NULL:
            free(self.c.sent)
            free(self.c.gaps)
        free(self.c)
        self.c = NULL

    @property
    def ssrc(self):
        return self.c.ssrc

    @property
    def id(self):
        return self.c.id

    @property
    def paused(self):
        return bool(self.c.paused)

    def pause(self):
        self.c.paused = 1

    def resume(self, bint wait_keyframe=True):
        """Resume; video waits for a key frame so the decoder restarts cleanly."""
        self.c.paused = 0
        if wait_keyframe and self.producer.p.codec in (CODEC_VP8, CODEC_H264):
            self.c.wait_keyframe = 1

    @property
    def encoding(self):
        """Index of the producer encoding it forwards now."""
        return self.c.enc_cur

    @property
    def target_encoding(self):
        """The encoding it switches to at that encoding's next key frame (NativeWorker.set_target_encoding);
        equal to encoding when no switch is pending; while a producer switch waits, the encoding it starts
        on there."""
        return self.c.switch_enc if self.c.switch_to != NULL else self.c.enc_target

    @property
    def switching(self):
        """A switch to its producer (switch_producer at_keyframe) waits for that producer's key frame: the
        one before still feeds it."""
        return self.c.switch_to != NULL

    @property
    def max_temporal_layer(self):
        return self.c.max_temporal_layer

    @max_temporal_layer.setter
    def max_temporal_layer(self, int tid):
        self.c.max_temporal_layer = tid

    @property
    def stats(self):
        d = counters_dict(&self.c.c)
        d["drops"] = drops_dict(self.c.drops)
        d.update(encoding=self.c.enc_cur, target_encoding=self.c.enc_target, rtx_ssrc=self.c.rtx_ssrc,
                 retransmits=self.c.retransmits, nacks=self.c.nacks, unrepairable=self.c.unrepairable, plis=self.c.plis,
                 fraction_lost=self.c.rr_fraction_lost / 256.0, packets_lost=self.c.rr_packets_lost,
                 jitter=self.c.rr_jitter, rtt_ms=self.c.rtt_ms, receiver_reports=self.c.rr_count,
                 remb_bitrate=self.c.remb_bitrate)
        return d
