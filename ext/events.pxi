# Events that need a Python decision, queued by the packet path (a fixed array, no Python object until
# drain() hands them up as MediaEvent objects, once per drain).

cdef enum:
    EV_UNKNOWN_SSRC = 1
    EV_KEYFRAME_REQUESTED = 2
    EV_PRODUCER_RESTART = 3
    EV_ENCODING_BOUND = 4
    EV_BANDWIDTH_DOWN = 5
    EV_NAME_LEN = 32

cdef struct Event:
    int kind
    uint64_t transport_id
    uint64_t producer_id
    uint32_t ssrc
    char mid[EV_NAME_LEN]
    char rid[EV_NAME_LEN]
    char rrid[EV_NAME_LEN]


cdef Event *core_event(Core *w, int kind, uint64_t tid, uint64_t pid, uint32_t ssrc) noexcept nogil:
    """Queue an event; NULL (nothing queued) if this kind for this SSRC and producer is already queued in
    this drain, or the queue is full. The caller may fill the names of the returned event."""
    cdef int i
    cdef Event *e
    for i in range(w.nevents):
        e = &w.events[i]
        if e.kind == kind and e.ssrc == ssrc and e.producer_id == pid:
            return NULL
    if w.nevents == EVENT_QUEUE:
        w.events_dropped += 1
        return NULL
    e = &w.events[w.nevents]
    w.nevents += 1
    e.kind = kind
    e.transport_id = tid
    e.producer_id = pid
    e.ssrc = ssrc
    e.mid[0] = 0
    e.rid[0] = 0
    e.rrid[0] = 0
    return e


cdef void event_names_from(Event *e, const uint8_t *buf, const RtpHeader *h, const ExtIds *ext) noexcept nogil:
    # the first packets of a simulcast stream name it only by MID/RID (RFC 8852)
    if e != NULL:
        rtp_ext_string(buf, h, ext.mid, e.mid, EV_NAME_LEN)
        rtp_ext_string(buf, h, ext.rid, e.rid, EV_NAME_LEN)
        rtp_ext_string(buf, h, ext.rrid, e.rrid, EV_NAME_LEN)


UNKNOWN_SSRC = "unknown_ssrc"
KEYFRAME_REQUESTED = "keyframe_requested"
PRODUCER_RESTART = "producer_restart"
ENCODING_BOUND = "encoding_bound"
BANDWIDTH_DOWN = "bandwidth_down"
_EVENT_KINDS = {EV_UNKNOWN_SSRC: UNKNOWN_SSRC, EV_KEYFRAME_REQUESTED: KEYFRAME_REQUESTED,
                EV_PRODUCER_RESTART: PRODUCER_RESTART, EV_ENCODING_BOUND: ENCODING_BOUND,
                EV_BANDWIDTH_DOWN: BANDWIDTH_DOWN}
MEDIA_EVENT_KINDS = tuple(_EVENT_KINDS.values())


cdef class MediaEvent:
    """Something the packet core saw that Python may act on; NativeWorker.drain() returns a list of them.

    Fields (0 or "" where the kind does not know them): kind (one of the str constants below),
    transport_id, producer_id, ssrc, mid, rid, repaired_rid. The kinds:

    - ``unknown_ssrc`` (UNKNOWN_SSRC): RTP arrived on transport_id with an SSRC no producer has; mid, rid
      and repaired_rid are what its header extensions said (Chromium sends them on each stream's first
      ~20 packets only). The packet was dropped (counted as unknown_ssrc). Once per SSRC per drain.
    - ``keyframe_requested`` (KEYFRAME_REQUESTED): the core sent a PLI to producer_id's sender for the
      encoding with SSRC ssrc (a consumer asked, a consumer's encoding switch waits for it, or
      upstream NACK gave up), on transport_id. For a Python-fed producer (create_direct_producer)
      transport_id is 0 and no PLI went anywhere: Python's encoder should make a key frame.
    - ``producer_restart`` (PRODUCER_RESTART): producer_id's stream ssrc jumped in numbering (the
      sender restarted); its consumers continue without a gap.
    - ``encoding_bound`` (ENCODING_BOUND): the core learned the SSRC of an encoding that was created
      with ssrc 0: a packet on transport_id named mid and rid (header extensions) of producer_id's
      encoding; it is forwarded from that packet on (Producer.encodings shows it too).
    - ``bandwidth_down`` (BANDWIDTH_DOWN): the downlink estimate of subscriber transport transport_id
      fell (over-use or loss in its transport-cc feedback, a falling REMB, loss in its receiver reports);
      Transport.bwe has the figure. Allocation should run now rather than at its next tick.
    """
    cdef readonly str kind
    cdef readonly object transport_id
    cdef readonly object producer_id
    cdef readonly object ssrc
    cdef readonly str mid
    cdef readonly str rid
    cdef readonly str repaired_rid

    def __init__(self, str kind, transport_id=0, producer_id=0, ssrc=0, str mid="", str rid="",
                 str repaired_rid=""):
        self.kind = kind
        self.transport_id = transport_id
        self.producer_id = producer_id
        self.ssrc = ssrc
        self.mid = mid
        self.rid = rid
        self.repaired_rid = repaired_rid

    def _key(self):
        return (self.kind, self.transport_id, self.producer_id, self.ssrc, self.mid, self.rid,
                self.repaired_rid)

    def __eq__(self, other):
        if not isinstance(other, MediaEvent):
            return NotImplemented
        return self._key() == (<MediaEvent>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return ("MediaEvent(%r, transport_id=%d, producer_id=%d, ssrc=%d, mid=%r, rid=%r, repaired_rid=%r)"
                % self._key())


cdef MediaEvent media_event(const Event *e):
    return MediaEvent(_EVENT_KINDS.get(e.kind, "unknown"), e.transport_id, e.producer_id, e.ssrc,
                      e.mid.decode("utf-8", "replace"), e.rid.decode("utf-8", "replace"),
                      e.rrid.decode("utf-8", "replace"))
