# Upstream NACK generator (node -> publisher, RFC 4585 §6.2.1): a producer remembers the sequence numbers
# a gap skipped, asks for them at once, retries every max(20 ms, RTT) up to NACK_TRIES times and forgets
# them after NACK_FORGET_NS or when they arrive. The worker sends what nack_due() collects
# (rtcp_io.pxi), written by rtcp.pxi's rtcp_write_nack.

cdef enum:
    NACK_MAX = 256                  # missing seqs remembered per encoding
    NACK_TRIES = 3
    NACK_MIN_RETRY_NS = 20000000
    NACK_FORGET_NS = 1000000000

cdef struct NackEntry:
    int64_t seq                     # extended
    int64_t first_ns                # when the gap was seen
    int64_t sent_ns                 # last NACK naming it
    int tries


cdef inline int nack_enabled(int codec) noexcept nogil:
    # video only: a late audio packet is worth less than the jitter a NACK round trip costs
    return codec == CODEC_VP8 or codec == CODEC_H264


cdef int nack_add_gap(NackEntry *lst, int *n, int64_t lo, int64_t hi, int64_t now) noexcept nogil:
    """Remember seqs lo..hi-1 (all above what the list holds). Returns how many seqs were given up on:
    the oldest ones when the list is full, or the whole gap when it alone exceeds the list."""
    cdef int64_t count = hi - lo, s
    cdef int drop, i
    if count <= 0:
        return 0
    if count > NACK_MAX:
        return <int>count
    drop = n[0] + <int>count - NACK_MAX
    if drop > 0:
        for i in range(n[0] - drop):
            lst[i] = lst[i + drop]
        n[0] -= drop
    else:
        drop = 0
    s = lo
    while s < hi:
        lst[n[0]].seq = s
        lst[n[0]].first_ns = now
        lst[n[0]].sent_ns = 0
        lst[n[0]].tries = 0
        n[0] += 1
        s += 1
    return drop


cdef int nack_arrived(NackEntry *lst, int *n, int64_t seq) noexcept nogil:
    """A packet arrived late: forget it. Returns -1 if it was not missing, else its NACK tries."""
    cdef int i, j, tries
    for i in range(n[0]):
        if lst[i].seq == seq:
            tries = lst[i].tries
            for j in range(i, n[0] - 1):
                lst[j] = lst[j + 1]
            n[0] -= 1
            return tries
        if lst[i].seq > seq:
            break
    return -1


cdef int nack_due(NackEntry *lst, int *n, int64_t now, int64_t retry_ns, int64_t *out, int *nout) noexcept nogil:
    """Collect the seqs to NACK now (ascending) into out; drop the expired ones. Returns how many
    were given up on."""
    cdef int i, j = 0, gave_up = 0
    nout[0] = 0
    for i in range(n[0]):
        if now - lst[i].first_ns >= NACK_FORGET_NS:
            gave_up += 1
            continue
        if lst[i].tries < NACK_TRIES and (lst[i].tries == 0 or now - lst[i].sent_ns >= retry_ns):
            lst[i].tries += 1
            lst[i].sent_ns = now
            out[nout[0]] = lst[i].seq
            nout[0] += 1
        lst[j] = lst[i]
        j += 1
    n[0] = j
    return gave_up
