# ICE consent (RFC 7675) answered in the core: once a transport is connected, its peer sends a STUN
# binding request on the selected pair every few seconds for as long as the session lasts. Answering
# them here keeps them off the asyncio loop (at hundreds of subscribers Python's parse, HMAC and reply
# cost ~0.2 ms each on a loaded core) and keeps consent alive while an embedding app blocks its loop.
# Only the plainest case is answered: a well-formed request from the transport's own send address whose
# USERNAME, MESSAGE-INTEGRITY and FINGERPRINT check out for that transport; anything else (a new pair,
# a nomination elsewhere, unknown mandatory attributes, a bad check) goes up to Python as before, which
# also answers errors. Hand-written because no library parses STUN without Python objects per packet.

cdef enum:
    ICE_CRED_LEN = 256         # RFC 8445 §5.3: ufrag and pwd are at most 256 characters
    STUN_HEADER = 20
    STUN_COOKIE = 0x2112A442
    STUN_FINGERPRINT_XOR = 0x5354554E

cdef struct IceCreds:
    # what a transport's consent checks must carry (NativeWorker.set_ice_credentials)
    char username[2 * ICE_CRED_LEN + 2]   # "<our ufrag>:<their ufrag>", as the peer sends it to us
    int username_len
    uint8_t pwd[ICE_CRED_LEN]             # our pwd: the MESSAGE-INTEGRITY key both ways
    int pwd_len


cdef inline uint32_t stun_fingerprint(const uint8_t *msg, int n) noexcept nogil:
    return <uint32_t>crc32(0, msg, n) ^ STUN_FINGERPRINT_XOR


cdef int stun_check_integrity(const IceCreds *ice, uint8_t *msg, int mi_off) noexcept nogil:
    # RFC 8489 §14.5: the HMAC covers the message up to the attribute, the header's length counting
    # up to the attribute's end (the FINGERPRINT after it left out); the length is restored afterwards.
    cdef uint8_t md[20]
    cdef unsigned int mdlen = 0
    cdef uint16_t saved = rd16(msg + 2)
    cdef int ok
    wr16(msg + 2, <uint16_t>(mi_off + 24 - STUN_HEADER))
    ok = HMAC(EVP_sha1(), ice.pwd, ice.pwd_len, msg, mi_off, md, &mdlen) != NULL
    wr16(msg + 2, saved)
    return ok and mdlen == 20 and CRYPTO_memcmp(md, msg + mi_off + 4, 20) == 0


cdef int stun_answer(Core *w, CTransport *t, uint8_t *msg, int n, const sockaddr_in *src,
                     int64_t now) noexcept nogil:
    """1 if msg was a consent check for t answered here; 0: hand it to Python untouched."""
    cdef int off, attr, alen, mi_off = -1, fp_off = -1, user_ok = 0
    cdef uint8_t out[STUN_HEADER + 12 + 24 + 8]
    cdef unsigned int mdlen = 0
    cdef uint32_t port, addr
    if t.ice == NULL or not t.bound or n < STUN_HEADER or n % 4 or rd16(msg) != 0x0001 \
            or rd32(msg + 4) != STUN_COOKIE or rd16(msg + 2) + STUN_HEADER != n \
            or src.sin_addr.s_addr != t.addr.sin_addr.s_addr or src.sin_port != t.addr.sin_port:
        return 0
    off = STUN_HEADER
    while off + 4 <= n:
        attr = rd16(msg + off)
        alen = rd16(msg + off + 2)
        if off + 4 + alen > n or fp_off >= 0:
            return 0                        # runs past the end, or something after FINGERPRINT
        if mi_off >= 0 and attr != 0x8028:
            return 0                        # only FINGERPRINT may follow MESSAGE-INTEGRITY
        if attr == 0x0006:                  # USERNAME
            user_ok = alen == t.ice.username_len and memcmp(msg + off + 4, t.ice.username, alen) == 0
        elif attr == 0x0008:                # MESSAGE-INTEGRITY
            if alen != 20:
                return 0
            mi_off = off
        elif attr == 0x8028:                # FINGERPRINT
            if alen != 4:
                return 0
            fp_off = off
        elif attr < 0x8000 and attr != 0x0024 and attr != 0x0025:
            return 0                        # comprehension-required and not PRIORITY / USE-CANDIDATE
        off += 4 + ((alen + 3) & ~3)
    if off != n or not user_ok or mi_off < 0 or fp_off < 0 \
            or rd32(msg + fp_off + 4) != stun_fingerprint(msg, fp_off) \
            or not stun_check_integrity(t.ice, msg, mi_off):
        return 0
    # the success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT (RFC 8445 §7.3)
    wr16(out, 0x0101)
    wr16(out + 2, 12 + 24)
    memcpy(out + 4, msg + 4, 16)            # the cookie and the request's transaction id
    wr16(out + 20, 0x0020)
    wr16(out + 22, 8)
    out[24] = 0
    out[25] = 1                             # IPv4
    port = ntohs(src.sin_port)
    addr = ntohl(src.sin_addr.s_addr)
    wr16(out + 26, <uint16_t>(port ^ (STUN_COOKIE >> 16)))
    wr32(out + 28, addr ^ STUN_COOKIE)
    wr16(out + 32, 0x0008)
    wr16(out + 34, 20)
    if HMAC(EVP_sha1(), t.ice.pwd, t.ice.pwd_len, out, 32, out + 36, &mdlen) == NULL:
        return 0
    wr16(out + 2, 12 + 24 + 8)
    wr16(out + 56, 0x8028)
    wr16(out + 58, 4)
    wr32(out + 60, stun_fingerprint(out, 56))
    if sendto(w.fd, out, sizeof(out), 0, <const sockaddr *>src, sizeof(sockaddr_in)) != sizeof(out):
        w.drops[DROP_SEND_FAILED] += 1
    t.consent_ns = now
    w.stun_answered += 1
    return 1
