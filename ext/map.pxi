# The worker's containers: an open-addressing hash table uint64 -> pointer (transports by ip:port,
# producer encodings and consumers by SSRC) and a pointer list (PtrList: the consumers of a producer or
# transport, the producers of a transport, the transports with transport-cc, the encodings with missing
# seqs). Inserts and deletes happen under the worker's mutex: control actions, and the receive path
# when it binds a learned SSRC (ingest_bind, between fan-outs); lookups and walks run in the nogil loop.

cdef struct U64Map:
    uint64_t *keys
    void **vals
    size_t cap          # power of two
    size_t count


cdef inline size_t _slot(uint64_t key, size_t cap) noexcept nogil:
    key ^= key >> 33
    key *= <uint64_t>0xff51afd7ed558ccd
    key ^= key >> 33
    return <size_t>(key & (cap - 1))


cdef int map_init(U64Map *m, size_t cap) noexcept nogil:
    m.cap = cap
    m.count = 0
    m.keys = <uint64_t *>calloc(cap, sizeof(uint64_t))
    m.vals = <void **>calloc(cap, sizeof(void *))
    return 0 if (m.keys and m.vals) else -1


cdef void map_free(U64Map *m) noexcept nogil:
    free(m.keys)
    free(m.vals)
    m.keys = NULL
    m.vals = NULL


cdef inline void *map_get(const U64Map *m, uint64_t key) noexcept nogil:
    cdef size_t i = _slot(key, m.cap)
    while m.vals[i] != NULL:
        if m.keys[i] == key:
            return m.vals[i]
        i = (i + 1) & (m.cap - 1)
    return NULL


cdef int map_put(U64Map *m, uint64_t key, void *val) noexcept nogil:
    cdef size_t i, old_cap
    cdef uint64_t *ok
    cdef void **ov
    if (m.count + 1) * 2 > m.cap:
        ok = m.keys
        ov = m.vals
        old_cap = m.cap
        if map_init(m, old_cap * 2) != 0:
            return -1
        for i in range(old_cap):
            if ov[i] != NULL:
                map_put(m, ok[i], ov[i])
        free(ok)
        free(ov)
    i = _slot(key, m.cap)
    while m.vals[i] != NULL:
        if m.keys[i] == key:
            m.vals[i] = val
            return 0
        i = (i + 1) & (m.cap - 1)
    m.keys[i] = key
    m.vals[i] = val
    m.count += 1
    return 0


cdef void map_del(U64Map *m, uint64_t key) noexcept nogil:
    # backward-shift deletion keeps probe chains intact without tombstones
    cdef size_t i = _slot(key, m.cap), j, k
    while m.vals[i] != NULL and m.keys[i] != key:
        i = (i + 1) & (m.cap - 1)
    if m.vals[i] == NULL:
        return
    m.vals[i] = NULL
    m.count -= 1
    j = i
    while True:
        j = (j + 1) & (m.cap - 1)
        if m.vals[j] == NULL:
            return
        k = _slot(m.keys[j], m.cap)
        # move j back to i unless its home k lies cyclically in (i, j]
        if (i <= j and (k <= i or k > j)) or (i > j and (k <= i and k > j)):
            m.keys[i] = m.keys[j]
            m.vals[i] = m.vals[j]
            m.vals[j] = NULL
            i = j


cdef struct PtrList:
    # an unordered list of entity pointers the nogil loop walks; deletion moves the last item into the hole
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


cdef void plist_free(PtrList *l) noexcept nogil:
    free(l.items)
    l.items = NULL
    l.n = l.cap = 0
